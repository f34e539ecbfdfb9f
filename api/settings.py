"""Typed settings, read from the environment once and passed through the app factory.

Every variable is prefixed ``CARBON_`` except ``DATABASE_URL``, which follows the common convention.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service configuration. Unset ``DATABASE_URL`` means: run an embedded PostgreSQL in ``data_dir``."""

    model_config = SettingsConfigDict(env_prefix="CARBON_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "CARBON_DATABASE_URL"),
        description="postgresql:// URL of an existing server; unset = embedded PostgreSQL.",
    )
    data_dir: Path = Field(default=Path(".data"), description="Where the embedded PostgreSQL keeps its data.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "INFO"
    db_app_role: str = Field(
        default="carbon_app",
        description="Role the service assumes on every connection; it may not UPDATE or DELETE ledger rows.",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    ledger_max_batch: int = Field(
        default=2000, ge=1, le=8190, description="Most transfers one group commit may carry."
    )
    ledger_writers: int = Field(
        default=2, ge=1, le=32, description="Concurrent group-commit transactions per process."
    )
    pending_expiry_interval_s: float = Field(
        default=1.0, gt=0, description="How often expired pending transfers are voided."
    )
    ledger_log_origin: str = Field(
        default="carbon-rewards", min_length=1, max_length=200,
        description="Name of the Merkle log, signed into every checkpoint (one name per deployment).",
    )
    ledger_signing_key: SecretStr | None = Field(
        default=None,
        description="Base64 of the 32-byte Ed25519 seed that signs checkpoints; unset = a key generated once "
        "into <data_dir>/ledger-signing-key.",
    )
    checkpoint_every: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Sign a checkpoint every N transfers."
    )
    checkpoint_interval_s: float = Field(
        default=5.0, gt=0, description="…or every T seconds, whichever comes first (when the log grew)."
    )
    seal_poll_interval_s: float = Field(
        default=0.2, gt=0, description="How often the sealer looks for new transfers."
    )
    public_inclusion_proofs: bool = Field(
        default=False,
        description="Serve inclusion proofs (which reveal a transfer's fields) to anyone who knows a transfer id.",
    )
