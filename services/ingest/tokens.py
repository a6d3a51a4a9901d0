"""Per-ministry credentials: HTTP bearer tokens and Kafka users.

- kind "http": `Authorization: Bearer <token>` on POST /v1/events. Only the
  SHA-256 of the token is stored; the plaintext is shown once, at creation.
- kind "kafka": the ministry's own SCRAM-SHA-512 user on the broker
  (`ministry-<CODE>`) with the ACLs of the matrix's "ministry" rows (write its
  own inbound topic `<prefix>inbound.<CODE>`, nothing else). The password is
  shown once, as client properties for `kcat -F`; the broker keeps only a
  salted hash. One active Kafka credential per ministry: a new one replaces the
  old password; revoking deletes the user and its ACLs.
"""
from __future__ import annotations

import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass

from kafka.admin import ScramMechanism, UserScramCredentialDeletion, UserScramCredentialUpsertion
from kafka.errors import KafkaError

from services.ingest.core import token_hash
from services.ingest.store import IngestCredential, IngestStore
from services.shared.acls import (MatrixError, apply_bindings, load_matrix, matrix_path, ministry_bindings,
                                  remove_bindings)
from services.shared.config import Settings
from services.shared.kafka_security import (SCRAM_MECHANISM, KafkaCredentialError, client_properties,
                                            connection_config, generate_credential, ministry_principal)
from services.shared.ministries import default_registry
from services.shared.topics import create_missing_topics, open_admin

KINDS = ("http", "kafka")
SCRAM = ScramMechanism[SCRAM_MECHANISM.replace("-", "_")]


class CredentialError(ValueError):
    pass


@dataclass(frozen=True)
class IssuedCredential:
    id: int
    ministry: str
    kind: str
    secret: str  # shown once: the token (http) or the client properties with the password (kafka)


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
    if kind == "kafka":
        return _issue_kafka_user(settings, code, name, store)
    # 32 random bytes: guessing is hopeless, so a fast hash is the right storage.
    secret = f"rfs_{code.lower()}_{secrets.token_urlsafe(32)}"
    saved = store.add_credential(IngestCredential(ministry=code, name=name, kind=kind, token_hash=token_hash(secret)))
    return IssuedCredential(id=saved.id, ministry=code, kind=kind, secret=secret)


def _issue_kafka_user(settings: Settings, code: str, name: str, store: IngestStore) -> IssuedCredential:
    credential = generate_credential(ministry_principal(code))
    with _admin_session(settings) as admin:
        create_missing_topics(admin, settings, [settings.topics.inbound_for(code)])
        errors = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
            credential.username, SCRAM, credential.password)])
        if errors.get(credential.username):
            raise CredentialError(f"the broker refused the user {credential.username}: {errors[credential.username]}")
        _wait_for_user(admin, credential.username)
        apply_bindings(admin, ministry_bindings(load_matrix(matrix_path(settings)), settings, code))
    for replaced in _active_kafka_credentials(store, code):
        store.revoke(replaced.id)  # its password no longer works: the list must say so
    saved = store.add_credential(IngestCredential(ministry=code, name=name, kind="kafka"))
    return IssuedCredential(id=saved.id, ministry=code, kind="kafka",
                            secret=client_properties(connection_config(settings, credential)))


def revoke_credential(settings: Settings, credential_id: int, store: IngestStore | None = None) -> bool:
    """Revoke a credential; a Kafka one also loses its broker user and ACLs. False if none was active."""
    store = store or IngestStore(settings.db_url("ingest"))
    found = next((c for c in store.list_credentials() if c.id == credential_id and c.revoked_at is None), None)
    if found is None:
        return False
    if found.kind == "kafka":
        _remove_kafka_user(settings, found.ministry)
    return store.revoke(credential_id)


def _remove_kafka_user(settings: Settings, code: str) -> None:
    username = ministry_principal(code)
    with _admin_session(settings) as admin:
        remove_bindings(admin, ministry_bindings(load_matrix(matrix_path(settings)), settings, code))
        errors = admin.alter_user_scram_credentials([UserScramCredentialDeletion(username, SCRAM)])
        error = errors.get(username)
        # A user already gone is what we want; any other refusal must be seen.
        if error and "not found" not in error.lower() and "does not exist" not in error.lower():
            raise CredentialError(f"the broker refused to delete {username}: {error}")


def _wait_for_user(admin, username: str, timeout_s: float = 15.0) -> None:
    """The controller commits a new user before the broker can authenticate it: wait for the broker."""
    deadline = time.monotonic() + timeout_s
    while not (admin.describe_user_scram_credentials([username]).get(username) or {}).get("credential_infos"):
        if time.monotonic() > deadline:
            raise CredentialError(f"the broker did not know {username} within {timeout_s:.0f}s")
        time.sleep(0.1)


@contextmanager
def _admin_session(settings: Settings):
    """The admin client; any failure on the way becomes one CredentialError line for the CLI."""
    try:
        admin = open_admin(settings, 15.0)
    except (KafkaError, KafkaCredentialError) as error:
        raise CredentialError(f"cannot reach Kafka at {settings.kafka_bootstrap} as the admin: {error}") from None
    try:
        yield admin
    except (KafkaError, KafkaCredentialError, MatrixError, RuntimeError, TimeoutError) as error:
        raise CredentialError(f"Kafka at {settings.kafka_bootstrap}: {error}") from None
    finally:
        admin.close()


def _active_kafka_credentials(store: IngestStore, code: str) -> list[IngestCredential]:
    return [c for c in store.list_credentials()
            if c.ministry == code and c.kind == "kafka" and c.revoked_at is None]


def issue_token(settings: Settings, ministry: str, name: str = "") -> str:
    """Create an HTTP API token for a ministry and return its plaintext (shown only once)."""
    return issue_credential(settings, ministry, name=name, kind="http").secret

