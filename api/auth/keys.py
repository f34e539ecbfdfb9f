"""The keys of identity: the server secret (phone lookup hashes, sealed partner secrets) and the
Ed25519 keys that sign access tokens.

Both come from settings (base64) or are generated once into the data directory (mode 0600), like the
ledger's checkpoint key. Losing the server secret makes stored phone hashes unmatchable (residents
must then sign in again through the identity provider) and sealed webhook secrets unreadable: back
it up with the database.
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
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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


class ServerSecret:
    """One secret, split by HKDF into independent keys per purpose."""

    def __init__(self, secret: bytes) -> None:
        self._phone_key = self._derive(secret, b"carbon-rewards phone lookup v1")
        self._otp_key = self._derive(secret, b"carbon-rewards one-time codes v1")
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

    def seal(self, plaintext: str) -> bytes:
        """Encrypt a secret the service must read back later (nonce ‖ AES-GCM ciphertext)."""
        nonce = secrets.token_bytes(12)
        return nonce + self._box.encrypt(nonce, plaintext.encode(), b"carbon-rewards sealed secret")

    def unseal(self, sealed: bytes) -> str:
        return self._box.decrypt(sealed[:12], sealed[12:], b"carbon-rewards sealed secret").decode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 8 bytes of SHA-256 of the raw public key, in hex (as for checkpoint keys)."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


class TokenSigningKey:
    """The Ed25519 key this process signs access tokens with."""

    algorithm = "EdDSA"

    def __init__(self, seed: bytes) -> None:
        self.private_key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self.private_key.public_key()
        self.kid = key_id(self.public_key)

    @property
    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes_raw()


def hash_token(token: str) -> bytes:
    """Digest under which an opaque high-entropy token (refresh token) is stored and looked up."""
    return hashlib.sha256(token.encode()).digest()
