"""Redemptions in plain Python: the codes a cashier types, the states a redemption goes through, and
when an offer can be redeemed.

A code is ``CODE_LENGTH`` characters from an alphabet without look-alikes (no 0/O, 1/I/L, U), shown
in two groups of five: 30¹⁰ ≈ 5.9 × 10¹⁴ codes (49 bits), so guessing one of a million live codes
takes ~6 × 10⁸ tries on average, while failed captures are limited per merchant. The service keeps
only a keyed hash of each code for lookup.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum

CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10
#: What a QR code shown at the till carries: a scanner at the merchant reads the code from it.
QR_PREFIX = "carbonrewards:redeem:"
_SEPARATORS = str.maketrans("", "", " -\t")


class OfferStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class RedemptionStatus(StrEnum):
    HELD = "held"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"
    REFUNDED = "refunded"


class VoidedBy(StrEnum):
    RESIDENT = "resident"
    MERCHANT = "merchant"


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def display_code(code: str) -> str:
    """``ABCDE-FGHJK``: what the resident's app shows and the cashier types."""
    return f"{code[:5]}-{code[5:]}"


def qr_payload(code: str) -> str:
    return QR_PREFIX + code


def normalize_code(typed: str) -> str | None:
    """The code a cashier typed or a scanner read (any case, with or without the hyphen or spaces, or the
    QR payload), or None when it cannot be a code at all."""
    code = typed.removeprefix(QR_PREFIX).translate(_SEPARATORS).upper()
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


def offer_open(status: str, valid_from: datetime, valid_until: datetime | None, now: datetime) -> bool:
    """Whether an offer takes new redemptions at ``now`` (stock aside): active, and within its validity."""
    return status == OfferStatus.ACTIVE and valid_from <= now and (valid_until is None or now < valid_until)
