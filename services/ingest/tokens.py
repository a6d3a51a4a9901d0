"""Per-ministry credentials: HTTP bearer tokens and Kafka signing keys.

- kind "http": `Authorization: Bearer <token>` on POST /v1/events. Only the
  SHA-256 of the token is stored; the plaintext is shown once, at creation.
- kind "kafka": a key for HMAC-SHA256 signatures on the raw inbound topic
  (headers `reformspor-key-id` and `reformspor-signature`; see app.py).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from services.ingest.core import token_hash
from services.ingest.store import IngestCredential, IngestStore
from services.shared.config import Settings
from services.shared.ministries import default_registry

KINDS = ("http", "kafka")


class CredentialError(ValueError):
    pass


@dataclass(frozen=True)
class IssuedCredential:
    id: int
    ministry: str
    kind: str
    secret: str  # shown once


def _check(ministry: str, kind: str) -> str:
    code = ministry.strip().upper()
    if code not in default_registry():
        raise CredentialError(f"unknown ministry code {ministry!r}; known: {', '.join(default_registry().codes())}")
    if kind not in KINDS:
        raise CredentialError(f"kind must be one of {', '.join(KINDS)}")
    return code


def issue_credential(settings: Settings, ministry: str, name: str = "", kind: str = "http",
                     store: IngestStore | None = None) -> IssuedCredential:
    code = _check(ministry, kind)
    store = store or IngestStore(settings.db_url("ingest"))
    # 32 random bytes: guessing is hopeless, so a fast hash is the right storage.
    secret = f"rfs_{code.lower()}_{secrets.token_urlsafe(32)}"
    if kind == "http":
        credential = IngestCredential(ministry=code, name=name, kind=kind, token_hash=token_hash(secret))
    else:
        credential = IngestCredential(ministry=code, name=name, kind=kind, signing_key=secret)
    saved = store.add_credential(credential)
    return IssuedCredential(id=saved.id, ministry=code, kind=kind, secret=secret)


def issue_token(settings: Settings, ministry: str, name: str = "") -> str:
    """Create an HTTP API token for a ministry and return its plaintext (shown only once)."""
    return issue_credential(settings, ministry, name=name, kind="http").secret


def issue_signing_key(settings: Settings, ministry: str, name: str = "") -> tuple[int, str]:
    """Create a Kafka signing key; returns (key id for the reformspor-key-id header, key)."""
    issued = issue_credential(settings, ministry, name=name, kind="kafka")
    return issued.id, issued.secret
