"""The client address behind trusted proxies: X-Forwarded-For is believed only from them, and only from the right."""

from __future__ import annotations

import pytest
from litestar.testing import RequestFactory

from api.client_address import client_address, parse_networks
from api.request_meta import request_meta_provider
from api.settings import Settings

PROXIES = parse_networks(["10.0.0.0/8", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # the peer is no proxy of ours: header ignored
        ("10.0.0.2", [], "10.0.0.2"),  # a proxy that added nothing
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.1.1.1"], "198.51.100.1"),  # 6.6.6.6 was written by the client
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # the header repeated
        ("10.0.0.2", ["10.0.0.9, 10.0.0.8"], "10.0.0.9"),  # only proxies: the farthest one
        ("10.0.0.2", ["198.51.100.1, not-an-ip, 10.0.0.3"], "10.0.0.3"),  # stop at the last trusted hop
        ("2001:db8::1", ["2400:cb00::1, 2001:db8::2"], "2400:cb00::1"),
        ("testclient", ["198.51.100.1"], "testclient"),
        (None, ["198.51.100.1"], None),
    ],
)
def test_client_address(peer: str | None, forwarded_for: list[str], expected: str | None) -> None:
    assert client_address(peer, forwarded_for, PROXIES) == expected


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("10.0.0.2", ["198.51.100.1"], ()) == "10.0.0.2"


def test_the_request_meta_dependency_applies_the_settings() -> None:
    request = RequestFactory(server="10.0.0.2").get("/", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.1"})
    trusting = request_meta_provider(parse_networks(Settings(trusted_proxies=["10.0.0.0/8"]).trusted_proxies))
    assert trusting(request).client_ip == "198.51.100.1"
    assert request_meta_provider(parse_networks(Settings().trusted_proxies))(request).client_ip == "10.0.0.2"


def test_a_bad_trusted_proxy_entry_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="not-a-network"):
        Settings(trusted_proxies=["10.0.0.0/8", "not-a-network"])


def test_the_cli_names_a_bad_setting_instead_of_printing_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli import main

    monkeypatch.setenv("CARBON_TRUSTED_PROXIES", '["10.0.0.0/8", "not-a-network"]')
    assert main(["db-url"]) == 2
    error = capsys.readouterr().err
    assert "bad configuration" in error and "trusted_proxies" in error and "not-a-network" in error
