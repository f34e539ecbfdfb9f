"""Builders for tests: fresh accounts per test keep tests independent on one shared database; app settings."""

from __future__ import annotations

import asyncio
import atexit
import base64
import logging
import random
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from api.database import migrate
from api.observability import JsonFormatter
from api.settings import Settings
from domain.methodologies import MethodologyRegistry, points_for
from integrations.embedded_postgres import drop_database, ensure_database, with_database
from ledger.service import Ledger
from ledger.types import (
    AccountCode,
    CreateAccountResult,
    LedgerUnit,
    NewAccount,
    NewTransfer,
    TransferCode,
)

APP_ROLE = "carbon_app"
#: Every sealer on the shared test database signs as this log, so all its checkpoints verify together.
LOG_ORIGIN = "carbon-rewards-test"
#: The programme's time zone (the settings' default offset), in which methodology versions change.
SHANGHAI = timezone(timedelta(hours=8))
METHODOLOGIES = MethodologyRegistry.load()


def yesterday_at(hour: int, minute: int = 0) -> datetime:
    """A time yesterday in Shanghai, so that every trip of a test falls on one local day."""
    day = datetime.now(SHANGHAI).date() - timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI)


#: When methodology version 2 came into force: midnight in Shanghai of its first day.
_V2_DAY = METHODOLOGIES.get("second-hand-trading", 2).valid_from
VERSION_2_STARTS = datetime(_V2_DAY.year, _V2_DAY.month, _V2_DAY.day, tzinfo=SHANGHAI)


def recently(ago: timedelta = timedelta(hours=2)) -> datetime:
    """A moment ``ago`` before now, but not before version 2 came into force: an activity judged by version 2."""
    return max(datetime.now(timezone.utc) - ago, VERSION_2_STARTS + timedelta(minutes=1))


@dataclass(frozen=True, slots=True)
class Expected:
    """What the methodology in force at an activity's time credits for it (at the default 10 points per kg)."""

    grams: int
    points: int
    version: int
    factor: str


def expected(kind: str, category: str, quantity: int, at: datetime) -> Expected:
    """The credit for an activity, from the published data: tests stay right on either side of a version change
    (a trip "yesterday" is judged by version 1 or 2 depending on the day the suite runs)."""
    methodology = METHODOLOGIES.current(kind, at.astimezone(SHANGHAI).date())
    reduction = methodology.reduction(category, quantity)
    grams = reduction.grams_co2e
    return Expected(grams, points_for(grams, Decimal(10)), methodology.version, str(reduction.factor))


