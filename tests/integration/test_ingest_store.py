"""ingest's store on PostgreSQL (production) and SQLite (default): credentials and idempotency records."""
from __future__ import annotations

import pytest

from services.ingest.core import token_hash
from services.ingest.store import IngestCredential, IngestRecord, IngestStore
from services.ingest.tokens import issue_credential
from services.shared.config import Settings


def _exercise(store: IngestStore, settings: Settings) -> None:
    issued = issue_credential(settings, "bfd", name="økonomi", store=store)
    assert issued.ministry == "BFD" and issued.secret.startswith("rfs_bfd_")
    found = store.credential_by_hash(token_hash(issued.secret))
    assert found is not None and found.ministry == "BFD"
    assert store.credential_by_hash(token_hash(issued.secret + "x")) is None
    kafka_user = store.add_credential(IngestCredential(ministry="KD", kind="kafka"))  # its secret lives on the broker
    assert kafka_user.id != issued.id and kafka_user.token_hash is None

    record = IngestRecord(event_id="e-1", content_hash="a" * 64, ministry="BFD", channel="http", topic="t", partition=0, offset=7)
    store.record([record])
    store.record([IngestRecord(event_id="e-1", content_hash="b" * 64, ministry="BFD", channel="http", topic="t"),
                  IngestRecord(event_id="e-2", content_hash="c" * 64, ministry="BFD", channel="kafka", topic="t")])
    known = store.known(["e-1", "e-2", "e-3"])
    assert {k: v.content_hash[0] for k, v in known.items()} == {"e-1": "a", "e-2": "c"}  # first write wins

    assert store.revoke(issued.id) and not store.revoke(issued.id)
    assert store.credential_by_hash(token_hash(issued.secret)) is None
    assert [c.revoked_at is not None for c in store.list_credentials()] == [True, False]


@pytest.mark.postgres
def test_store_on_postgresql(postgres_url, tmp_path):
    settings = Settings(home=tmp_path, ingest_db_url=postgres_url)
    store = IngestStore(settings.db_url("ingest"))
    try:
        _exercise(store, settings)
    finally:
        store.dispose()


def test_store_on_sqlite(tmp_path):
    settings = Settings(home=tmp_path / "home")
    _exercise(IngestStore(settings.db_url("ingest")), settings)
