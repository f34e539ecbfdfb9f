"""Outbound webhooks: merchants and partners register an endpoint; features write events to the
transactional outbox in the same transaction as the change; each worker's dispatcher delivers them,
signed, at least once, with backoff, a circuit per endpoint and a dead letter after too many tries.

This file is the feature's face: other packages import from ``api.webhooks`` only. Modules:
``events`` (types, ids), ``outbox`` (writing events), ``endpoints`` (registration), ``dispatcher``,
``deliveries`` (the operators' view), ``repository``, ``runtime``, ``models``, ``schemas``,
``controllers``, ``errors``. Sending one request is ``integrations.webhooks``.
"""

from api.webhooks.controllers import ROUTES
from api.webhooks.dispatcher import Dispatcher
from api.webhooks.events import Event, EventType, event
from api.webhooks.outbox import Outbox
from api.webhooks.repository import DeliveryBacklog, delivery_backlog
from api.webhooks.runtime import WebhooksRuntime, open_dispatcher, open_webhooks

__all__ = [
    "ROUTES",
    "DeliveryBacklog",
    "Dispatcher",
    "Event",
    "EventType",
    "Outbox",
    "WebhooksRuntime",
    "delivery_backlog",
    "event",
    "open_dispatcher",
    "open_webhooks",
]
