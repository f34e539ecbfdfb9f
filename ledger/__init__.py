"""The ledger's face: everything the rest of the service may use of it, and nothing more.

Other packages import from ``ledger`` only, never from its modules (an import contract checks it),
so the storage, the engine and the Merkle log can change behind this list. Two ways to write:

* ``Ledger.create_transfers``: group commit, for transfers that stand alone (a redemption's hold,
  say). Concurrent calls share a transaction; each gets its own results.
* ``apply_in_transaction``: on the caller's own connection and transaction, for ledger entries that
  must commit or roll back together with the caller's rows (an action and its credit).

Reads for the API: ``get_balances`` and ``account_entries`` on the caller's connection, and
``LogReader`` for checkpoints and proofs. The chart of accounts (``accounts``) derives every
resident's account ids, so no lookup table is needed. See docs/ledger.md.
"""

from ledger.accounts import (
    CARBON_POOL,
    EXCHANGE,
    ISSUANCE_POINTS,
    SYSTEM_ACCOUNTS,
    merchant_points_account,
    resident_carbon_account,
    resident_points_account,
    resident_receivable_account,
)
from ledger.account_store import lookup_accounts as find_accounts
from ledger.audit import export_lines, verify_database
from ledger.availability import DatabaseOutage, current_outage, database_unreachable, use_outage
from ledger.balances import get_balances
from ledger.checkpoint import Checkpoint, PublicKey, Signer, timestamp_millis
from ledger.checkpoint import verify_signature as verify_checkpoint_signature
from ledger.errors import (
    CheckpointRejected,
    LedgerClosed,
    LedgerConflict,
    LedgerUsageError,
    LongReadsBusy,
    TransferNotSealed,
    TreeSizeNotFound,
)
from ledger.ids import uuid7
from ledger.log_store import InclusionProof
from ledger.leaf import decode as decode_leaf
from ledger.inspection import (
    RunningEntry,
    SealedTransfer,
    accounts_of,
    balance_at,
    find_transfers,
    references_with_code,
    running_statement,
    sealed_transfers,
)
from ledger.periodic import PeriodicTask
from ledger.sealer import Sealer
from ledger.service import GroupObserver, Ledger, LogStatus, expiry_void, expiry_void_id
from ledger.statements import Entry, Movements, account_entries, posted_movements
from ledger.store import apply_in_transaction
from ledger.transparency import LogReader, LongRead
from ledger.types import (
    Account,
    AccountCode,
    AccountOutcome,
    Balance,
    CreateAccountResult,
    CreateTransferResult,
    LedgerUnit,
    NewAccount,
    NewTransfer,
    RecomputeReport,
    Transfer,
    TransferCode,
    TransferOutcome,
)
from ledger.merkle import CompactRange as MerkleRange
from ledger.merkle import leaf_hash as merkle_leaf_hash
from ledger.merkle import verify_inclusion
from ledger.witness import WITNESS_FILE, CheckpointWitness, Witness, read_trusted_checkpoint
from ledger.verify import (
    ExportFormatError,
    VerifyReport,
    checkpoint_from_json,
    checkpoint_to_json,
    leaf_fields_to_json,
    read_export,
    verify_log,
)

__all__ = [
    "WITNESS_FILE",
    "CheckpointWitness",
    "Witness",
    "read_trusted_checkpoint",
    "references_with_code",
    "DatabaseOutage",
    "current_outage",
    "database_unreachable",
    "use_outage",
    "CARBON_POOL",
    "EXCHANGE",
    "ISSUANCE_POINTS",
    "SYSTEM_ACCOUNTS",
    "Account",
    "AccountCode",
    "AccountOutcome",
    "Balance",
    "Checkpoint",
    "CheckpointRejected",
    "CreateAccountResult",
    "CreateTransferResult",
    "Entry",
    "ExportFormatError",
    "InclusionProof",
    "Ledger",
    "LedgerClosed",
    "LedgerConflict",
    "LedgerUnit",
    "LedgerUsageError",
    "LogReader",
    "LongRead",
    "LongReadsBusy",
    "MerkleRange",
    "Movements",
    "NewAccount",
    "NewTransfer",
    "PeriodicTask",
    "GroupObserver",
    "LogStatus",
    "PublicKey",
    "RecomputeReport",
    "RunningEntry",
    "SealedTransfer",
    "Sealer",
    "Signer",
    "Transfer",
    "TransferCode",
    "TransferNotSealed",
    "TransferOutcome",
    "TreeSizeNotFound",
    "VerifyReport",
    "account_entries",
    "accounts_of",
    "balance_at",
    "checkpoint_from_json",
    "checkpoint_to_json",
    "decode_leaf",
    "apply_in_transaction",
    "export_lines",
    "expiry_void",
    "expiry_void_id",
    "find_accounts",
    "find_transfers",
    "get_balances",
    "leaf_fields_to_json",
    "merkle_leaf_hash",
    "merchant_points_account",
    "posted_movements",
    "read_export",
    "resident_carbon_account",
    "resident_points_account",
    "resident_receivable_account",
    "running_statement",
    "sealed_transfers",
    "timestamp_millis",
    "uuid7",
    "verify_checkpoint_signature",
    "verify_inclusion",
    "verify_database",
    "verify_log",
]
