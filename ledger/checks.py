"""What a submitted transfer must satisfy before any balance is consulted, free of I/O.

The static checks (TigerBeetle's order: id, flags, pending id, accounts, amount, ledger, code,
reference, metadata) and the idempotency comparison with a stored transfer of the same id. The
engine runs them first for every transfer of a batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ledger.types import (
    MAX_AMOUNT,
    MAX_CODE_LENGTH,
    MAX_REFERENCE_LENGTH,
    ZERO_ID,
    LedgerUnit,
    NewTransfer,
    Transfer,
)
from ledger.types import (
    CreateTransferResult as R,
)

#: Every ledger unit (members hash and compare like their string values).
_LEDGER_UNITS = frozenset(LedgerUnit)


_PLAIN_VALUES = frozenset({str, int, bool, type(None)})


def _flat_and_plain(metadata: Mapping[str, Any]) -> bool:
    """String keys and string, integer, boolean or null values: JSON as it is (the usual case)."""
    return all(type(k) is str for k in metadata) and all(type(v) in _PLAIN_VALUES for v in metadata.values())


def canonical_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Metadata as it will read back from the database (JSON round trip), or None when empty."""
    if not metadata:
        return None
    if _flat_and_plain(metadata):
        return dict(metadata)
    return json.loads(json.dumps(metadata, sort_keys=True))


def static_check(t: NewTransfer) -> R | None:
    """Checks that need no database state. Returns the failure, or None if the transfer is well formed."""
    if t.id == ZERO_ID:
        return R.ID_MUST_NOT_BE_ZERO
    if t.pending + t.post_pending + t.void_pending > 1:
        return R.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if t.resolves_pending:
        if t.pending_id is None or t.pending_id == ZERO_ID:
            return R.PENDING_ID_MUST_NOT_BE_ZERO
        if t.pending_id == t.id:
            return R.PENDING_ID_MUST_BE_DIFFERENT
    else:
        if t.pending_id is not None:
            return R.PENDING_ID_MUST_BE_ZERO
        if t.debit_account_id is None or t.debit_account_id == ZERO_ID:
            return R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.credit_account_id is None or t.credit_account_id == ZERO_ID:
            return R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if t.amount is None:
            return R.AMOUNT_MUST_NOT_BE_ZERO
        if t.ledger is None:
            return R.LEDGER_MUST_NOT_BE_ZERO
    if t.debit_account_id is not None and t.debit_account_id == t.credit_account_id:
        return R.ACCOUNTS_MUST_BE_DIFFERENT
    if t.timeout_s < 0:
        return R.TIMEOUT_MUST_NOT_BE_NEGATIVE
    if t.timeout_s and not t.pending:
        return R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
    if t.amount is not None:
        if type(t.amount) is not int or t.amount <= 0:
            return R.AMOUNT_MUST_NOT_BE_ZERO
        if t.amount > MAX_AMOUNT:
            return R.AMOUNT_EXCEEDS_MAXIMUM
    if t.ledger is not None and not (isinstance(t.ledger, str) and t.ledger in _LEDGER_UNITS):
        return R.LEDGER_UNKNOWN
    if not t.code:
        return R.CODE_MUST_NOT_BE_EMPTY
    if len(t.code) > MAX_CODE_LENGTH:
        return R.CODE_TOO_LONG
    if t.reference is not None and len(t.reference) > MAX_REFERENCE_LENGTH:
        return R.REFERENCE_TOO_LONG
    if t.metadata is not None:
        if not isinstance(t.metadata, Mapping):
            return R.METADATA_MUST_BE_JSON_OBJECT
        if not _flat_and_plain(t.metadata):
            try:
                json.dumps(t.metadata, allow_nan=False)
            except (TypeError, ValueError):
                return R.METADATA_MUST_BE_JSON_OBJECT
    return None


def compare_with_existing(t: NewTransfer, e: Transfer) -> R:
    """TigerBeetle's idempotency rule: identical → ``exists``; otherwise name the first differing field.

    Fields a post/void may leave unset (accounts, ledger, amount) compare equal to what was resolved.
    """
    if (t.pending, t.post_pending, t.void_pending, t.linked) != (e.pending, e.post_pending, e.void_pending, e.linked):
        return R.EXISTS_WITH_DIFFERENT_FLAGS
    if t.pending_id != e.pending_id:
        return R.EXISTS_WITH_DIFFERENT_PENDING_ID
    if t.timeout_s != e.timeout_s:
        return R.EXISTS_WITH_DIFFERENT_TIMEOUT
    if t.debit_account_id is not None and t.debit_account_id != e.debit_account_id:
        return R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if t.credit_account_id is not None and t.credit_account_id != e.credit_account_id:
        return R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    if t.amount is not None and t.amount != e.amount:
        return R.EXISTS_WITH_DIFFERENT_AMOUNT
    if t.reference != e.reference:
        return R.EXISTS_WITH_DIFFERENT_REFERENCE
    if canonical_metadata(t.metadata) != canonical_metadata(e.metadata):
        return R.EXISTS_WITH_DIFFERENT_METADATA
    if t.ledger is not None and t.ledger != e.ledger:
        return R.EXISTS_WITH_DIFFERENT_LEDGER
    if t.code != e.code:
        return R.EXISTS_WITH_DIFFERENT_CODE
    return R.EXISTS
