"""`carbon-rewards simulate` runs a partner for demos: it serves, prints link codes, and stops on Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from domain.signatures import SIGNATURE_HEADER, sign
from api.app import create_app
from tests.helpers import identity_settings, served, sign_in_operator, unused_port
from tests.test_cli import embedded_env


def test_simulate_serves_a_partner_until_interrupted() -> None:
    port = unused_port()
    env = {**embedded_env(), "CARBON_SIM_WEBHOOK_SECRET": "whsec_demo"}
    child = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "simulate", "recycling", "--port", str(port), "--accounts", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while not any("link code" in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            line = child.stdout.readline()  # type: ignore[union-attr]
            assert line or child.poll() is None, "".join(lines)
            lines.append(line)
        assert f"recycling-partner-simulator listening on http://127.0.0.1:{port}" in lines[0]
        match = re.search(r"account (\S+): link code (\d{6})", "".join(lines))
        assert match is not None, "".join(lines)
        ref, code = match.groups()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            record = client.post(f"/accounts/{ref}/records").json()
            assert record["account_ref"] == ref and record["kind"] == "recycling" and record["weight_g"] > 0
            target = f"/accounts/{ref}/verify?code={code}"
            signed = {SIGNATURE_HEADER: sign("whsec_demo", int(time.time()), "GET", target)}
            assert client.get(target, headers=signed).json() == {"account_ref": ref, "verified": True}
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_simulate_serves_the_exchange_with_its_token_until_interrupted() -> None:
    port = unused_port()
    env = {**embedded_env(), "CARBON_EXCHANGE_TOKEN": "demo-token"}
    child = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "simulate", "exchange", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = child.stdout.readline()  # type: ignore[union-attr]
        assert f"exchange-simulator listening on http://127.0.0.1:{port}" in first, first
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            batch = {"batch_id": "b-1", "net_g": 510}
            refused = client.post("/batches", json=batch, headers={"Idempotency-Key": "b-1"})
            assert refused.status_code == 401
            signed = {"Authorization": "Bearer demo-token", "Idempotency-Key": "b-1"}
            taken = client.post("/batches", json=batch, headers=signed)
            again = client.post("/batches", json=batch, headers=signed)
            assert (taken.status_code, again.status_code) == (201, 200)
            assert taken.json()["receipt_id"] == again.json()["receipt_id"]
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_simulate_refuses_a_share_of_refusals_outside_0_to_1() -> None:
    for share in ("1.5", "-0.1", "some"):
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "simulate", "transit", "--refusals", share],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and "a share from 0 to 1" in done.stderr, done.stderr


async def test_a_simulator_that_registers_itself_writes_its_credentials_for_use_by_hand(
    database_url: str, sms_gateway: Any, city_idp: Any, tmp_path: Path
) -> None:
    app = create_app(identity_settings(sms_gateway, city_idp), database_url)
    credentials_file = tmp_path / "partner.json"
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        admin = await sign_in_operator(client, database_url, "admin")
        env = {**embedded_env(), "CARBON_SIM_OPERATOR_TOKEN": admin["access_token"]}
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.cli",
                "simulate",
                "transit",
                "--service-url",
                url,
                "--accounts",
                "1",
                "--credentials-file",
                str(credentials_file),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            lines: list[str] = []
            deadline = time.monotonic() + 120
            while not any("credentials written" in line for line in lines):
                assert time.monotonic() < deadline, "".join(lines)
                line = await asyncio.to_thread(child.stdout.readline)  # type: ignore[union-attr]
                assert line or child.poll() is None, "".join(lines)
                lines.append(line)
            assert credentials_file.stat().st_mode & 0o777 == 0o600
            credentials = json.loads(credentials_file.read_text())
            assert credentials["partner_id"] and credentials["webhook_secret"].startswith("whsec_")
            # By hand: a token from the file's client credentials, then a push signed with its webhook secret.
            grant = {
                "grant_type": "client_credentials",
                "client_id": credentials["client_id"],
                "client_secret": credentials["client_secret"],
            }
            token = (await client.post("/v1/auth/token", data=grant)).json()["access_token"]
            body = json.dumps({"records": [{"external_id": "by-hand-1", "account_ref": "NOBODY-1"}]}).encode()
            signature = sign(credentials["webhook_secret"], int(time.time()), "POST", "/v1/partner/actions:batch", body)
            pushed = await client.post(
                "/v1/partner/actions:batch",
                content=body,
                headers={
                    "Authorization": f"Bearer {token}",
                    SIGNATURE_HEADER: signature,
                    "Content-Type": "application/json",
                },
            )
            assert pushed.status_code == 200, pushed.text  # accepted (and the record refused on its own merits)
        finally:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
