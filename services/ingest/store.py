"""Ingest's own database: API credentials and the idempotency records.

SQLite by default (settings.db_url("ingest")), PostgreSQL in production. Only
ingest reads or writes it.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import Column, DateTime, String, Text, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

from services.ingest.core import KnownEvent, RejectionFact
from services.shared.db import create_tables, make_engine


def _now() -> datetime:
    return datetime.now(timezone.utc)


class IngestCredential(SQLModel, table=True):
    """An API token (kind http: only its hash is stored) or a ministry's Kafka user (kind kafka).

    A Kafka credential's secret lives on the broker only (as a salted SCRAM
    hash); this row records that it was issued, for `tokens list` and revoke.
    """

    __tablename__ = "ingest_credential"
    id: Optional[int] = Field(default=None, primary_key=True)
    ministry: str = Field(index=True, max_length=8)
    name: str = Field(default="", max_length=200)
    kind: str = Field(default="http", max_length=8)
    token_hash: Optional[str] = Field(default=None, sa_column=Column(String(64), unique=True, nullable=True))
    created_at: datetime = Field(default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: Optional[datetime] = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class IngestRecord(SQLModel, table=True):
    """An event Kafka acknowledged, keyed by event id.

    HTTP channel (written after the producer's ack): topic/partition/offset is where the
    event landed. Kafka channel (written at the forwarding checkpoint, before its
    transaction commits): topic/partition/offset is the inbound message it came from.
    """

    __tablename__ = "ingest_record"
    event_id: str = Field(primary_key=True, max_length=128)
    content_hash: str = Field(max_length=64)
    ministry: str = Field(max_length=8)
    channel: str = Field(max_length=8)
    topic: str = Field(max_length=255)
    partition: int = -1
    offset: int = -1
    recorded_at: datetime = Field(default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False))


class IngestRejection(SQLModel, table=True):
    """A rejection read from the dead-letter topic (any service's), so a publisher can ask by event id.

    One row per event id and rejecting service; its dead-letter position lets ingest resume there.
    ministry is the authenticated publisher (ingest's header, or the envelope a service got from ingest).
    """

    __tablename__ = "ingest_rejection"
    event_id: str = Field(primary_key=True, max_length=128)
    service: str = Field(primary_key=True, max_length=16)
    ministry: str = Field(default="", max_length=8)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    label: str = Field(default="", max_length=64)
    partition: int = -1
    offset: int = -1
    rejected_at: datetime = Field(default_factory=_now, sa_column=Column(DateTime(timezone=True), nullable=False))


class IngestStore:
    def __init__(self, url: str):
        self.engine = make_engine(url)
        create_tables(self.engine, [IngestCredential.__table__, IngestRecord.__table__, IngestRejection.__table__])

    # --- credentials -------------------------------------------------------------

    def add_credential(self, credential: IngestCredential) -> IngestCredential:
        with Session(self.engine) as session:
            session.add(credential)
            session.commit()
            session.refresh(credential)
            return credential

    def credential_by_hash(self, hashed: str) -> IngestCredential | None:
        with Session(self.engine) as session:
            found = session.exec(select(IngestCredential).where(IngestCredential.token_hash == hashed)).first()
            return found if found is not None and found.revoked_at is None and found.kind == "http" else None

    def list_credentials(self) -> list[IngestCredential]:
        with Session(self.engine) as session:
            return list(session.exec(select(IngestCredential).order_by(IngestCredential.id)))

    def revoke(self, credential_id: int) -> bool:
        with Session(self.engine) as session:
            found = session.get(IngestCredential, credential_id)
            if found is None or found.revoked_at is not None:
                return False
            found.revoked_at = _now()
            session.add(found)
            session.commit()
            return True

    # --- idempotency -----------------------------------------------------------------

    def known(self, event_ids: list[str]) -> dict[str, KnownEvent]:
        if not event_ids:
            return {}
        with Session(self.engine) as session:
            rows = session.exec(select(IngestRecord).where(IngestRecord.event_id.in_(set(event_ids))))
            return {row.event_id: KnownEvent(row.event_id, row.content_hash) for row in rows}

    def recorded_at(self, event_id: str, topic: str, partition: int, offset: int) -> bool:
        """Was this event recorded from exactly that message (so this is the same message read again)?"""
        with Session(self.engine) as session:
            found = session.get(IngestRecord, event_id)
            return found is not None and (found.topic, found.partition, found.offset) == (topic, partition, offset)

    def record(self, records: list[IngestRecord]) -> None:
        """Insert acknowledged events; an id already present is left as it was."""
        if not records:
            return
        with Session(self.engine) as session:
            present = set(session.exec(select(IngestRecord.event_id).where(
                IngestRecord.event_id.in_([r.event_id for r in records]))))
            fresh = {r.event_id: r for r in records if r.event_id not in present}
            session.add_all(fresh.values())
            try:
                session.commit()
                return
            except IntegrityError:  # a concurrent writer got there first: go one by one
                session.rollback()
        for item in records:
            with Session(self.engine) as session:
                if session.get(IngestRecord, item.event_id) is None:
                    session.add(item)
                    try:
                        session.commit()
                    except IntegrityError:
                        session.rollback()

    # --- rejections from the dead-letter topic, and one event's facts ------------------------------

    def record_rejection(self, fact: RejectionFact, partition: int, offset: int) -> None:
        """Keep the latest rejection per event id and service (a dead letter read again changes nothing)."""
        with Session(self.engine) as session:
            session.merge(IngestRejection(event_id=fact.event_id, service=fact.service, ministry=fact.ministry,
                                          reason=fact.reason, label=fact.label, partition=partition, offset=offset))
            session.commit()

    def dead_letter_positions(self) -> dict[int, int]:
        """Per dead-letter partition, the offset after the last rejection kept (where to resume)."""
        with Session(self.engine) as session:
            rows = session.exec(select(IngestRejection.partition, func.max(IngestRejection.offset))
                                .where(IngestRejection.partition >= 0).group_by(IngestRejection.partition))
            return {partition: offset + 1 for partition, offset in rows}

    def event_facts(self, event_id: str) -> tuple[IngestRecord | None, list[RejectionFact]]:
        """What ingest knows of one event id: its acceptance record and the rejections read for it."""
        with Session(self.engine) as session:
            record = session.get(IngestRecord, event_id)
            rows = session.exec(select(IngestRejection).where(IngestRejection.event_id == event_id)).all()
            facts = [RejectionFact(r.event_id, r.ministry, r.service, r.reason, r.label) for r in rows]
            if record is not None:
                session.expunge(record)
            return record, facts

    def dispose(self) -> None:
        self.engine.dispose()
