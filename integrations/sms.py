"""Sending one-time codes by SMS: an HTTP gateway (``POST {url}`` with ``{phone, text}``), or the log in demo mode."""

from __future__ import annotations

import logging
from typing import Protocol

import httpx

from domain.errors import ServiceUnavailable
from integrations.connect_retry import until_connected

log = logging.getLogger(__name__)


class SmsGatewayUnavailable(ServiceUnavailable):
    code = "sms_gateway_unavailable"
    title = "The SMS gateway is unavailable; try again shortly"


class SmsSender(Protocol):
    async def send(self, phone: str, text: str) -> None: ...


class HttpSmsGateway:
    """A gateway that accepts ``{phone, text}`` as JSON; any non-2xx answer or network error is a failure.

    A connection that could not be opened is tried again (``connect_attempts`` in all): the message never
    left, so the resident cannot get it twice. A timeout after sending is not retried, for that reason.
    """

    def __init__(self, url: str, client: httpx.AsyncClient, *, connect_attempts: int = 3) -> None:
        self.url = url
        self._client = client
        self._connect_attempts = connect_attempts

    async def send(self, phone: str, text: str) -> None:
        try:
            response = await until_connected(
                lambda: self._client.post(self.url, json={"phone": phone, "text": text}),
                attempts=self._connect_attempts,
            )
        except httpx.HTTPError as exc:
            raise SmsGatewayUnavailable(f"the SMS gateway could not be reached ({type(exc).__name__})") from exc
        if not response.is_success:
            raise SmsGatewayUnavailable(f"the SMS gateway answered {response.status_code}")


class LoggingSms:
    """Demo mode only: writes the message, code included, to the service log."""

    async def send(self, phone: str, text: str) -> None:
        log.warning("DEMO SMS to %s: %s", phone, text)


class NoSmsConfigured:
    """No gateway and not in demo mode: one-time codes cannot be sent."""

    async def send(self, phone: str, text: str) -> None:
        raise SmsGatewayUnavailable("no SMS gateway is configured (set CARBON_SMS_GATEWAY_URL, or serve --demo)")
