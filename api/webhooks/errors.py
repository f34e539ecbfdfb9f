"""The webhooks feature's errors, each with its stable code (mapped to HTTP in ``api.errors``)."""

from __future__ import annotations

from domain.errors import InvalidInput, NotFound


class WebhookNotFound(NotFound):
    code = "webhook_not_found"
    title = "No webhook endpoint is registered"


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"
    title = "No such webhook delivery"


class InvalidWebhookUrl(InvalidInput):
    code = "invalid_webhook_url"
    title = "The webhook URL cannot be used"
