"""Signed requests between carbon-rewards and its partners (HMAC-SHA256 with the partner's secret).

Both directions use one scheme, in the style of Stripe's webhook signatures: the header
``X-Carbon-Signature: t=<unix seconds>,v1=<hex>`` where the hex is HMAC-SHA256, keyed with the
partner's ``whsec_…`` secret, of ``"<t>.<METHOD>.<path>." + body``. Binding the method and path (not
only the body) stops a signed GET for one record being replayed for another. A signature older or
newer than the tolerance is refused, and the receiver remembers the signatures it accepted within
the tolerance so that a replay is refused too. Several ``v1=`` values may be sent while a secret is
being rotated; one valid value is enough.
"""

from __future__ import annotations

import hashlib
import hmac

from domain.errors import Conflict, Unauthenticated

SIGNATURE_HEADER = "X-Carbon-Signature"
TOLERANCE_S = 300


class SignatureMissing(Unauthenticated):
    code = "signature_missing"
    title = "The request is not signed"


class SignatureInvalid(Unauthenticated):
    code = "signature_invalid"
    title = "The request's signature does not match"


class SignatureExpired(Unauthenticated):
    code = "signature_expired"
    title = "The request's signature is outside the accepted time window"


class SignatureReplayed(Conflict):
    code = "signature_replayed"
    title = "This signed request was already received"


def signed_payload(timestamp: int, method: str, path: str, body: bytes) -> bytes:
    return f"{timestamp}.{method.upper()}.{path}.".encode() + body


def digest(secret: str, timestamp: int, method: str, path: str, body: bytes) -> str:
    return hmac.new(secret.encode(), signed_payload(timestamp, method, path, body), hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, method: str, path: str, body: bytes = b"") -> str:
    """The header value signing one request at ``timestamp`` (Unix seconds)."""
    return f"t={timestamp},v1={digest(secret, timestamp, method, path, body)}"


def verify(
    header: str | None,
    secret: str,
    now: int,
    method: str,
    path: str,
    body: bytes = b"",
    tolerance_s: int = TOLERANCE_S,
) -> str:
    """Check a signature header; returns the matching digest (the key for replay detection)."""
    if not header:
        raise SignatureMissing("send the X-Carbon-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256>")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:  # "²" is a digit to isdigit
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value.strip().lower())
    if timestamp is None or not candidates:
        raise SignatureInvalid("the signature header must carry t=<unix seconds> and at least one v1=<hex>")
    if abs(now - timestamp) > tolerance_s:
        raise SignatureExpired(f"t={timestamp} is more than {tolerance_s} s away from the server's clock ({now})")
    expected = digest(secret, timestamp, method, path, body)
    for candidate in candidates:
        if hmac.compare_digest(candidate, expected):
            return expected
    raise SignatureInvalid("no v1 value matches the HMAC-SHA256 of the request with the partner's secret")
