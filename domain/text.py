"""Which text the service accepts as an identifier or a name.

External identifiers (partner account references, record ids, trade ids, station ids) travel into
partner URLs, logs and exports, so they are held to a small documented alphabet: 1 to 128 ASCII
letters, digits and ``. _ : @ + -``, starting with a letter or digit (so never ``.`` or ``..``, which
would change the path of a call to the partner). Names (of partners, merchants, offers, operators,
categories) may be any language, but never hold characters that are invisible or that change how the
text around them reads: controls, format characters (bidi overrides, zero-width characters, the
BOM), line and paragraph separators, surrogates and noncharacters (U+FFFE, U+FFFF, …).
"""

from __future__ import annotations

import re
import unicodedata

MAX_ID_LENGTH = 128
#: The identifier alphabet, as a regular expression that Python and JSON Schema (ECMA-262) read alike.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}$"
_ID = re.compile(ID_PATTERN)
ID_RULE = "1 to 128 ASCII letters, digits and . _ : @ + -, starting with a letter or digit"
#: Unicode general categories never accepted in a name: controls, format characters, surrogates,
#: line and paragraph separators.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def is_noncharacter(code_point: int) -> bool:
    return 0xFDD0 <= code_point <= 0xFDEF or code_point & 0xFFFE == 0xFFFE


def invisible_character(text: str) -> str | None:
    """The first character of ``text`` that a name may not hold, as ``U+XXXX``; None when there is none."""
    for character in text:
        if unicodedata.category(character) in _INVISIBLE_CATEGORIES or is_noncharacter(ord(character)):
            return f"U+{ord(character):04X}"
    return None


def id_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable external identifier; None when it is."""
    if _ID.fullmatch(value) is None:
        hidden = invisible_character(value)
        return f"must not contain control characters or invisible ones ({hidden})" if hidden else f"must be {ID_RULE}"
    return None


def name_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable name; None when it is."""
    hidden = invisible_character(value)
    if hidden is not None:
        return f"must not contain control characters or invisible ones ({hidden})"
    if not value.strip():
        return "must not be blank"
    return None


def check_names(**names: str | None) -> None:
    """Raise ``ValueError`` naming the first of ``names`` that is not an acceptable name (request bodies
    call this from ``__post_init__``, which the decoder reports as a validation error of that field)."""
    for field, value in names.items():
        if isinstance(value, str) and (problem := name_problem(value)) is not None:
            raise ValueError(f"{field} {problem}")
