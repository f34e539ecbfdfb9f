"""Typed settings, read from the environment once and passed through the app factory.

Every variable is prefixed ``CARBON_`` except ``DATABASE_URL``, which follows the common convention.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.client_address import parse_networks


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
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Service processes (uvicorn workers) sharing the port; each runs its own ledger writers, sealer "
        "and housekeeping, which are safe side by side. One Python process uses one core.",
    )
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="Log lines as JSON (auto: when standard error is not a terminal) or as text."
    )
    trusted_proxies: list[str] = Field(
        default=[],
        description="Reverse proxies (addresses or CIDR blocks, JSON list) whose X-Forwarded-For is believed; "
        "the client address then drives per-IP limits, session lists and the audit log.",
    )

    cors_origins: list[str] = Field(
        default=[],
        description="Browser origins (e.g. https://console.example.org, JSON list) allowed to call the API "
        "cross-origin, such as a web console; none by default.",
    )

    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token that may read GET /metrics from anywhere; without it, only loopback clients "
        "that come through no proxy may read it.",
    )
    metrics_multiprocess_dir: Path | None = Field(
        default=None,
        validation_alias="PROMETHEUS_MULTIPROC_DIR",
        description="Where worker processes share their metrics (set by `serve --workers N`; emptied at start).",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # a ValueError names the bad entry
        return value

    db_app_role: str = Field(
        default="carbon_app",
        description="Role the service assumes on every connection; it may not UPDATE or DELETE ledger rows.",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_pool_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a request waits for a free database connection before answering 503 database_busy.",
    )
    ready_timeout_s: float = Field(
        default=2.0, gt=0, description="How long /health/ready waits for the database before answering 503."
    )
    ledger_max_batch: int = Field(default=2000, ge=1, le=8190, description="Most transfers one group commit may carry.")
    ledger_writers: int = Field(default=2, ge=1, le=32, description="Concurrent group-commit transactions per process.")
    pending_expiry_interval_s: float = Field(
        default=1.0, gt=0, description="How often expired pending transfers are voided."
    )
    ledger_log_origin: str = Field(
        default="carbon-rewards",
        min_length=1,
        max_length=200,
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
    seal_poll_interval_s: float = Field(default=0.2, gt=0, description="How often the sealer looks for new transfers.")
    public_inclusion_proofs: bool = Field(
        default=False,
        description="Serve inclusion proofs (which reveal a transfer's fields) to anyone who knows a transfer id; "
        "unset = only to operators and to the owners of the transfer's accounts.",
    )

    # ---------------------------------------------------------------------------- identity and access
    demo: bool = Field(
        default=False,
        description="Demo mode: with no SMS gateway configured, one-time codes are written to the log.",
    )
    server_secret: SecretStr | None = Field(
        default=None,
        description="Base64 of 32 random bytes keying phone lookup hashes and sealed partner secrets; "
        "unset = generated once into <data_dir>/server-secret.",
    )
    token_signing_key: SecretStr | None = Field(
        default=None,
        description="Base64 of the 32-byte Ed25519 seed that signs access tokens; unset = generated once "
        "into <data_dir>/token-signing-key. Changing it rotates the key; tokens of the old one stay valid.",
    )
    token_issuer: str = Field(default="carbon-rewards", description="`iss` of the access tokens.")
    token_audience: str = Field(default="carbon-rewards-api", description="`aud` of the access tokens.")
    access_token_ttl_s: int = Field(default=600, ge=30, le=900, description="Access token lifetime (≤ 15 min).")
    refresh_token_ttl_s: int = Field(default=30 * 86400, ge=300, description="Refresh token lifetime.")
    sms_gateway_url: str | None = Field(
        default=None, description="SMS gateway endpoint; one-time codes are POSTed there as {phone, text}."
    )
    idp_jwks_url: str | None = Field(default=None, description="JWKS of the city identity provider.")
    idp_issuer: str | None = Field(default=None, description="`iss` the city identity provider's ID tokens carry.")
    idp_audience: str | None = Field(default=None, description="`aud` our client has at the identity provider.")
    idp_algorithms: tuple[str, ...] = Field(
        default=("RS256", "ES256", "EdDSA"), description="Signature algorithms accepted on ID tokens."
    )
    idp_jwks_cache_s: float = Field(default=600.0, gt=0, description="How long a fetched JWKS is trusted.")
    idp_jwks_min_refetch_s: float = Field(
        default=10.0, ge=0, description="Least time between two early JWKS fetches caused by an unknown key id."
    )
    http_timeout_s: float = Field(default=5.0, gt=0, description="Timeout of calls to partners and gateways.")
    http_connect_attempts: int = Field(
        default=3,
        ge=1,
        description="Tries to reach the SMS gateway or the identity provider while no connection opens "
        "(the request never left, so repeating it cannot send a code twice).",
    )
    otp_limit_per_phone: int = Field(default=5, ge=1, description="Codes sent to one phone per rate window.")
    otp_limit_per_ip: int = Field(default=30, ge=1, description="Codes requested from one client IP per window.")
    otp_rate_window_s: int = Field(default=3600, ge=1, description="Window of the one-time code limits.")
    login_limit_per_username: int = Field(
        default=10,
        ge=1,
        description="Failed operator logins per username from one client address per window (then 429).",
    )
    login_limit_per_ip: int = Field(
        default=100, ge=1, description="Failed operator logins from one client address per window, any username."
    )
    login_slow_after: int = Field(
        default=10, ge=1, description="Failed logins of a username from anywhere after which its logins are delayed."
    )
    login_rate_window_s: int = Field(default=900, ge=1, description="Window of the login limits.")
    client_auth_failures_per_client: int = Field(
        default=10, ge=1, description="Wrong secrets per client id from one client address per window (then 429)."
    )
    client_auth_failures_per_ip: int = Field(
        default=100, ge=1, description="Failed client-credentials grants per client IP per window."
    )
    client_auth_slow_after: int = Field(
        default=10, ge=1, description="Wrong secrets of a client id from anywhere after which its grants are delayed."
    )
    client_auth_window_s: int = Field(default=900, ge=1, description="Window of the client-credentials limits.")
    auth_max_delay_s: float = Field(
        default=3.0, ge=0, le=30, description="Longest delay of a login or grant at an account being guessed."
    )
    otp_retention_s: int = Field(
        default=86400, ge=0, description="How long a one-time code (and its phone hash) is kept after it expired."
    )
    housekeeping_interval_s: float = Field(
        default=300.0, gt=0, description="How often expired rate windows, codes and replay signatures are deleted."
    )

    # ------------------------------------------------------------------------------------ actions
    points_per_kg_co2e: Decimal = Field(
        default=Decimal("10"), gt=0, description="Points per kg CO₂e avoided (points are rounded down)."
    )
    daily_points_cap: dict[str, int] = Field(
        default={"transit": 100, "recycling": 100, "second_hand": 500},
        description="Most points one resident earns per local day, by action kind (JSON object).",
    )
    monthly_points_cap: dict[str, int] = Field(
        default={"transit": 2000, "recycling": 2000, "second_hand": 3000},
        description="Most points one resident earns per local month, by action kind (JSON object).",
    )
    utc_offset_minutes: int = Field(
        default=480, ge=-720, le=840, description="The programme's time zone (days and months of caps; +08:00)."
    )
    anomaly_factor: int = Field(
        default=10, ge=2, description="A partner pushing more than this × its usual hourly volume goes to review."
    )
    anomaly_floor_per_hour: int = Field(
        default=100_000, ge=1, description="Hourly volume below which a partner is never flagged."
    )
    ingest_group_wait_ms: float = Field(
        default=5.0,
        ge=0,
        le=100,
        description="How long a partner's ingestion group gathers pushes or claims before it is decided (measured "
        "in bench/ingest.py: 5 ms gave the most single pushes per second; 0 = decide at once).",
    )
    ingest_group_max_records: int = Field(
        default=1000, ge=1, le=10_000, description="Most records one ingestion group decides (a larger push is alone)."
    )
    signature_tolerance_s: int = Field(
        default=300, ge=1, le=3600, description="How far a signed request's time may be from ours."
    )
    partner_timeout_s: float = Field(
        default=3.0, gt=0, description="Connect, read and write timeout of one attempt of a call to a partner."
    )
    link_failures_per_resident: int = Field(
        default=5, ge=1, description="Wrong link codes one resident may send per window before 429."
    )
    link_failures_per_account: int = Field(
        default=5, ge=1, description="Wrong link codes for one partner account per window, from anyone, before 429."
    )
    link_window_s: int = Field(default=900, ge=1, description="The window of the link-code limits, in seconds.")
    partner_deadline_s: float = Field(
        default=10.0, gt=0, description="Most time one call to a partner may take, every attempt included."
    )
    partner_connections: int = Field(
        default=16, ge=1, le=1000, description="Connections to one partner at once (its bulkhead)."
    )
    partner_max_response_bytes: int = Field(
        default=1_000_000, ge=1024, description="Largest answer accepted from a partner (larger: 502)."
    )
    partner_max_response_depth: int = Field(
        default=32, ge=2, le=1000, description="Deepest nesting accepted in a partner's answer (deeper: 502)."
    )
    partner_attempts: int = Field(default=3, ge=1, le=10, description="Tries per partner call (with backoff).")
    partner_backoff_s: float = Field(default=0.2, ge=0, description="First backoff between tries; doubles.")
    partner_breaker_threshold: int = Field(
        default=5, ge=1, description="Consecutive failed calls after which a partner's circuit opens."
    )
    partner_breaker_cooldown_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit fails fast before one trial call."
    )

    # -------------------------------------------------------------------------- redemptions, webhooks
    redemption_code_ttl_s: int = Field(
        default=600,
        ge=1,
        le=7 * 86400,
        description="How long a redemption code (and the hold on the resident's points) lives before it expires.",
    )
    capture_failures_per_merchant: int = Field(
        default=20, ge=1, description="Unknown codes a merchant may try to capture per window before it is refused."
    )
    capture_failure_window_s: int = Field(default=900, ge=1, description="Window of the failed-capture limit.")
    idempotency_retention_s: int = Field(
        default=86400,
        ge=60,
        description="How long the answer to a request with an Idempotency-Key is kept for retries.",
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="Timeout of one webhook delivery attempt.")
    webhook_max_attempts: int = Field(
        default=12,
        ge=1,
        le=100,
        description="Attempts after which a webhook delivery is dead (operators may redeliver).",
    )
    webhook_backoff_s: float = Field(
        default=1.0, gt=0, description="Wait before a delivery's second attempt; doubles each time (±50 % jitter)."
    )
    webhook_max_backoff_s: float = Field(default=3600.0, gt=0, description="Longest wait between two attempts.")
    webhook_breaker_threshold: int = Field(
        default=5, ge=1, description="Consecutive failed deliveries after which an endpoint is paused."
    )
    webhook_breaker_cooldown_s: float = Field(
        default=30.0, gt=0, description="How long a paused endpoint waits before one trial delivery."
    )
    webhook_poll_interval_s: float = Field(
        default=0.5, gt=0, description="How often each worker's dispatcher looks for due deliveries."
    )
    webhook_allow_private: bool = Field(
        default=True,
        description="Accept webhook URLs on loopback, private and link-local addresses (demos, tests, an "
        "internal network); set false where merchants and partners must not reach the service's own network.",
    )
    long_reads: int = Field(
        default=2,
        ge=1,
        description="Ledger exports, verification jobs and evidence packages one worker runs at once; each holds "
        "a connection of the ledger's pool while it runs (more get 503 long_reads_busy).",
    )
    ledger_witness_url: str | None = Field(
        default=None,
        description="An external checkpoint witness (POST {url}/checkpoints, GET {url}/checkpoints/latest) that "
        "keeps the latest signed checkpoint besides the data directory; the sealer refuses to sign a checkpoint "
        "that does not extend the largest either holds.",
    )
    ledger_witness_token: SecretStr | None = Field(default=None, description="Bearer token for the witness.")
    exchange_url: str | None = Field(
        default=None,
        description="Base URL of the carbon exchange's API (batches are POSTed to {url}/batches); "
        "unset, batches are built and stay `built` until it is set.",
    )
    exchange_token: SecretStr | None = Field(default=None, description="Bearer token for the carbon exchange.")
    exchange_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one submission to the exchange.")
    exchange_backoff_s: float = Field(
        default=5.0, gt=0, description="Wait before a batch's second submission; doubles each time (±50 % jitter)."
    )
    exchange_max_backoff_s: float = Field(default=3600.0, gt=0, description="Longest wait between two submissions.")
    exchange_poll_interval_s: float = Field(
        default=2.0, gt=0, description="How often each worker's submitter looks for built batches."
    )
