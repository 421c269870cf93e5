"""Signing keys derived from a web framework's secret: one rule for every adapter.

Values crossing a process boundary are HMAC-signed with a ``checksum_key``. When an
application gives none, its adapter derives one from the framework's own secret (Django's
and Flask's ``SECRET_KEY``, tornado's ``cookie_secret``) with HMAC-SHA256 under the label
:data:`LABEL`: the derived key signs nothing the framework signs (sessions, cookies) and
reveals nothing of the secret. Rotation follows the framework's: the current secret signs,
the fallbacks (Django's and Flask's ``SECRET_KEY_FALLBACKS``) still verify.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

__all__ = ["LABEL", "derive_checksum_key", "derive_checksum_keys"]

#: The derivation label, the same in every adapter (so a Django and a Flask app sharing a
#: secret and a memcached can read each other's values).
LABEL = b"chorde checksum key v1"


def derive_checksum_key(secret: str | bytes) -> bytes:
    """The checksum key derived from one framework secret."""
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes) or not secret:
        raise ValueError("a framework secret must be a non-empty str or bytes")
    return hmac.new(secret, LABEL, hashlib.sha256).digest()


def derive_checksum_keys(secret: str | bytes, fallbacks: Iterable[str | bytes] = ()) -> list[bytes]:
    """Keys for ``checksum_key=``: the current secret's first (it signs), then the fallbacks'."""
    return [derive_checksum_key(s) for s in (secret, *fallbacks) if s]
