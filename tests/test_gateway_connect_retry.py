"""The SMS gateway and the identity provider are tried again only while no connection opens.

A request that never left cannot have delivered a code, so repeating it is safe; one that was sent and
then timed out may have, so it is not repeated. The servers here are real sockets on 127.0.0.1: the
gateway simulator, started between two attempts, and a listener that accepts and never answers.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from integrations.idp import (
    CityIdentityProvider,
    IdentityProviderUnavailable,
    IdTokenInvalid,
)
from integrations.simulators.city_idp import CityIdpSimulator
from integrations.simulators.sms_gateway import SmsGatewaySimulator
from integrations.sms import HttpSmsGateway, SmsGatewayUnavailable
from tests.helpers import unused_port


class Attempts:
    """Counts the requests a client starts; on the ``start_on``-th it first calls ``before``."""

    def __init__(self, start_on: int | None = None, before: object = None) -> None:
        self.count = 0
        self._start_on = start_on
        self._before = before

    async def __call__(self, request: httpx.Request) -> None:
        self.count += 1
        if self.count == self._start_on and callable(self._before):
            self._before()


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/send"


async def test_a_gateway_that_comes_up_between_attempts_gets_the_code_once() -> None:
    port = unused_port()
    started: list[SmsGatewaySimulator] = []
    attempts = Attempts(start_on=2, before=lambda: started.append(SmsGatewaySimulator(port=port).start()))
    try:
        async with httpx.AsyncClient(timeout=10, event_hooks={"request": [attempts]}) as client:
            await HttpSmsGateway(f"http://127.0.0.1:{port}/send", client, connect_attempts=3).send(
                "+8613900000001", "hi"
            )
        assert attempts.count == 2
        assert started[0].messages_to("+8613900000001") == ["hi"]
    finally:
        for simulator in started:
            simulator.stop()


async def test_a_gateway_nobody_listens_at_is_tried_connect_attempts_times() -> None:
    attempts = Attempts()
    async with httpx.AsyncClient(timeout=10, event_hooks={"request": [attempts]}) as client:
        gateway = HttpSmsGateway(f"http://127.0.0.1:{unused_port()}/send", client, connect_attempts=3)
        with pytest.raises(SmsGatewayUnavailable, match="ConnectError"):
            await gateway.send("+8613900000001", "hi")
    assert attempts.count == 3


async def test_a_message_that_was_sent_and_not_answered_is_not_sent_again(silent_listener: str) -> None:
    attempts = Attempts()
    async with httpx.AsyncClient(timeout=0.5, event_hooks={"request": [attempts]}) as client:
        with pytest.raises(SmsGatewayUnavailable, match="ReadTimeout"):
            await HttpSmsGateway(silent_listener, client, connect_attempts=3).send("+8613900000001", "hi")
    assert attempts.count == 1


def provider_at(port: int, client: httpx.AsyncClient, connect_attempts: int) -> CityIdentityProvider:
    """Our client of an identity provider whose JWKS and issuer are on 127.0.0.1:``port``."""
    return CityIdentityProvider(
        jwks_url=f"http://127.0.0.1:{port}/.well-known/jwks.json",
        issuer=f"http://127.0.0.1:{port}",
        audience="carbon-rewards",
        algorithms=("RS256", "ES256", "EdDSA"),
        client=client,
        connect_attempts=connect_attempts,
    )


async def test_the_identity_providers_keys_are_fetched_once_it_can_be_reached() -> None:
    port = unused_port()
    started: list[CityIdpSimulator] = []
    attempts = Attempts(start_on=3, before=lambda: started.append(CityIdpSimulator(port=port).start()))
    stranger = CityIdpSimulator()
    try:
        async with httpx.AsyncClient(timeout=10, event_hooks={"request": [attempts]}) as client:
            idp = provider_at(port, client, connect_attempts=3)
            # The first token names a key the provider never had: the keys were fetched (on the third
            # try), so the answer is "not valid" rather than "provider unavailable".
            with pytest.raises(IdTokenInvalid, match="not in the provider's JWKS"):
                await idp.verify(stranger.id_token("resident-1", "carbon-rewards"))
            assert attempts.count == 3
            claims = await idp.verify(started[0].id_token("resident-1", "carbon-rewards"))
        assert claims["sub"] == "resident-1" and attempts.count == 3
    finally:
        stranger.stop()
        for simulator in started:
            simulator.stop()


async def test_an_unreachable_identity_provider_is_a_clear_failure_after_its_attempts() -> None:
    attempts = Attempts()
    stranger = CityIdpSimulator()
    try:
        async with httpx.AsyncClient(timeout=10, event_hooks={"request": [attempts]}) as client:
            idp = provider_at(unused_port(), client, connect_attempts=2)
            with pytest.raises(IdentityProviderUnavailable, match="ConnectError"):
                await idp.verify(stranger.id_token("resident-1", "carbon-rewards"))
        assert attempts.count == 2
    finally:
        stranger.stop()
