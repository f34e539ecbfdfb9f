"""End to end: `carbon-rewards serve` on an embedded PostgreSQL, `db-url`, Ctrl-C, a restart in demo mode with two
worker processes, an operator created from the command line, and a resident signing in with the code from the log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families
import psutil
import pytest

from api.cli import main
from tests.helpers import unused_port

CLI = [sys.executable, "-m", "api.cli"]


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose PostgreSQL is killed at the end, whatever happened in the test."""
    path = tmp_path / "data"
    try:
        yield path
    finally:
        for proc in postgres_processes(path):
            proc.kill()


def embedded_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["CARBON_LOG_LEVEL"] = "WARNING"
    return env


class Service:
    def __init__(self, data_dir: Path, *options: str) -> None:
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [*CLI, "serve", "--port", str(self.port), "--data-dir", str(data_dir), *options],
            env=embedded_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:  # type: ignore[union-attr]
            self.output.append(line)

    def wait_ready(self, timeout: float = 240) -> dict:  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._reader.join(timeout=5)
                raise AssertionError("service exited early:\n" + "".join(self.output))
            try:
                response = httpx.get(f"http://127.0.0.1:{self.port}/health/ready", timeout=2)
                if response.status_code == 200:
                    return response.json()  # type: ignore[no-any-return]
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError("service did not become ready")

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        """Kill the service and every process it started (its workers too), whatever state it is in."""
        if self.process.poll() is None:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            self.process.kill()
            self.process.wait()


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run a short ``carbon-rewards`` command in this process (a thread), as the console script would.

    ``serve`` runs as a real child process (it is what is interrupted); the quick commands around it
    run here, which saves an interpreter start and the imports per command on a slow machine.
    """
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("CARBON_LOG_LEVEL", "WARNING")

    async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def conn_url_as_service(db_url_output: str, data_dir: Path) -> str:
    """The embedded database's URL for the service's login role, with the password kept in the data dir."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(db_url_output.strip().splitlines()[-1])
    password = (data_dir / "db-service-password").read_text().strip()
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"carbon_app_login:{quote(password)}@{host}"))


