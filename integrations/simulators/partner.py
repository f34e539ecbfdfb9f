"""Partner simulators: a transit operator, a recycling operator and a second-hand platform.

Each is a real HTTP server on 127.0.0.1 that plays the partner's side of the contract
(``integrations.partners``): it keeps accounts and records, confirms link codes, serves records to
signed requests, and signs batches of generated, realistic records for pushing. Demo-only routes
stand in for the partner's own app: ``POST /accounts`` opens an account, ``POST
/accounts/{ref}/link-code`` shows a link code to its holder, ``POST /accounts/{ref}/records`` makes
the holder act (a trip, a drop-off, a sale) and returns the new record.

Generated records (``integrations.simulators.records``) are creditable unless ``refusals`` asks for
a share that is not. ``POST /control`` ``{"mode": …}``
makes it misbehave for tests and demos: ``down`` (503), ``slow`` (answers after ``slow_s``),
``garbage`` (answers that are not JSON), ``drip`` (answers one byte every ``slow_s``), ``huge`` (a
record of about 2 MB), ``deep`` (a record nested 100,000 levels deep). ``late_answers = n`` makes the next n answers to our
calls come ``slow_s`` after the simulator acted on them, as when an answer is lost on the way.
A slow answer still pending when the simulator stops is sent at once.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from domain.identity import PartnerKind
from domain.methodologies import MethodologyRegistry
from domain.signatures import SIGNATURE_HEADER, SignatureExpired, SignatureInvalid, SignatureMissing, sign, verify
from integrations.simulators.base import Dripped, SimRequest, SimulatorServer
from integrations.simulators.records import HISTORY, RecordGenerator

PUSH_PATH = "/v1/partner/actions:batch"
#: How the simulator may misbehave (``POST /control``).
MODES = ("ok", "down", "slow", "garbage", "drip", "huge", "deep")
LINK_CODE_TTL_S = 600


@dataclass
class _LinkCode:
    """A code shown to the account's holder; the first verification uses it up, for that request only."""

    code: str
    expires_at: float
    used_by: str | None = None


@dataclass
class _Account:
    ref: str
    next_trip_at: datetime
    link_code: _LinkCode | None = None
    records: list[str] = field(default_factory=list)


