"""The queryable read model and audit trail (SQLModel): SQLite by default, PostgreSQL by URL.

Derived from the Faust table, never the other way round: every accepted event
(unique event id, so a redelivery inserts nothing), its per-cell deltas (for
`as_of` queries), the current totals per cell as snapshots (upserts), the flags,
and the budget catalogue. `reformspor replay` can rebuild all of it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import BigInteger, Column, Text, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, Session, SQLModel

from services.budsjett import core
from services.budsjett.catalogue import CatalogueItem
from services.shared.db import create_tables, make_engine


def _big(**kwargs) -> Any:
    return Field(default=0, sa_column=Column(BigInteger, nullable=False, **kwargs))


class BudsjettEvent(SQLModel, table=True):
    __tablename__ = "budsjett_event"
    event_id: str = Field(primary_key=True, max_length=160)
    line_id: str = Field(index=True, max_length=64)
    kind: str = Field(max_length=40)
    source_ministry: str = Field(max_length=8)
    time: datetime = Field(index=True)
    partition: int
    kafka_offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    corrects_id: str | None = Field(default=None, max_length=160)
    corrected_by: str | None = Field(default=None, max_length=160)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    recorded_at: datetime


class BudsjettEffect(SQLModel, table=True):
    """One event's delta on one cell; summing these up to a time gives totals as of then."""

    __tablename__ = "budsjett_effect"
    event_id: str = Field(primary_key=True, max_length=160)
    seq: int = Field(primary_key=True)
    line_id: str = Field(index=True, max_length=64)
    ministry: str = Field(max_length=8)
    phase: str = Field(max_length=20)
    time: datetime = Field(index=True)
    bevilget_ore: int = _big()
    omdisponert_ore: int = _big()
    forpliktet_ore: int = _big()
    utbetalt_ore: int = _big()


class BudsjettCell(SQLModel, table=True):
    __tablename__ = "budsjett_cell"
    line_id: str = Field(primary_key=True, max_length=64)
    ministry: str = Field(primary_key=True, max_length=8)
    phase: str = Field(primary_key=True, max_length=20)
    bevilget_ore: int = _big()
    omdisponert_ore: int = _big()
    forpliktet_ore: int = _big()
    utbetalt_ore: int = _big()
    disponibelt_ore: int = _big()
    overcommitted: bool = False
    overspent: bool = False
    overslagsbevilgning: bool = False
    kan_overfores: bool = False
    funding_posts: str = ""


class BudsjettLine(SQLModel, table=True):
    __tablename__ = "budsjett_line"
    line_id: str = Field(primary_key=True, max_length=64)
    events: int = 0
    last_event_time: datetime | None = None
    updated_at: datetime | None = None


class BudsjettFlag(SQLModel, table=True):
    __tablename__ = "budsjett_flag"
    event_id: str = Field(primary_key=True, max_length=160)
    ministry: str = Field(primary_key=True, max_length=8)
    phase: str = Field(primary_key=True, max_length=20)
    flag: str = Field(primary_key=True, max_length=20)
    line_id: str = Field(index=True, max_length=64)
    raised: bool
    time: datetime
    bevilget_ore: int = _big()
    omdisponert_ore: int = _big()
    forpliktet_ore: int = _big()
    utbetalt_ore: int = _big()
    disponibelt_ore: int = _big()