async def test_migrate_serve_db_url_interrupt_and_restart(data_dir: Path, in_process: Any) -> None:
    """One data directory through its life: serve (creating the database), Ctrl-C, migrate, serve again with the
    data kept, in demo mode, with an operator created from the command line."""
    # The README's first command: serve on an empty data directory creates and migrates the database.
    service = Service(data_dir)
    marker = uuid.uuid4()
    try:
        assert service.wait_ready()["database"] == "reachable"
        code, out, err = await in_process("db-url", "--data-dir", str(data_dir))
        assert code == 0, err
        url = out.strip().splitlines()[-1]
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "INSERT INTO ledger_accounts (id, ledger, code, debits_must_not_exceed_credits, "
                "credits_must_not_exceed_debits) VALUES ($1, 'points', 'merchant', false, false)",
                marker,
            )
        finally:
            await conn.close()
        assert service.interrupt() in (0, 130)  # 130: the conventional status after Ctrl-C
    finally:
        service.kill()
    assert not postgres_processes(data_dir), "Ctrl-C must stop the embedded PostgreSQL"
    assert (await in_process("db-url", "--data-dir", str(data_dir)))[0] == 1  # nothing running any more
    code, out, err = await in_process("db-shell", "--data-dir", str(data_dir))
    assert code == 1 and "is not running" in err and len(err.strip().splitlines()) == 1

    code, out, err = await in_process("migrate", "--data-dir", str(data_dir))
    assert code == 0, out + err
    assert "migrated" in out
    assert not postgres_processes(data_dir), "migrate must stop the server it started"

    # Restarted with two worker processes: everything below is served by either of them.
    restarted = Service(data_dir, "--demo", "--workers", "2")
    workers: list[psutil.Process] = []
    try:
        restarted.wait_ready()
        workers = [
            child
            for child in psutil.Process(restarted.process.pid).children(recursive=True)
            if "multiprocessing.spawn" in " ".join(child.cmdline())
        ]
        assert len(workers) == 2, [c.cmdline() for c in workers]
        # Metrics cover both workers, whichever answers the scrape: 20 requests on 20 connections, counted once.
        for _ in range(20):
            assert httpx.get(f"{restarted.url}/health/live", timeout=10).status_code == 200
        for _ in range(4):
            scraped = httpx.get(f"{restarted.url}/metrics", timeout=10)
            assert scraped.status_code == 200, scraped.text
            lives = [
                sample.value
                for family in text_string_to_metric_families(scraped.text)
                for sample in family.samples
                if sample.name == "carbon_http_request_duration_seconds_count"
                and sample.labels.get("route") == "/health/live"
            ]
            assert lives == [20.0], lives
        assert len(list((data_dir / "metrics").glob("*.db"))) >= 2  # the workers' shared files
        conn = await asyncpg.connect(
            (await in_process("db-url", "--data-dir", str(data_dir)))[1].strip().splitlines()[-1]
        )
        try:
            assert await conn.fetchval("SELECT count(*) FROM ledger_accounts WHERE id = $1", marker) == 1
            # The workers log in as the service's own role, which is no superuser (RESET ROLE gains nothing).
            logins = await conn.fetch(
                "SELECT DISTINCT a.usename, r.rolsuper FROM pg_stat_activity AS a JOIN pg_roles AS r "
                "ON r.rolname = a.usename WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
            )
            assert [(r["usename"], r["rolsuper"]) for r in logins] == [("carbon_app_login", False)], logins
            service_url = conn_url_as_service((await in_process("db-url", "--data-dir", str(data_dir)))[1], data_dir)
        finally:
            await conn.close()
        assert (data_dir / "db-service-password").stat().st_mode & 0o777 == 0o600
        shell = subprocess.run(
            [sys.executable, "-m", "api.cli", "db-shell", "--data-dir", str(data_dir), "--", "-tAc", "SELECT 40 + 2"],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        )
        assert shell.returncode == 0 and shell.stdout.strip() == "42", shell.stdout + shell.stderr
        service = await asyncpg.connect(service_url)
        try:
            await service.execute("RESET ROLE")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await service.execute("ALTER TABLE ledger_transfers DISABLE TRIGGER USER")
            with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.RaiseError)):
                await service.execute("DELETE FROM ledger_accounts WHERE id = $1", marker)
        finally:
            await service.close()
        # The keys were generated once into the data directory, readable by the owner only, and survived.
        for name in ("ledger-signing-key", "token-signing-key", "server-secret"):
            assert (data_dir / name).stat().st_mode & 0o777 == 0o600, name
        keys = httpx.get(f"{restarted.url}/v1/ledger/public-keys", timeout=10).json()["keys"]
        assert len(keys) == 1
        assert httpx.get(f"{restarted.url}/v1/ledger/checkpoints/latest", timeout=10).is_success
        code, out, err = await in_process("ledger", "verify", "--data-dir", str(data_dir))
        assert code == 0, out + err
        assert "OK" in out

        # An operator created from the command line while the service runs can sign in.
        code, out, err = await in_process(
            "operator",
            "create",
            "--username",
            "city-admin",
            "--role",
            "admin",
            "--data-dir",
            str(data_dir),
            env={"CARBON_OPERATOR_PASSWORD": "a long enough password"},
        )
        assert code == 0, out + err
        login = httpx.post(
            f"{restarted.url}/v1/auth/operator/login",
            json={"username": "city-admin", "password": "a long enough password"},
            timeout=30,
        )
        assert login.status_code == 200, login.text

        # Demo mode: a resident signs in with the code the service wrote to its log.
        phone = "+8613800138000"
        assert httpx.post(f"{restarted.url}/v1/auth/otp", json={"phone": phone}, timeout=30).status_code == 202
        code = None
        for _ in range(100):
            found = [
                m.group(1)
                for line in restarted.output
                if phone in line
                for m in [re.search(r"code is (\d{6})", line)]
                if m
            ]
            if found:
                code = found[-1]
                break
            time.sleep(0.1)
        assert code is not None, "".join(restarted.output)
        tokens = httpx.post(f"{restarted.url}/v1/auth/otp/verify", json={"phone": phone, "code": code}, timeout=30)
        assert tokens.status_code == 200, tokens.text
        me = httpx.get(f"{restarted.url}/v1/me", headers={"Authorization": f"Bearer {tokens.json()['access_token']}"})
        assert me.status_code == 200 and me.json()["sign_in_methods"] == ["phone"]

        assert restarted.wait_ready(timeout=10), "the commands must leave the service's database running"
        assert restarted.interrupt() in (0, 130)
        assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE], "Ctrl-C stops workers"
    finally:
        restarted.kill()
    assert not postgres_processes(data_dir)


async def test_commands_without_a_database_or_a_free_port_end_in_one_line_and_create_nothing(
    tmp_path: Path, in_process: Any
) -> None:
    empty = tmp_path / "no-such-data-dir"
    export = tmp_path / "ledger.jsonl"
    for args in (
        ("ledger", "verify", "--data-dir", str(empty)),
        ("ledger", "export", "--output", str(export), "--data-dir", str(empty)),
        ("db-url", "--data-dir", str(empty)),
        ("db-shell", "--data-dir", str(empty)),
        ("migrate", "--data-dir", str(empty)),
        ("operator", "create", "--username", "alice", "--role", "admin", "--data-dir", str(empty)),
    ):
        code, out, err = await in_process(*args)
        assert code == 1, (args, out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err, (args, err)
        assert not (empty / "pg").exists(), f"{args} created a cluster"
    assert not export.exists() and not list(tmp_path.glob("*.partial")), "no export file is left behind"

    code, out, err = await in_process("ledger", "export", "--output", str(tmp_path / "missing" / "x.jsonl"))
    assert code == 1 and "no directory" in err

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = await in_process("serve", "--port", str(port), "--data-dir", str(empty))
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1
    assert not (empty / "pg").exists(), "serve must check the port before it creates anything"


def test_operator_create_with_no_terminal_and_no_password_says_so(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CARBON_OPERATOR_PASSWORD")}
    (data_dir / "pg").mkdir(parents=True, exist_ok=True)
    (data_dir / "pg" / "PG_VERSION").write_text("16\n")  # as if a database were there; it is never reached
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "api.cli",
            "operator",
            "create",
            "--username",
            "bob",
            "--role",
            "admin",
            "--data-dir",
            str(data_dir),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode != 0 and "set CARBON_OPERATOR_PASSWORD" in done.stderr and "Traceback" not in done.stderr