class PartnerSimulator(SimulatorServer):
    """One partner of ``kind``; give it the webhook secret carbon-rewards issued with ``configure``."""

    def __init__(
        self,
        kind: PartnerKind | str = PartnerKind.TRANSIT,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        *,
        refusals: float = 0.0,
        methodologies: MethodologyRegistry | None = None,
        utc_offset: timedelta = timedelta(hours=8),
    ) -> None:
        super().__init__(host, port)
        self.kind = PartnerKind(kind)
        self.name = f"{self.kind.value}-partner-simulator"
        self.secret: str | None = None
        self.mode = "ok"
        self.slow_s = 5.0
        self.late_answers = 0
        self.calls = 0
        self._rng = random.Random(seed)
        self._prefix = f"{self.kind.value[:2].upper()}-{secrets.token_hex(4)}"
        self.records = RecordGenerator(
            self.kind, self._rng, refusals, methodologies or MethodologyRegistry.load(), utc_offset
        )
        self._counter = 0
        self._accounts: dict[str, _Account] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.route_pattern("GET", "/accounts/{ref}/verify", self._verify)
        self.route_pattern("GET", "/records/{external_id}", self._record)
        self.route_pattern("POST", "/accounts/{ref}/link-code", self._show_link_code)
        self.route_pattern("POST", "/accounts/{ref}/records", self._new_record)
        self.route("POST", "/accounts", lambda query, body: (201, {"account_ref": self.open_account()}))
        self.route("POST", "/control", self._control)
        self.route("GET", "/health", lambda query, body: (200, {"status": "ok", "kind": self.kind.value}))

    # ------------------------------------------------------------------------ the partner's own side

    def configure(self, webhook_secret: str) -> PartnerSimulator:
        self.secret = webhook_secret
        return self

    def open_account(self, ref: str | None = None) -> str:
        with self._lock:
            self._counter += 1
            ref = ref or f"{self._prefix}-ACC-{self._counter:06d}"
            start = datetime.now(UTC) - HISTORY + timedelta(minutes=self._rng.randint(0, 600))
            self._accounts.setdefault(ref, _Account(ref, start))
        return ref

    def link_code(self, ref: str) -> str:
        """The code the partner's app would show to the signed-in holder of ``ref``."""
        code = f"{self._rng.randrange(10**6):06d}"
        with self._lock:
            self._accounts[ref].link_code = _LinkCode(code, time.time() + LINK_CODE_TTL_S)
        return code

    def add_record(self, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._records[record["external_id"]] = record
        return record

    def generate(self, ref: str | None = None, now: datetime | None = None) -> dict[str, Any]:
        """A new realistic record of this partner's kind (kept, so it can be claimed).

        It belongs to account ``ref``, or to one of the simulator's accounts picked at random. It is
        creditable, except for the ``refusals`` share of records that are not.
        """
        now = now or datetime.now(UTC)
        with self._lock:
            if ref is None:
                ref = self._rng.choice(list(self._accounts))
            account = self._accounts[ref]
            self._counter += 1
            external_id = f"{self._prefix}-{self._counter:09d}"
            record = {"external_id": external_id, "account_ref": ref, "kind": self.kind.value}
            if self.kind is PartnerKind.TRANSIT:
                fields, account.next_trip_at = self.records.trip(account.next_trip_at, now)
                record |= fields
            elif self.kind is PartnerKind.RECYCLING:
                record |= self.records.drop_off(now)
            else:
                record |= self.records.trade(f"{self._prefix}-TR-{self._counter:09d}", now)
            self._records[external_id] = record
            account.records.append(external_id)
        return record

    # ---------------------------------------------------------------------------------- pushing

    def signed_push(self, records: list[dict[str, Any]], timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers of a push of ``records`` (add the partner's bearer token)."""
        assert self.secret is not None, "configure() the webhook secret first"
        body = json.dumps({"records": records}, separators=(",", ":")).encode()
        t = int(time.time()) if timestamp is None else timestamp
        return body, {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, t, "POST", PUSH_PATH, body),
        }

    def push(self, client: httpx.Client, records: list[dict[str, Any]], access_token: str) -> httpx.Response:
        """Push ``records`` to the carbon-rewards service ``client`` points at."""
        body, headers = self.signed_push(records)
        return client.post(PUSH_PATH, content=body, headers={**headers, "Authorization": f"Bearer {access_token}"})

    # ------------------------------------------------------------------------ routes (our side)

    def _misbehave(self) -> tuple[int, Any] | None:
        self.calls += 1
        if self.mode == "down":
            return 503, {"error": "maintenance"}
        if self.mode == "slow":
            self.stopping.wait(self.slow_s)
        if self.mode == "garbage":
            return 200, b"<html>upstream error</html>"
        if self.mode == "huge":
            return 200, {"external_id": "huge", "padding": "x" * 2_000_000}
        if self.mode == "deep":
            return 200, b'{"external_id": "deep", "route": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        return None

    def _check_signature(self, request: SimRequest) -> tuple[int, Any] | None:
        if self.secret is None:
            return 401, {"error": "not configured with a webhook secret"}
        try:
            verify(request.headers.get(SIGNATURE_HEADER.lower()), self.secret, int(time.time()), "GET", request.target)
        except (SignatureMissing, SignatureInvalid, SignatureExpired) as exc:
            return 401, {"error": exc.code}
        return None

    def _verify(self, request: SimRequest) -> tuple[int, Any]:
        if (failure := self._misbehave() or self._check_signature(request)) is not None:
            return failure
        ref = request.params["ref"]
        code = request.query.get("code", [""])[0]
        # A retry of a verification whose answer was lost carries the same request id and gets the same answer.
        request_id = request.query.get("request_id", [""])[0]
        with self._lock:
            account = self._accounts.get(ref)
            shown = account.link_code if account is not None else None
            verified = (
                shown is not None
                and secrets.compare_digest(shown.code, code)
                and shown.expires_at > time.time()
                and (shown.used_by is None or (request_id != "" and shown.used_by == request_id))
            )
            if verified:
                shown.used_by = request_id
        answer = {"account_ref": ref, "verified": verified}
        return (200, Dripped(answer, self.slow_s)) if self.mode == "drip" else self._answer(200, answer)

    def _record(self, request: SimRequest) -> tuple[int, Any]:
        if (failure := self._misbehave() or self._check_signature(request)) is not None:
            return failure
        with self._lock:
            record = self._records.get(request.params["external_id"])
        if record is None:
            return self._answer(404, {"error": "no such record"})
        if self.mode == "drip":
            return 200, Dripped(record, self.slow_s)
        return self._answer(200, record)

    def _answer(self, status: int, body: Any) -> tuple[int, Any]:
        """The answer to one of our calls, after the simulator acted on it; late if ``late_answers`` says so."""
        with self._lock:
            late = self.late_answers > 0
            if late:
                self.late_answers -= 1
        if late:
            self.stopping.wait(self.slow_s)
        return status, body

    def _show_link_code(self, request: SimRequest) -> tuple[int, Any]:
        ref = request.params["ref"]
        if ref not in self._accounts:
            return 404, {"error": "no such account"}
        return 200, {"account_ref": ref, "code": self.link_code(ref), "expires_in": LINK_CODE_TTL_S}

    def _new_record(self, request: SimRequest) -> tuple[int, Any]:
        ref = request.params["ref"]
        if ref not in self._accounts:
            return 404, {"error": "no such account"}
        return 201, self.generate(ref)

    def _control(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        mode = body.get("mode") if isinstance(body, dict) else None
        if mode not in MODES:
            return 400, {"error": f"mode must be one of {', '.join(MODES)}"}
        self.mode = mode
        return 200, {"mode": mode}


def write_credentials(path: Path, credentials: dict[str, Any]) -> None:
    """The partner's client id and secrets, readable by the owner only (created so, never widened)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(credentials, out, indent=2)
        out.write("\n")


def _client_token(client: httpx.Client, client_id: str, client_secret: str) -> str:
    response = client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def run_demo(
    kind: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    service_url: str | None = None,
    operator_token: str | None = None,
    webhook_secret: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    accounts: int = 3,
    push_every_s: float | None = None,
    batch: int = 10,
    refusals: float = 0.0,
    credentials_file: Path | None = None,
) -> None:
    """``carbon-rewards simulate``: serve a partner until Ctrl-C, optionally registering it and pushing traffic.

    With ``operator_token`` (an admin's) the simulator registers itself at ``service_url`` and uses
    the credentials it gets; otherwise give it ``webhook_secret`` (and the client credentials to push).
    """
    simulator = PartnerSimulator(kind, host, port, refusals=refusals)
    simulator.start()
    client = httpx.Client(base_url=service_url, timeout=10.0) if service_url else None
    try:
        print(f"{simulator.name} listening on {simulator.url}", flush=True)
        if client is not None and operator_token:
            created = client.post(
                "/v1/operator/partners",
                json={
                    "name": f"{simulator.name} {secrets.token_hex(2)}",
                    "kind": simulator.kind.value,
                    "api_base_url": simulator.url,
                },
                headers={"Authorization": f"Bearer {operator_token}"},
            )
            created.raise_for_status()
            credentials = created.json()["credentials"]
            client_id, client_secret = credentials["client_id"], credentials["client_secret"]
            webhook_secret = credentials["webhook_secret"]
            partner_id = created.json()["partner"]["id"]
            print(f"registered as partner {partner_id} (client {client_id})", flush=True)
            path = credentials_file or Path(f"carbon-rewards-{simulator.kind.value}-partner.json")
            write_credentials(path, {"service_url": service_url, "partner_id": partner_id, **credentials})
            print(f"credentials written to {path} (mode 0600): push records as this partner by hand", flush=True)
        if webhook_secret:
            simulator.configure(webhook_secret)
        refs = [simulator.open_account() for _ in range(accounts)]
        for ref in refs:
            print(f"account {ref}: link code {simulator.link_code(ref)} (POST /accounts/{ref}/link-code for a new one)")
        if not (push_every_s and client is not None and client_id and client_secret and webhook_secret):
            threading.Event().wait()
            return
        token, token_at = _client_token(client, client_id, client_secret), time.monotonic()
        while True:
            time.sleep(push_every_s)
            if time.monotonic() - token_at > 300:
                token, token_at = _client_token(client, client_id, client_secret), time.monotonic()
            records = [simulator.generate() for _ in range(batch)]
            response = simulator.push(client, records, token)
            if response.status_code != 200:
                print(f"push refused: {response.status_code} {response.text}", flush=True)
                continue
            summary = response.json()
            print(
                f"pushed {len(records)}: {summary['credited']} credited, {summary['rejected']} rejected, "
                f"{summary['duplicate']} duplicate, {summary['pending_review']} held for review",
                flush=True,
            )
    except KeyboardInterrupt:
        pass
    finally:
        if client is not None:
            client.close()
        simulator.stop()