class BudsjettCatalogueItem(SQLModel, table=True):
    __tablename__ = "budsjett_catalogue_item"
    fiscal_year: int = Field(primary_key=True)
    kap: int = Field(primary_key=True)
    post: int = Field(primary_key=True)
    ministry: str | None = Field(default=None, max_length=8)
    fdep_nr: int
    kap_navn: str = ""
    post_navn: str = ""
    stikkord: str = ""
    amount_ore: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    overslagsbevilgning: bool = False
    kan_overfores: bool = False
    usable_under: str = ""  # "kap.post kap.post"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything stored is UTC.
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class Batch:
    """Rows waiting to be written in one transaction."""

    events: list[dict] = field(default_factory=list)
    effects: list[dict] = field(default_factory=list)
    flags: list[dict] = field(default_factory=list)
    corrections: dict[str, str] = field(default_factory=dict)  # corrected id -> correcting id
    lines: dict[str, dict] = field(default_factory=dict)  # latest snapshot per line

    def __len__(self) -> int:
        return len(self.events) + len(self.lines)

    def add(self, outcome: core.Outcome, message: core.Message, partition: int, offset: int,
            raw: bytes | None = None) -> None:
        """Queue what an applied event changes (pure: builds rows only)."""
        time = message.time
        payload = raw.decode("utf-8", "replace") if raw is not None else json.dumps(message.to_wire())
        corrects_id = getattr(getattr(message, "data", None), "corrects_id", None)
        self.events.append(dict(event_id=message.id, line_id=outcome.line_id, kind=message.kind,
                                source_ministry=message.source_ministry, time=time, partition=partition,
                                kafka_offset=offset, corrects_id=corrects_id, payload=payload,
                                recorded_at=datetime.now(timezone.utc)))
        deltas: dict[tuple[str, str], dict[str, int]] = {}
        for entry in outcome.effect:
            if entry[0] == "cell":
                _, ministry, phase, name, delta = entry
                deltas.setdefault((ministry, phase), {n: 0 for n in core.AMOUNT_FIELDS})[name] += delta
        for seq, ((ministry, phase), amounts) in enumerate(sorted(deltas.items())):
            self.effects.append(dict(event_id=message.id, seq=seq, line_id=outcome.line_id, ministry=ministry,
                                     phase=phase, time=time, **amounts))
        for flag in outcome.flags:
            self.flags.append(dict(flag, time=time))
        if corrects_id:
            self.corrections[corrects_id] = message.id
        if outcome.line is not None:
            self.lines[outcome.line_id] = outcome.line


