"""The service's key material: where each key comes from, and the server secret.

Every key is a 32-byte seed, given in the settings (base64) or generated once into the data
directory (mode 0600) and read from there on every start. ``prepare_keys`` creates the missing files
before worker processes start, so that all workers sign with the same keys.

The server secret is split by HKDF into independent keys per purpose: phone lookup hashes, one-time
code and redemption code hashes, and a box that seals what the service must read back (partners'
webhook secrets, webhook signing secrets, redemption codes, answers kept for idempotent retries). Losing it makes stored phone hashes
unmatchable (residents must then sign in again through the identity provider) and sealed webhook
secrets unreadable: back it up with the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from api.settings import Settings
from ledger import Signer

SEED_BYTES = 32


def load_or_create_seed(path: Path) -> bytes:
    """32 random bytes kept base64-encoded in ``path``; created there (mode 0600) on first use."""
    if path.exists():
        return base64.b64decode(path.read_text().strip())
    seed = secrets.token_bytes(SEED_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(seed).decode() + "\n")
    return seed


def decode_seed(value: str) -> bytes:
    seed = base64.b64decode(value)
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a key seed must be {SEED_BYTES} bytes (base64), got {len(seed)}")
    return seed


def _secret_seed(value: SecretStr | None, path: Path) -> bytes:
    return decode_seed(value.get_secret_value()) if value is not None else load_or_create_seed(path)


def checkpoint_signer(settings: Settings) -> Signer:
    """The configured checkpoint key, or the one generated once into the data directory."""
    return Signer.from_seed(_secret_seed(settings.ledger_signing_key, settings.data_dir / "ledger-signing-key"))


def token_signing_seed(settings: Settings) -> bytes:
    """The configured access-token key, or the one generated once into the data directory."""
    return _secret_seed(settings.token_signing_key, settings.data_dir / "token-signing-key")


def server_secret_seed(settings: Settings) -> bytes:
    """The configured server secret, or the one generated once into the data directory."""
    return _secret_seed(settings.server_secret, settings.data_dir / "server-secret")


def prepare_keys(settings: Settings) -> None:
    """Create the key files the settings do not provide, once, before worker processes start.

    Each worker would otherwise race the others to create them, and they must all sign with the same keys.
    """
    checkpoint_signer(settings)
    token_signing_seed(settings)
    server_secret_seed(settings)


class ServerSecret:
    """One secret, split by HKDF into independent keys per purpose."""

    def __init__(self, secret: bytes) -> None:
        self._phone_key = self._derive(secret, b"carbon-rewards phone lookup v1")
        self._otp_key = self._derive(secret, b"carbon-rewards one-time codes v1")
        self._redemption_key = self._derive(secret, b"carbon-rewards redemption codes v1")
        self._box = AESGCM(self._derive(secret, b"carbon-rewards secret box v1"))

    @staticmethod
    def _derive(secret: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)

    def phone_hash(self, e164_phone: str) -> bytes:
        """Keyed hash of a normalised phone number: lookups work, the number is never stored."""
        return hmac.new(self._phone_key, e164_phone.encode(), hashlib.sha256).digest()

    def otp_hash(self, challenge_id: UUID, code: str) -> bytes:
        """Keyed hash of a one-time code: a leaked table cannot be brute-forced over the 10**6 codes."""
        return hmac.new(self._otp_key, challenge_id.bytes + code.encode(), hashlib.sha256).digest()

    def redemption_code_hash(self, code: str) -> bytes:
        """Keyed hash of a normalised redemption code: how a code is stored and looked up."""
        return hmac.new(self._redemption_key, code.encode(), hashlib.sha256).digest()

    def seal(self, plaintext: str) -> bytes:
        """Encrypt a secret the service must read back later (nonce ‖ AES-GCM ciphertext)."""
        nonce = secrets.token_bytes(12)
        return nonce + self._box.encrypt(nonce, plaintext.encode(), b"carbon-rewards sealed secret")

    def unseal(self, sealed: bytes) -> str:
        return self._box.decrypt(sealed[:12], sealed[12:], b"carbon-rewards sealed secret").decode()
