"""What the actions feature needs besides a session, built once by the app factory from the settings:
the decision rules, the signature tolerance, the partner client, and the server secret that unseals
partners' webhook secrets."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.actions.errors import PartnerNotFound
from api.actions.grouping import DecisionObserver, IngestGroupObserver, IngestGroups
from api.identity import Partner, find_partner
from api.keys import ServerSecret
from api.settings import Settings
from domain.decision import Rules
from domain.fraud import AnomalyRule
from domain.methodologies import MethodologyRegistry
from integrations.partners import CallObserver, PartnerEndpoint, PartnerGateway, PartnerLimits, RetryPolicy


@dataclass(frozen=True)
class LinkLimits:
    """Wrong link codes allowed per window, per resident and per partner account, before ``429``."""

    per_resident: int
    per_account: int
    window_s: int


@dataclass(frozen=True)
class ActionsRuntime:
    rules: Rules
    partners: PartnerGateway
    secret: ServerSecret
    link_limits: LinkLimits
    groups: IngestGroups

    def endpoint(self, partner: Partner) -> PartnerEndpoint:
        """Where and how to call ``partner`` back."""
        return PartnerEndpoint(partner.id, partner.api_base_url, webhook_secret(self.secret, partner))


def webhook_secret(secret: ServerSecret, partner: Partner) -> str:
    """The partner's webhook secret (stored sealed): it signs our calls to the partner and its pushes to us."""
    return secret.unseal(partner.webhook_secret_sealed)


async def get_partner(session: AsyncSession, partner_id: uuid.UUID) -> Partner:
    partner = await find_partner(session, partner_id)
    if partner is None:
        raise PartnerNotFound(f"no partner {partner_id}")
    return partner


def open_actions(
    settings: Settings,
    methodologies: MethodologyRegistry,
    secret: ServerSecret,
    sessionmaker: async_sessionmaker[AsyncSession],
    observe_calls: CallObserver | None = None,
    observe_decided: DecisionObserver | None = None,
    observe_group: IngestGroupObserver | None = None,
) -> ActionsRuntime:
    """Methodologies, conversion rate, caps, anomaly and signature rules, and the partner client (close it
    with ``partners.aclose()``), and the ingestion groups (``groups.close()``); the observers feed the metrics."""
    return ActionsRuntime(
        rules=Rules(
            methodologies=methodologies,
            points_per_kg=settings.points_per_kg_co2e,
            daily_caps=dict(settings.daily_points_cap),
            monthly_caps=dict(settings.monthly_points_cap),
            local_offset=timedelta(minutes=settings.utc_offset_minutes),
            anomaly=AnomalyRule(factor=settings.anomaly_factor, floor=settings.anomaly_floor_per_hour),
        ),
        partners=PartnerGateway(
            RetryPolicy(
                attempts=settings.partner_attempts,
                backoff_s=settings.partner_backoff_s,
                breaker_threshold=settings.partner_breaker_threshold,
                breaker_cooldown_s=settings.partner_breaker_cooldown_s,
            ),
            PartnerLimits(
                timeout_s=settings.partner_timeout_s,
                deadline_s=settings.partner_deadline_s,
                connections=settings.partner_connections,
                max_response_bytes=settings.partner_max_response_bytes,
                max_response_depth=settings.partner_max_response_depth,
            ),
            observe=observe_calls,
        ),
        secret=secret,
        link_limits=LinkLimits(
            settings.link_failures_per_resident, settings.link_failures_per_account, settings.link_window_s
        ),
        groups=IngestGroups(
            sessionmaker,
            functools.partial(webhook_secret, secret),
            signature_tolerance_s=settings.signature_tolerance_s,
            max_records=settings.ingest_group_max_records,
            wait_s=settings.ingest_group_wait_ms / 1000,
            observe_decided=observe_decided,
            observe_group=observe_group,
        ),
    )
