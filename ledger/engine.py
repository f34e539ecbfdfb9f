"""The ledger's decision procedure, free of I/O.

Given a batch of submitted transfers and the state they touch (loaded and locked by
``ledger.store``), decide each transfer's result in order, as TigerBeetle does: static checks,
then idempotency against what already exists, then accounts, pending-transfer rules and balance
limits. Linked chains are all-or-nothing: effects of a failed chain are undone through an undo
log, so the store writes only what succeeded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from ledger.checks import canonical_metadata, compare_with_existing, static_check
from ledger.types import (
    Account,
    Balance,
    LedgerUnit,
    NewTransfer,
    Transfer,
    TransferCode,
    TransferOutcome,
)
from ledger.types import (
    CreateTransferResult as R,
)

#: Index of each balance field in a delta vector.
DEBITS_PENDING, DEBITS_POSTED, CREDITS_PENDING, CREDITS_POSTED = range(4)


def linked_chains(transfers: Sequence[NewTransfer]) -> list[tuple[int, int]]:
    """Split a batch into chains: (start, end) inclusive. A chain runs until a transfer without ``linked``."""
    chains: list[tuple[int, int]] = []
    start = 0
    for i, t in enumerate(transfers):
        if not t.linked:
            chains.append((start, i))
            start = i + 1
    if start < len(transfers):
        chains.append((start, len(transfers) - 1))
    return chains


@dataclass
class BatchOutcome:
    """What a batch decided to write: the transfers to insert and the balance deltas per account."""

    created: list[Transfer]
    deltas: dict[UUID, list[int]] = field(default_factory=dict)


class BatchProcessor:
    """Decides a batch against loaded state.

    ``known`` holds stored transfers the batch refers to (by id or pending id); ``resolutions`` maps a
    pending transfer's id to the stored transfer that posted or voided it; ``balances`` holds the
    current, locked balances of every balance-limited account the batch touches.
    """

    def __init__(
        self,
        *,
        now: datetime,
        accounts: Mapping[UUID, Account],
        balances: dict[UUID, Balance],
        known: dict[UUID, Transfer],
        resolutions: dict[UUID, Transfer],
    ) -> None:
        self.now = now
        self.accounts = accounts
        self.balances = balances
        self.known = known
        self.resolutions = resolutions
        self.created: dict[UUID, Transfer] = {}
        self.deltas: dict[UUID, list[int]] = {}
        self._undo: list[Callable[[], None]] = []
        self._keep_undo = False
        # Canonical metadata by the identity of the caller's object: the transfers of one action share theirs.
        self._canonical: dict[int, tuple[Mapping[str, Any], dict[str, Any] | None]] = {}

    def run(self, segments: Sequence[Sequence[NewTransfer]]) -> list[list[TransferOutcome]]:
        """Decide every segment in order against shared state; linked chains never cross segments.

        A segment is one caller's submission; a group commit carries several in one transaction.
        """
        return [self._run_segment(transfers) for transfers in segments]

    def outcome(self) -> BatchOutcome:
        """The rows and balance deltas to write for everything decided so far."""
        return BatchOutcome(
            created=list(self.created.values()),
            deltas={k: v for k, v in self.deltas.items() if any(v)},
        )

    def _run_segment(self, transfers: Sequence[NewTransfer]) -> list[TransferOutcome]:
        results: list[TransferOutcome | None] = [None] * len(transfers)
        for start, end in linked_chains(transfers):
            if transfers[end].linked:
                for i in range(start, end):
                    results[i] = TransferOutcome(transfers[i].id, R.LINKED_EVENT_FAILED)
                results[end] = TransferOutcome(transfers[end].id, R.LINKED_EVENT_CHAIN_OPEN)
                continue
            # Only a chain of several transfers can need undoing: a lone transfer that fails records nothing.
            self._keep_undo = start != end
            mark = len(self._undo)
            for i in range(start, end + 1):
                outcome = self._apply(transfers[i])
                results[i] = outcome
                if outcome.result not in (R.OK, R.EXISTS) and start != end:
                    self._rollback(mark)
                    for j in range(start, end + 1):
                        if j != i:
                            results[j] = TransferOutcome(transfers[j].id, R.LINKED_EVENT_FAILED)
                    break
            self._undo.clear()
        return [r for r in results if r is not None]

    def _rollback(self, mark: int) -> None:
        while len(self._undo) > mark:
            self._undo.pop()()

    def _apply(self, t: NewTransfer) -> TransferOutcome:
        failure = static_check(t)
        if failure is not None:
            return TransferOutcome(t.id, failure)
        existing = self.created.get(t.id) or self.known.get(t.id)
        if existing is not None:
            result = compare_with_existing(t, existing)
            return TransferOutcome(t.id, result, existing.timestamp if result is R.EXISTS else None)
        if t.resolves_pending:
            decision = self._resolve_pending(t)
        else:
            decision = self._plain_or_pending(t)
        if isinstance(decision, R):
            return TransferOutcome(t.id, decision)
        self._record(decision)
        return TransferOutcome(t.id, R.OK, decision.timestamp)

    def _plain_or_pending(self, t: NewTransfer) -> Transfer | R:
        assert t.debit_account_id and t.credit_account_id and t.amount and t.ledger
        debit = self.accounts.get(t.debit_account_id)
        if debit is None:
            return R.DEBIT_ACCOUNT_NOT_FOUND
        credit = self.accounts.get(t.credit_account_id)
        if credit is None:
            return R.CREDIT_ACCOUNT_NOT_FOUND
        if debit.ledger != credit.ledger:
            return R.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER
        if t.ledger != debit.ledger:
            return R.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS
        if debit.debits_must_not_exceed_credits:
            b = self.balances[debit.id]
            if b.debits_pending + b.debits_posted + t.amount > b.credits_posted:
                return R.EXCEEDS_CREDITS
        if credit.credits_must_not_exceed_debits:
            b = self.balances[credit.id]
            if b.credits_pending + b.credits_posted + t.amount > b.debits_posted:
                return R.EXCEEDS_DEBITS
        return self._stored(t, t.debit_account_id, t.credit_account_id, t.amount, t.ledger)

    def _resolve_pending(self, t: NewTransfer) -> Transfer | R:
        assert t.pending_id is not None
        p = self.created.get(t.pending_id) or self.known.get(t.pending_id)
        if p is None:
            return R.PENDING_TRANSFER_NOT_FOUND
        if not p.pending:
            return R.PENDING_TRANSFER_NOT_PENDING
        if t.debit_account_id is not None and t.debit_account_id != p.debit_account_id:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
        if t.credit_account_id is not None and t.credit_account_id != p.credit_account_id:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
        if t.ledger is not None and t.ledger != p.ledger:
            return R.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER
        if t.post_pending:
            amount = p.amount if t.amount is None else t.amount
            if amount > p.amount:
                return R.EXCEEDS_PENDING_TRANSFER_AMOUNT
        else:
            amount = p.amount
            if t.amount is not None and t.amount != p.amount:
                return R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
        resolution = self.resolutions.get(p.id)
        if resolution is not None:
            if resolution.code == TransferCode.PENDING_EXPIRED:
                return R.PENDING_TRANSFER_EXPIRED
            return R.PENDING_TRANSFER_ALREADY_POSTED if resolution.post_pending else R.PENDING_TRANSFER_ALREADY_VOIDED
        expired = p.expires_at is not None and p.expires_at <= self.now
        if t.code == TransferCode.PENDING_EXPIRED:
            if not (t.void_pending and expired):
                return R.PENDING_TRANSFER_NOT_EXPIRED
        elif expired:
            return R.PENDING_TRANSFER_EXPIRED
        return self._stored(t, p.debit_account_id, p.credit_account_id, amount, p.ledger, pending=p)

    def _stored(
        self,
        t: NewTransfer,
        debit: UUID,
        credit: UUID,
        amount: int,
        ledger: LedgerUnit,
        pending: Transfer | None = None,
    ) -> Transfer:
        expires_at = self.now + timedelta(seconds=t.timeout_s) if t.pending and t.timeout_s else None
        transfer = Transfer(
            id=t.id,
            debit_account_id=debit,
            credit_account_id=credit,
            amount=amount,
            ledger=ledger if type(ledger) is LedgerUnit else LedgerUnit(ledger),
            code=t.code,
            reference=t.reference,
            metadata=self._canonical_metadata(t.metadata),
            pending=t.pending,
            post_pending=t.post_pending,
            void_pending=t.void_pending,
            linked=t.linked,
            pending_id=t.pending_id,
            timeout_s=t.timeout_s,
            timestamp=self.now,
            expires_at=expires_at,
        )
        return transfer

    def _canonical_metadata(self, metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if metadata is None:
            return None
        seen = self._canonical.get(id(metadata))
        if seen is not None and seen[0] is metadata:
            return seen[1]
        canonical = canonical_metadata(metadata)
        self._canonical[id(metadata)] = (metadata, canonical)
        return canonical

    def _record(self, tr: Transfer) -> None:
        """Apply a decided transfer to the in-memory state, remembering how to undo it."""
        self.created[tr.id] = tr
        if self._keep_undo:
            self._undo.append(lambda: self.created.pop(tr.id))
        if tr.pending_id is not None:
            self.resolutions[tr.pending_id] = tr
            if self._keep_undo:
                self._undo.append(lambda: self.resolutions.pop(tr.pending_id))  # type: ignore[arg-type]
        for account_id, index, delta in balance_effects(tr, self._pending_amount(tr)):
            self._add(account_id, index, delta)

    def _pending_amount(self, tr: Transfer) -> int:
        if tr.pending_id is None:
            return 0
        p = self.created.get(tr.pending_id) or self.known[tr.pending_id]
        return p.amount

    def _add(self, account_id: UUID, index: int, delta: int) -> None:
        vector = self.deltas.get(account_id)
        if vector is None:
            vector = self.deltas[account_id] = [0, 0, 0, 0]
        vector[index] += delta
        balance = self.balances.get(account_id)
        if balance is not None:
            bump_balance(balance, index, delta)
        if not self._keep_undo:
            return

        def undo() -> None:
            vector[index] -= delta
            if balance is not None:
                bump_balance(balance, index, -delta)

        self._undo.append(undo)


def balance_effects(tr: Transfer, pending_amount: int) -> list[tuple[UUID, int, int]]:
    """How one stored transfer moves balances: (account, field index, signed delta).

    ``pending_amount`` is the amount of the pending transfer a post/void resolves (0 otherwise).
    ``ledger.balances.recompute_balances`` restates this rule in SQL; the tests hold the two to agreement.
    """
    d, c = tr.debit_account_id, tr.credit_account_id
    if tr.pending:
        return [(d, DEBITS_PENDING, tr.amount), (c, CREDITS_PENDING, tr.amount)]
    if tr.post_pending:
        return [
            (d, DEBITS_PENDING, -pending_amount),
            (d, DEBITS_POSTED, tr.amount),
            (c, CREDITS_PENDING, -pending_amount),
            (c, CREDITS_POSTED, tr.amount),
        ]
    if tr.void_pending:
        return [(d, DEBITS_PENDING, -pending_amount), (c, CREDITS_PENDING, -pending_amount)]
    return [(d, DEBITS_POSTED, tr.amount), (c, CREDITS_POSTED, tr.amount)]


def bump_balance(balance: Balance, index: int, delta: int) -> None:
    if index == DEBITS_PENDING:
        balance.debits_pending += delta
    elif index == DEBITS_POSTED:
        balance.debits_posted += delta
    elif index == CREDITS_PENDING:
        balance.credits_pending += delta
    else:
        balance.credits_posted += delta