class ReadModel:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)  # SQLite in WAL mode: HTTP reads do not block the batch writer
        self.dialect = self.engine.dialect.name
        create_tables(self.engine, [m.__table__ for m in _TABLES])

    def close(self) -> None:
        self.engine.dispose()

    def _insert(self, model):
        module = postgresql if self.dialect == "postgresql" else sqlite
        return module.insert(model.__table__)

    def write(self, batch: Batch) -> None:
        """Write a batch in one transaction; idempotent (duplicates by key are ignored, snapshots upserted)."""
        with self.engine.begin() as connection:
            if batch.events:
                connection.execute(self._insert(BudsjettEvent).on_conflict_do_nothing(), batch.events)
            if batch.effects:
                connection.execute(self._insert(BudsjettEffect).on_conflict_do_nothing(), batch.effects)
            if batch.flags:
                rows = [{k: v for k, v in row.items() if k in BudsjettFlag.__table__.c} for row in batch.flags]
                connection.execute(self._insert(BudsjettFlag).on_conflict_do_nothing(), rows)
            for corrected, by in batch.corrections.items():
                connection.execute(BudsjettEvent.__table__.update()
                                   .where(BudsjettEvent.__table__.c.event_id == corrected).values(corrected_by=by))
            cell_rows, line_rows = [], []
            for line_id, line in batch.lines.items():
                line_rows.append(dict(line_id=line_id, events=line["events"],
                                      last_event_time=_parse_time(line["last_event_time"]),
                                      updated_at=_parse_time(line["updated_at"])))
                for key, cell in line["cells"].items():
                    ministry, phase = key.split("|")
                    cell_rows.append(dict(line_id=line_id, ministry=ministry, phase=phase,
                                          **{n: cell[n] for n in core.AMOUNT_FIELDS},
                                          disponibelt_ore=core.disponibelt(cell),
                                          overcommitted=cell["overcommitted"], overspent=cell["overspent"],
                                          overslagsbevilgning=cell["overslagsbevilgning"],
                                          kan_overfores=cell["kan_overfores"],
                                          funding_posts=" ".join(cell["funding_posts"])))
            for model, rows, keys in ((BudsjettLine, line_rows, ["line_id"]),
                                      (BudsjettCell, cell_rows, ["line_id", "ministry", "phase"])):
                if rows:
                    statement = self._insert(model)
                    statement = statement.on_conflict_do_update(
                        index_elements=keys,
                        set_={c: statement.excluded[c] for c in rows[0] if c not in keys})
                    connection.execute(statement, rows)

    # --- queries -----------------------------------------------------------------------

    def event_count(self, line_id: str | None = None) -> int:
        with Session(self.engine) as session:
            query = select(func.count()).select_from(BudsjettEvent)
            if line_id:
                query = query.where(BudsjettEvent.line_id == line_id)
            return session.execute(query).scalar_one()

    def events(self, line_id: str, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            rows = session.execute(
                select(BudsjettEvent).where(BudsjettEvent.line_id == line_id)
                .order_by(BudsjettEvent.time, BudsjettEvent.partition, BudsjettEvent.kafka_offset)
                .limit(limit).offset(offset)).scalars().all()
            effects = session.execute(
                select(BudsjettEffect).where(BudsjettEffect.event_id.in_([r.event_id for r in rows]))
                .order_by(BudsjettEffect.event_id, BudsjettEffect.seq)).scalars().all()
        by_event: dict[str, list] = {}
        for effect in effects:
            by_event.setdefault(effect.event_id, []).append(
                {"ministry": effect.ministry, "phase": effect.phase,
                 **{n: getattr(effect, n) for n in core.AMOUNT_FIELDS}})
        return [{"event_id": r.event_id, "kind": r.kind, "source_ministry": r.source_ministry,
                 "time": core.rfc3339(_utc(r.time)), "partition": r.partition, "offset": r.kafka_offset,
                 "corrects_id": r.corrects_id, "corrected_by": r.corrected_by,
                 "event": json.loads(r.payload), "deltas": by_event.get(r.event_id, [])} for r in rows]

    def cells_as_of(self, line_id: str, as_of: datetime) -> list[dict[str, Any]]:
        """Totals per cell from every delta with event time at or before `as_of`."""
        table = BudsjettEffect.__table__.c
        as_of = as_of.astimezone(timezone.utc)
        query = (select(table.ministry, table.phase, *[func.sum(table[n]) for n in core.AMOUNT_FIELDS])
                 .where(table.line_id == line_id, table.time <= as_of)
                 .group_by(table.ministry, table.phase).order_by(table.ministry, table.phase))
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        cells = []
        for ministry, phase, *sums in rows:
            cell = dict(zip(core.AMOUNT_FIELDS, (int(s or 0) for s in sums)))
            cells.append({"ministry": ministry, "phase": phase, **cell, "disponibelt_ore": core.disponibelt(cell)})
        return cells

    def cells(self, line_id: str | None = None) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            query = select(BudsjettCell).order_by(BudsjettCell.line_id, BudsjettCell.ministry, BudsjettCell.phase)
            if line_id:
                query = query.where(BudsjettCell.line_id == line_id)
            return [row.model_dump() for row in session.execute(query).scalars().all()]

    def flags(self, line_id: str) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            rows = session.execute(select(BudsjettFlag).where(BudsjettFlag.line_id == line_id)
                                   .order_by(BudsjettFlag.time)).scalars().all()
            return [row.model_dump() for row in rows]

    # --- catalogue ---------------------------------------------------------------------

    def replace_catalogue(self, fiscal_year: int, items: list[CatalogueItem]) -> int:
        rows = [dict(fiscal_year=i.fiscal_year, kap=i.kap, post=i.post, ministry=i.ministry, fdep_nr=i.fdep_nr,
                     kap_navn=i.kap_navn, post_navn=i.post_navn, stikkord=i.stikkord, amount_ore=i.amount_ore,
                     overslagsbevilgning=i.overslagsbevilgning, kan_overfores=i.kan_overfores,
                     usable_under=" ".join(f"{k}.{p}" for k, p in sorted(i.usable_under))) for i in items]
        table = BudsjettCatalogueItem.__table__
        with self.engine.begin() as connection:
            connection.execute(table.delete().where(table.c.fiscal_year == fiscal_year))
            if rows:
                connection.execute(table.insert(), rows)
        return len(rows)

    def load_catalogue(self) -> list[CatalogueItem]:
        with Session(self.engine) as session:
            rows = session.execute(select(BudsjettCatalogueItem)).scalars().all()
        return [CatalogueItem(
            fiscal_year=r.fiscal_year, kap=r.kap, post=r.post, ministry=r.ministry, fdep_nr=r.fdep_nr,
            kap_navn=r.kap_navn, post_navn=r.post_navn, stikkord=r.stikkord, amount_ore=r.amount_ore,
            overslagsbevilgning=r.overslagsbevilgning, kan_overfores=r.kan_overfores,
            usable_under=frozenset(tuple(int(x) for x in ref.split(".")) for ref in r.usable_under.split() if ref),
        ) for r in rows]


_TABLES = (BudsjettEvent, BudsjettEffect, BudsjettCell, BudsjettLine, BudsjettFlag, BudsjettCatalogueItem)
