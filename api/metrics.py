"""``GET /metrics``: the service's figures in the Prometheus text format, for its operations team.

Two sources. What each process sees (requests, connection pools, ledger groups, partner calls,
credited actions) is counted as it happens by ``prometheus_client``. What the database holds (the
sealer's lag, the age of the latest checkpoint, the webhook backlog) is read when scraped, so every
worker answers alike. With ``serve --workers N`` the workers share their counts through files in
``PROMETHEUS_MULTIPROC_DIR`` (the client library's multiprocess mode) and any worker's answer covers
them all.

Who may read it: a client on loopback that came through no proxy, or anyone with
``CARBON_METRICS_TOKEN`` as a bearer token. Behind a proxy on the same host, requests arrive from
loopback but carry ``X-Forwarded-For``; they need the token unless the proxy is a trusted one and the
client it names is itself on loopback.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy.ext.asyncio import AsyncEngine

from api import webhooks
from api.client_address import Network, client_address, is_loopback, is_trusted_proxy, parse_networks
from api.settings import Settings
from domain.errors import Unauthenticated
from ledger import Ledger

log = logging.getLogger(__name__)

#: Seconds a scrape waits for the database before answering without its figures.
SNAPSHOT_TIMEOUT_S = 2.0
#: The classic text format (what generate_latest writes for plain names), read by every Prometheus;
#: the framework adds the charset.
TEXT_FORMAT = "text/plain; version=0.0.4"
_FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
_GROUP_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_WAITS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MetricsTokenRequired(Unauthenticated):
    code = "metrics_token_required"
    title = "Metrics are served to loopback clients, or with the metrics token"


class Metrics:
    """This process's instruments; one per app, so that apps built side by side (tests) count apart."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        # In multiprocess mode the values live in shared files and are exposed by a collector reading
        # them; registering the instruments too would expose this process's share twice.
        self.registry = CollectorRegistry()
        into = None if multiprocess_dir else self.registry
        if not multiprocess_dir:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.requests = Histogram(
            "carbon_http_request_duration_seconds",
            "Requests by route template, method and status, and how long they took.",
            ["method", "route", "status"],
            registry=into,
        )
        self.pool_wait = Histogram(
            "carbon_db_pool_wait_seconds",
            "How long a request waited for a connection of the requests' pool.",
            ["pool"],
            buckets=_WAITS,
            registry=into,
        )
        self.pool_connections = Gauge(
            "carbon_db_pool_connections",
            "Connections of each pool, in use or idle (summed over the live workers).",
            ["pool", "state"],
            registry=into,
            multiprocess_mode="livesum",
        )
        self.group_transfers = Histogram(
            "carbon_ledger_group_transfers",
            "Transfers per group commit of the ledger.",
            buckets=_GROUP_SIZES,
            registry=into,
        )
        self.group_submissions = Histogram(
            "carbon_ledger_group_submissions",
            "Submissions (callers) per group commit of the ledger.",
            buckets=_GROUP_SIZES,
            registry=into,
        )
        self.group_commit = Histogram(
            "carbon_ledger_group_commit_seconds",
            "How long one group commit's transaction took, retries included.",
            buckets=_WAITS,
            registry=into,
        )
        self.ingest_group_requests = Histogram(
            "carbon_ingest_group_requests",
            "Requests (pushes, claims) per ingestion group.",
            buckets=_GROUP_SIZES,
            registry=into,
        )
        self.ingest_group_records = Histogram(
            "carbon_ingest_group_records", "Records per ingestion group.", buckets=_GROUP_SIZES, registry=into
        )
        self.ingest_group_seconds = Histogram(
            "carbon_ingest_group_seconds",
            "How long an ingestion group took to decide and write, commit included.",
            buckets=_WAITS,
            registry=into,
        )
        self.partner_calls = Histogram(
            "carbon_partner_call_duration_seconds",
            "Calls to partners' systems by partner and outcome, retries included.",
            ["partner", "outcome"],
            registry=into,
        )
        self.partner_circuit_open = Gauge(
            "carbon_partner_circuit_open",
            "1 while calls to the partner are paused after repeated failures (as of its latest call, any worker).",
            ["partner"],
            registry=into,
            multiprocess_mode="livemax",
        )
        self.actions = Counter(
            "carbon_actions",
            "Records decided, by kind and outcome (credited, rejected, pending_review, duplicate).",
            ["kind", "outcome"],
            registry=into,
        )
        self.credited_grams = Counter(
            "carbon_actions_credited_co2e_grams",
            "Grams of CO2e avoided by credited actions, by kind.",
            ["kind"],
            registry=into,
        )

    # ---------------------------------------------------------------- observers given to other parts

    def request_finished(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).observe(seconds)

    def pool_waited(self, seconds: float) -> None:
        self.pool_wait.labels("requests").observe(seconds)

    def group_committed(self, transfers: int, submissions: int, seconds: float) -> None:
        self.group_transfers.observe(transfers)
        self.group_submissions.observe(submissions)
        self.group_commit.observe(seconds)

    def ingest_group_decided(self, requests: int, records: int, seconds: float) -> None:
        self.ingest_group_requests.observe(requests)
        self.ingest_group_records.observe(records)
        self.ingest_group_seconds.observe(seconds)

    def partner_called(self, partner_id: Any, outcome: str, seconds: float, circuit: str) -> None:
        partner = str(partner_id)
        self.partner_calls.labels(partner, outcome).observe(seconds)
        self.partner_circuit_open.labels(partner).set(1 if circuit == "open" else 0)

    def actions_decided(self, kind: str, decided: Sequence[tuple[str, int]]) -> None:
        """Each decided record's outcome and, when credited, its grams."""
        grams = 0
        for outcome, credited_grams in decided:
            self.actions.labels(kind, outcome).inc()
            grams += credited_grams
        if grams:
            self.credited_grams.labels(kind).inc(grams)

    def sample_pools(self, engine: AsyncEngine | None, ledger: Ledger | None) -> None:
        """Record how many connections each pool has in use now."""
        if engine is not None:
            pool: Any = engine.pool
            self.pool_connections.labels("requests", "in_use").set(pool.checkedout())
            self.pool_connections.labels("requests", "idle").set(pool.checkedin())
        if ledger is not None:
            size, idle = ledger.pool.get_size(), ledger.pool.get_idle_size()
            self.pool_connections.labels("ledger", "in_use").set(size - idle)
            self.pool_connections.labels("ledger", "idle").set(idle)

    def process_stopped(self) -> None:
        """Drop this worker's live gauges from the shared files (multiprocess mode)."""
        if self.multiprocess_dir:
            multiprocess.mark_process_dead(os.getpid(), str(self.multiprocess_dir))

    # ------------------------------------------------------------------------------------- exposition

    def render(self, snapshot: DatabaseSnapshot) -> bytes:
        if self.multiprocess_dir:
            shared = CollectorRegistry()
            multiprocess.MultiProcessCollector(shared, path=str(self.multiprocess_dir))
            counted = generate_latest(shared)
        else:
            counted = generate_latest(self.registry)
        database = CollectorRegistry()
        database.register(snapshot)
        return counted + generate_latest(database)