class KeptLogs(logging.Handler):
    """Every log record while attached to the root logger, and each as the service writes it in JSON. Tests
    use it rather than pytest's capture, whose handler the migrations' logging configuration replaces."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def lines(self) -> list[str]:
        return [self.format(record) for record in self.records]


@contextmanager
def kept_logs() -> Iterator[KeptLogs]:
    handler = KeptLogs()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


async def make_account(
    ledger: Ledger,
    code: AccountCode = AccountCode.RESIDENT_POINTS,
    *,
    unit: LedgerUnit = LedgerUnit.POINTS,
    limited: bool = True,
    credit_limited: bool = False,
    owner_ref: str | None = None,
) -> UUID:
    """A new account; resident-like accounts may not spend more than they were credited."""
    account_id = uuid.uuid4()
    [outcome] = await ledger.create_accounts(
        [
            NewAccount(
                id=account_id,
                ledger=unit,
                code=code,
                owner_ref=owner_ref or f"test:{account_id}",
                debits_must_not_exceed_credits=limited and not credit_limited,
                credits_must_not_exceed_debits=credit_limited,
            )
        ]
    )
    assert outcome.result is CreateAccountResult.OK
    return account_id


async def make_issuance(ledger: Ledger, unit: LedgerUnit = LedgerUnit.POINTS) -> UUID:
    return await make_account(ledger, AccountCode.ISSUANCE, unit=unit, limited=False)


def transfer(
    debit: UUID | None,
    credit: UUID | None,
    amount: int | None,
    *,
    unit: LedgerUnit | None = LedgerUnit.POINTS,
    code: str = TransferCode.ACTION_CREDIT,
    **fields: Any,
) -> NewTransfer:
    return NewTransfer(
        id=fields.pop("id", None) or uuid.uuid4(),
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        ledger=unit,
        code=code,
        **fields,
    )


def _resolution(pending_id: UUID, amount: int | None, flag: str, fields: dict[str, Any]) -> NewTransfer:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "debit_account_id": None,
        "credit_account_id": None,
        "amount": amount,
        "ledger": None,
        "code": TransferCode.REDEMPTION,
        "pending_id": pending_id,
        flag: True,
    }
    values.update(fields)
    return NewTransfer(**values)


def post(pending_id: UUID, amount: int | None = None, **fields: Any) -> NewTransfer:
    return _resolution(pending_id, amount, "post_pending", fields)


def void(pending_id: UUID, amount: int | None = None, **fields: Any) -> NewTransfer:
    return _resolution(pending_id, amount, "void_pending", fields)


@asynccontextmanager
async def scratch_database(server_url: str) -> AsyncIterator[str]:
    """A database of its own on the test server, migrated to head, dropped on exit."""
    name = f"carbon_scratch_{uuid.uuid4().hex[:12]}"
    await ensure_database(server_url, name)
    url = with_database(server_url, name)
    try:
        await migrate(url, APP_ROLE)
        yield url
    finally:
        await drop_database(server_url, name)


def unused_port() -> int:
    """A port of 127.0.0.1 that nothing listens on, for a server a test starts later (or never).

    Taken below the kernel's ephemeral range (32768 and up on Linux), so that no socket bound to
    port 0 meanwhile (the simulators, other test processes' servers) and no outgoing connection
    can be handed the same port between this check and its use.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no unused port found below the ephemeral range")


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """The app served by uvicorn on a free port of 127.0.0.1, in this event loop; yields its base URL.

    For tests that need requests to run side by side (the test client runs them one at a time).
    """
    import uvicorn

    from api.workers import listening_socket

    listener = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    serving = asyncio.ensure_future(server.serve(sockets=[listener]))
    try:
        while not server.started:
            assert not serving.done(), "the server failed to start"
            await asyncio.sleep(0.05)
        host, port = listener.getsockname()
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await serving
        listener.close()


@asynccontextmanager
async def open_ledger(database_url: str) -> AsyncIterator[Ledger]:
    """The ledger as the service runs it: restricted role, group commit, no background expiry."""
    ledger = await Ledger.open(database_url, role=APP_ROLE, pool_size=20, max_batch=2000, writers=2)
    try:
        yield ledger
    finally:
        await ledger.close()


def _seed(byte: int) -> str:
    return base64.b64encode(bytes([byte]) * 32).decode()


#: Fixed keys, so that the app never writes generated keys into the working directory.
TEST_LEDGER_KEY = base64.b64encode(bytes(range(32))).decode()
TEST_TOKEN_KEY = _seed(7)
TEST_SERVER_SECRET = _seed(9)


#: Where the apps under test keep their data directories; removed when the test process ends.
_DATA_DIRS = tempfile.mkdtemp(prefix="carbon-rewards-tests-")
atexit.register(shutil.rmtree, _DATA_DIRS, ignore_errors=True)


def app_settings(**overrides: object) -> Settings:
    """Settings of an app under test: the test role, small pools, fixed keys, no background expiry."""
    values: dict[str, object] = {
        "db_app_role": APP_ROLE,
        "db_pool_size": 2,
        "pending_expiry_interval_s": 60,
        # The probes' correctness is tested, not this machine's latency (stalls of seconds happen here).
        "ready_timeout_s": 60,
        "ledger_log_origin": LOG_ORIGIN,
        "ledger_signing_key": TEST_LEDGER_KEY,
        "token_signing_key": TEST_TOKEN_KEY,
        "server_secret": TEST_SERVER_SECRET,
        # Its own: the sealer keeps the last checkpoint it signed there, and each app may seal another database.
        "data_dir": Path(tempfile.mkdtemp(dir=_DATA_DIRS)),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


IDP_AUDIENCE = "carbon-rewards-test-client"


def identity_settings(sms_gateway: Any, city_idp: Any, **overrides: object) -> Settings:
    """App settings wired to the simulators, with limits high enough for a whole module of tests."""
    values: dict[str, object] = {
        "sms_gateway_url": sms_gateway.send_url,
        "idp_jwks_url": city_idp.jwks_url,
        "idp_issuer": city_idp.issuer,
        "idp_audience": IDP_AUDIENCE,
        "idp_jwks_min_refetch_s": 0,
        "otp_limit_per_ip": 10_000,
        "login_limit_per_ip": 10_000,
        "client_auth_failures_per_ip": 10_000,
        # One window for the whole run (it started in 2001 and ends in 2033): a test never straddles two.
        "client_auth_window_s": 1_000_000_000,
        # Generous timeouts: this project's CI machine stalls for seconds at a time, and a stall must not
        # look like a partner or gateway failing (the slow-partner test holds its answer until it stops).
        "http_timeout_s": 20.0,
        "partner_timeout_s": 8.0,
        "partner_attempts": 2,
        "partner_backoff_s": 0.05,
        "partner_breaker_threshold": 3,
        "partner_breaker_cooldown_s": 2.0,
    }
    values.update(overrides)
    return app_settings(**values)


def random_phone() -> str:
    return "+86139" + "".join(str(random.randrange(10)) for _ in range(8))


def last_code(sms_gateway: Any, phone: str) -> str:
    """The one-time code in the last message the simulator received for ``phone``."""
    from domain.identity import normalize_phone

    messages = sms_gateway.messages_to(normalize_phone(phone))
    assert messages, f"no SMS was sent to {phone}"
    match = re.search(r"\b(\d{6})\b", messages[-1])
    assert match is not None, messages[-1]
    return match.group(1)


async def sign_in_resident(client: Any, sms_gateway: Any, phone: str | None = None) -> dict[str, Any]:
    """Sign in by phone code through the API; returns the token response (plus the phone used)."""
    phone = phone or random_phone()
    sent = await client.post("/v1/auth/otp", json={"phone": phone})
    assert sent.status_code == 202, sent.text
    verified = await client.post("/v1/auth/otp/verify", json={"phone": phone, "code": last_code(sms_gateway, phone)})
    assert verified.status_code == 200, verified.text
    return {**verified.json(), "phone": phone}


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def create_operator(database_url: str, role: str, password: str = "correct horse battery staple") -> str:
    """An operator created as the CLI does (through the service); returns its username."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from api.identity import create_operator as create
    from api.identity import password_hasher
    from api.request_meta import RequestMeta
    from api.database import open_engine
    from domain.identity import Role

    username = f"{role}-{uuid.uuid4().hex[:8]}"
    engine = open_engine(app_settings(), database_url)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            meta = RequestMeta("test", None)
            await create(session, password_hasher(), username, password, Role(f"operator_{role}"), meta)
    finally:
        await engine.dispose()
    return username


async def sign_in_operator(client: Any, database_url: str, role: str = "admin") -> dict[str, Any]:
    username = await create_operator(database_url, role)
    response = await client.post(
        "/v1/auth/operator/login", json={"username": username, "password": "correct horse battery staple"}
    )
    assert response.status_code == 200, response.text
    return {**response.json(), "username": username}


@dataclass
class PartnerHandle:
    """A partner registered through the operator API, with its simulator configured and a token."""

    id: str
    simulator: Any
    headers: dict[str, str]
    credentials: dict[str, str]


async def register_partner(client: Any, admin: dict[str, str], simulator: Any) -> PartnerHandle:
    created = await client.post(
        "/v1/operator/partners",
        json={
            "name": f"{simulator.kind.value} {uuid.uuid4().hex[:6]}",
            "kind": simulator.kind.value,
            "api_base_url": simulator.url,
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    simulator.configure(body["credentials"]["webhook_secret"])
    token = await client.post(
        "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": body["credentials"]["client_id"],
            "client_secret": body["credentials"]["client_secret"],
        },
    )
    assert token.status_code == 200, token.text
    return PartnerHandle(body["partner"]["id"], simulator, bearer(token.json()), body["credentials"])


async def link_account(client: Any, resident: dict[str, str], partner: PartnerHandle, ref: str | None = None) -> str:
    """Open an account at the partner's simulator and link it to the resident, as the app would."""
    ref = ref or partner.simulator.open_account()
    linked = await client.post(
        "/v1/me/links",
        json={"partner_id": partner.id, "partner_account_ref": ref, "link_code": partner.simulator.link_code(ref)},
        headers=resident,
    )
    assert linked.status_code == 201, linked.text
    return ref


async def push(client: Any, partner: PartnerHandle, records: list[dict[str, Any]], **sign: Any) -> Any:
    body, headers = partner.simulator.signed_push(records, **sign)
    return await client.post("/v1/partner/actions:batch", content=body, headers={**headers, **partner.headers})


@dataclass
class MerchantHandle:
    """A merchant registered through the operator API, with a client-credentials token."""

    id: str
    headers: dict[str, str]


async def register_merchant(client: Any, admin: dict[str, str]) -> MerchantHandle:
    created = await client.post("/v1/operator/merchants", json={"name": f"shop {uuid.uuid4().hex[:6]}"}, headers=admin)
    assert created.status_code == 201, created.text
    credentials = created.json()["credentials"]
    token = await client.post(
        "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
        },
    )
    assert token.status_code == 200, token.text
    return MerchantHandle(created.json()["merchant"]["id"], bearer(token.json()))


async def fund_resident(ledger: Ledger, resident_id: UUID, points: int) -> None:
    """Credit points to a resident straight through the ledger (as crediting an action would)."""
    from ledger import ISSUANCE_POINTS, resident_points_account

    account = resident_points_account(resident_id)
    await ledger.create_accounts([ISSUANCE_POINTS, account])
    [outcome] = await ledger.create_transfers([transfer(ISSUANCE_POINTS.id, account.id, points)])
    assert outcome.applied, outcome
