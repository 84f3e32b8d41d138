"""The node's two secrets, kept in files outside the database.

- ``signing.key``: an Ed25519 key that signs export manifests and audit checkpoints. Its public
  half (``signing.pub``) is what an inspector needs to verify them offline.
- ``biometric.key``: 32 random bytes, the AES-256-GCM key that seals face descriptors and face
  crops at rest. A copy of the database alone reveals no biometric data.

Both are created on first use with mode 0600 in a 0700 folder, and refused when anyone but
the owner can read them, as ssh refuses a loose private key.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SIGNING_KEY = "signing.key"
PUBLIC_KEY = "signing.pub"
BIOMETRIC_KEY = "biometric.key"
_NONCE = 12


class KeyFileError(Exception):
    """A key file that is missing, unreadable, malformed or too widely readable."""


class SealError(Exception):
    """Sealed data that does not open: altered, or sealed under another key or context."""


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: readable by others (mode {stat.S_IMODE(mode):o}); run chmod 600 {path}"
        )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def public_key_from_pem(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError("not an Ed25519 public key")
    return key


def verify_signature(public_pem: bytes, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the signing key's signature of ``data``."""
    try:
        public_key_from_pem(public_pem).verify(signature, data)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class NodeKeys:
    folder: Path
    _signing: Ed25519PrivateKey
    _aead: AESGCM

    @classmethod
    def load_or_create(cls, folder: Path) -> NodeKeys:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(folder.stat().st_mode) & (stat.S_IRWXG | stat.S_IRWXO):
            os.chmod(folder, 0o700)
        sign_path, bio_path = folder / SIGNING_KEY, folder / BIOMETRIC_KEY
        if not sign_path.exists():
            key = Ed25519PrivateKey.generate()
            _write_private(sign_path, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ))
        if not bio_path.exists():
            _write_private(bio_path, secrets.token_bytes(32))
        for path in (sign_path, bio_path):
            _check_private(path)
        try:
            signing = serialization.load_pem_private_key(sign_path.read_bytes(), password=None)
        except ValueError as e:
            raise KeyFileError(f"{sign_path}: not a PEM private key ({e})") from e
        if not isinstance(signing, Ed25519PrivateKey):
            raise KeyFileError(f"{sign_path}: not an Ed25519 key")
        raw = bio_path.read_bytes()
        if len(raw) != 32:
            raise KeyFileError(f"{bio_path}: must hold exactly 32 bytes, holds {len(raw)}")
        keys = cls(folder, signing, AESGCM(raw))
        pub_path = folder / PUBLIC_KEY
        if not pub_path.exists() or pub_path.read_bytes() != keys.public_pem:
            pub_path.write_bytes(keys.public_pem)
        return keys

    # -- signing ----------------------------------------------------------------------------

    @property
    def public_pem(self) -> bytes:
        return self._signing.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> bytes:
        return self._signing.sign(data)

    # -- sealing biometric data -------------------------------------------------------------

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """Encrypt and authenticate; ``context`` (e.g. b"face:123") binds it to its row."""
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], context)
        except (InvalidTag, ValueError) as e:
            raise SealError("sealed data does not open (altered, or another key)") from e