def reset_multiprocess_dir(path: Path) -> None:
    """Empty the shared metrics directory before workers start (stale files would add to their counts)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


@dataclass(eq=False)
class DatabaseSnapshot:
    """What the database holds, read once per scrape; exposed as gauges by ``collect``."""

    up: bool = False
    tree_size: int = 0
    unsealed: int = 0
    checkpoint_age_s: float | None = None
    backlog: webhooks.DeliveryBacklog | None = None

    def collect(self) -> Iterator[Metric]:
        yield _gauge("carbon_database_up", "1 when this scrape could read the database.", 1 if self.up else 0)
        if not self.up:
            return
        yield _gauge("carbon_ledger_log_size", "Transfers in the Merkle log.", self.tree_size)
        yield _gauge(
            "carbon_ledger_sealer_lag_transfers", "Committed transfers not yet in the Merkle log.", self.unsealed
        )
        if self.checkpoint_age_s is not None:
            yield _gauge(
                "carbon_ledger_checkpoint_age_seconds", "Age of the latest signed checkpoint.", self.checkpoint_age_s
            )
        if self.backlog is not None:
            yield _gauge("carbon_webhook_deliveries_pending", "Webhook deliveries waiting.", self.backlog.pending)
            yield _gauge(
                "carbon_webhook_oldest_pending_age_seconds",
                "How long the oldest waiting webhook delivery has waited.",
                self.backlog.oldest_pending_age_s,
            )
            yield _gauge("carbon_webhook_deliveries_dead", "Webhook deliveries given up on.", self.backlog.dead)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


async def read_snapshot(ledger: Ledger) -> DatabaseSnapshot:
    """The database's figures, or ``up=False`` when it does not answer within ``SNAPSHOT_TIMEOUT_S``."""
    try:
        async with asyncio.timeout(SNAPSHOT_TIMEOUT_S):
            status = await ledger.log_status()
            async with ledger.pool.acquire() as conn:
                backlog = await webhooks.delivery_backlog(conn)
    except Exception as exc:  # noqa: BLE001 - a scrape reports the database as down rather than failing
        log.warning("metrics: the database's figures could not be read (%s)", type(exc).__name__)
        return DatabaseSnapshot(up=False)
    age = None
    if status.latest_checkpoint_at is not None:
        age = max(0.0, time.time() - status.latest_checkpoint_at.timestamp())
    return DatabaseSnapshot(True, status.tree_size, status.unsealed, age, backlog)


def may_read_metrics(request: Request[Any, Any, Any], settings: Settings, proxies: Sequence[Network]) -> bool:
    token = settings.metrics_token
    if token is not None:
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(sent.encode(), token.get_secret_value().encode()):
            return True
    peer = request.client.host if request.client else None
    if peer is None:
        return False
    if not is_trusted_proxy(peer, proxies) and any(name in request.headers for name in _FORWARDING_HEADERS):
        return False
    return is_loopback(client_address(peer, request.headers.getall("x-forwarded-for", []), proxies))


class MetricsController(Controller):
    tags = ["health"]

    @get(
        "/metrics",
        summary="The service's figures in the Prometheus text format (loopback, or with the metrics token)",
        media_type=TEXT_FORMAT,
    )
    async def metrics(
        self,
        request: Request[Any, Any, Any],
        settings: NamedDependency[Settings],
        ledger: NamedDependency[Ledger],
        engine: NamedDependency[AsyncEngine],
        metrics: NamedDependency[Metrics],
    ) -> Response[bytes]:
        if not may_read_metrics(request, settings, parse_networks(settings.trusted_proxies)):
            raise MetricsTokenRequired(
                "send CARBON_METRICS_TOKEN as a bearer token, or read the metrics from loopback",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        metrics.sample_pools(engine, ledger)
        return Response(metrics.render(await read_snapshot(ledger)), media_type=TEXT_FORMAT)
