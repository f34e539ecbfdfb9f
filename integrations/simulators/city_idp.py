"""City identity provider simulator: publishes a JWKS and mints ES256 ID tokens on request.

``GET /.well-known/jwks.json`` serves the public keys; ``POST /id-tokens`` ``{sub, aud, lifetime_s?}``
returns ``{id_token}`` signed with the current key; ``POST /rotate`` makes a new current key (the old
one stays published). The issuer is the simulator's own base URL.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from integrations.simulators.base import SimulatorServer, run_forever


class CityIdpSimulator(SimulatorServer):
    name = "city-idp-simulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._lock = threading.Lock()
        self._keys: list[tuple[str, ec.EllipticCurvePrivateKey]] = []
        self.rotate()
        self.route("GET", "/.well-known/jwks.json", self._jwks)
        self.route("POST", "/id-tokens", self._mint)
        self.route("POST", "/rotate", lambda query, body: (200, {"kid": self.rotate()}))

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    def rotate(self) -> str:
        kid = uuid.uuid4().hex[:12]
        with self._lock:
            self._keys.append((kid, ec.generate_private_key(ec.SECP256R1())))
        return kid

    def id_token(self, sub: str, audience: str, lifetime_s: int = 300, **extra: Any) -> str:
        with self._lock:
            kid, key = self._keys[-1]
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": audience, "sub": sub, "iat": now, "exp": now + lifetime_s, **extra}
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})

    def _jwks(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        with self._lock:
            keys = list(self._keys)
        published = []
        for kid, key in keys:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            published.append({**jwk, "kid": kid, "use": "sig", "alg": "ES256"})
        return 200, {"keys": published}

    def _mint(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("sub"), str) or not isinstance(body.get("aud"), str):
            return 400, {"error": "sub and aud are required"}
        return 200, {"id_token": self.id_token(body["sub"], body["aud"], int(body.get("lifetime_s", 300)))}


if __name__ == "__main__":
    run_forever(CityIdpSimulator, __doc__.split("\n\n")[0])
