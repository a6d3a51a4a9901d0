"""The queryable read model and audit trail (SQLModel): SQLite by default, PostgreSQL by URL.

Derived from the ledger's state, never the other way round (written by the
worker's sink at each checkpoint, before its Kafka transaction commits): every accepted event
(unique event id, so a redelivery inserts nothing), its deltas per cell and funding kap/post
(for `as_of` queries), the current totals per cell and per cell × kap/post as snapshots
(upserts) and the flags. `reformspor replay` can rebuild all of it. The budget catalogue
is not here: budsjett follows it on its Kafka topic (catalogue.CatalogueHolder).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any, Callable

from sqlalchemy import BigInteger, Column, Text, and_, event, func, inspect, select
from sqlmodel import Field, Session, SQLModel

from services.budsjett import core
from services.shared.db import create_tables, make_engine


def _big() -> Any:
    # sa_type, not sa_column: a Column object belongs to one table, and Amounts is shared by four.
    return Field(default=0, sa_type=BigInteger, nullable=False)


class Amounts(SQLModel):
    """The amount columns of core.AMOUNT_FIELDS, in øre, as every table of deltas or totals has them."""

    bevilget_ore: int = _big()
    omdisponert_ore: int = _big()
    forpliktet_ore: int = _big()
    utbetalt_ore: int = _big()
    overfort_inn_ore: int = _big()
    bortfalt_ore: int = _big()


class BudsjettEvent(SQLModel, table=True):
    __tablename__ = "budsjett_event"
    event_id: str = Field(primary_key=True, max_length=160)
    line_id: str = Field(index=True, max_length=64)
    kind: str = Field(max_length=40)
    source_ministry: str = Field(max_length=8)
    fiscal_year: int  # the year its money belongs to (a korrigert: the original's)
    time: datetime = Field(index=True)
    partition: int
    kafka_offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    corrects_id: str | None = Field(default=None, max_length=160)
    corrected_by: str | None = Field(default=None, max_length=160)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    recorded_at: datetime


class BudsjettEffect(Amounts, table=True):
    """One event's delta on one cell's funding kap/post (kap 0 post 0: none named); summing these up to a time
    gives totals as of then, per cell or per post."""

    __tablename__ = "budsjett_effect"
    event_id: str = Field(primary_key=True, max_length=160)
    seq: int = Field(primary_key=True)
    line_id: str = Field(index=True, max_length=64)
    ministry: str = Field(max_length=8)
    phase: str = Field(max_length=20)
    fiscal_year: int
    kap: int = 0
    post: int = 0
    time: datetime = Field(index=True)


class BudsjettCell(Amounts, table=True):
    __tablename__ = "budsjett_cell"
    line_id: str = Field(primary_key=True, max_length=64)
    ministry: str = Field(primary_key=True, max_length=8)
    phase: str = Field(primary_key=True, max_length=20)
    fiscal_year: int = Field(primary_key=True)
    disponibelt_ore: int = _big()
    overcommitted: bool = False
    overspent: bool = False
    overslagsbevilgning: bool = False
    kan_overfores: bool = False
    funding_posts: str = ""
    carry_rule: str | None = Field(default=None, max_length=40)


class BudsjettCellPost(Amounts, table=True):
    """One funding kap/post's share of a cell (core.post_view); a cell's rows add up to its budsjett_cell row."""

    __tablename__ = "budsjett_cell_post"
    line_id: str = Field(primary_key=True, max_length=64)
    ministry: str = Field(primary_key=True, max_length=8)
    phase: str = Field(primary_key=True, max_length=20)
    fiscal_year: int = Field(primary_key=True)
    kap: int = Field(primary_key=True)  # 0 with post 0: money booked under no kap/post (core.NO_POST)
    post: int = Field(primary_key=True)
    disponibelt_ore: int = _big()
    overslagsbevilgning: bool = False
    kan_overfores: bool = False
    carry_rule: str | None = Field(default=None, max_length=40)


class BudsjettLine(SQLModel, table=True):
    __tablename__ = "budsjett_line"
    line_id: str = Field(primary_key=True, max_length=64)
    events: int = 0
    last_event_time: datetime | None = None
    updated_at: datetime | None = None
    closed_years: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON: year -> closing


class BudsjettFlag(Amounts, table=True):
    __tablename__ = "budsjett_flag"
    event_id: str = Field(primary_key=True, max_length=160)
    ministry: str = Field(primary_key=True, max_length=8)
    phase: str = Field(primary_key=True, max_length=20)
    fiscal_year: int = Field(primary_key=True)
    flag: str = Field(primary_key=True, max_length=20)
    line_id: str = Field(index=True, max_length=64)
    raised: bool
    time: datetime
    disponibelt_ore: int = _big()


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything stored is UTC.
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else core.rfc3339(_utc(moment))


def _cell_record(row: Any) -> dict[str, Any]:
    """A budsjett_cell row as the core's cell record."""
    return {**{name: row[name] for name in core.AMOUNT_FIELDS}, "overcommitted": bool(row["overcommitted"]),
            "overspent": bool(row["overspent"]), "funding_posts": row["funding_posts"].split(),
            "overslagsbevilgning": bool(row["overslagsbevilgning"]), "kan_overfores": bool(row["kan_overfores"]),
            "carry_rule": row["carry_rule"], "posts": {}}


POST_RECORD_COLUMNS = (*core.AMOUNT_FIELDS, "carry_rule", "overslagsbevilgning", "kan_overfores")


def _post_record(row: Any) -> dict[str, Any]:
    """The post_* columns of a budsjett_cell_post row (joined under a cell) as the core's per-post record."""
    record = {name: row[f"post_{name}"] for name in POST_RECORD_COLUMNS}
    return {**record, "overslagsbevilgning": bool(record["overslagsbevilgning"]),
            "kan_overfores": bool(record["kan_overfores"])}


def _corrects_id(message: core.Message) -> str | None:
    """The id a korrigert corrects (None for any other message), without pydantic's slow miss on other kinds."""
    data = getattr(message, "data", None)
    return data.corrects_id if data is not None and "corrects_id" in type(data).model_fields else None


def _column_names(model: Any) -> tuple[str, ...]:
    return tuple(column.name for column in model.__table__.columns)


EVENT_COLUMNS = _column_names(BudsjettEvent)
EFFECT_COLUMNS = _column_names(BudsjettEffect)
FLAG_COLUMNS = _column_names(BudsjettFlag)
CELL_COLUMNS = _column_names(BudsjettCell)
CELL_POST_COLUMNS = _column_names(BudsjettCellPost)
LINE_COLUMNS = _column_names(BudsjettLine)
# A row dict -> its tuple in column order (C speed: the live worker builds a few rows per event).
EVENT_ROW, EFFECT_ROW, FLAG_ROW, CELL_ROW, CELL_POST_ROW, LINE_ROW = (
    itemgetter(*columns) for columns in (EVENT_COLUMNS, EFFECT_COLUMNS, FLAG_COLUMNS, CELL_COLUMNS, CELL_POST_COLUMNS,
                                         LINE_COLUMNS))
_COLUMNS = {BudsjettEvent: EVENT_COLUMNS, BudsjettEffect: EFFECT_COLUMNS, BudsjettFlag: FLAG_COLUMNS,
            BudsjettCell: CELL_COLUMNS, BudsjettCellPost: CELL_POST_COLUMNS, BudsjettLine: LINE_COLUMNS}


class Batch:
    """Rows waiting to be written in one transaction, as tuples in their table's column order.

    The tuples go to the driver as they are (`ReadModel.write`): SQLAlchemy's per-row parameter
    processing cost more than the ledger rules (~15 % of the live worker's samples). Times are
    bound once, here, by the read model's own `bind_time` (for SQLite the text sqlite3 would store).
    Get one from `ReadModel.new_batch()`.
    """

    def __init__(self, bind_time: Callable[[datetime | None], Any]):
        self.bind_time = bind_time
        self.recorded_at = bind_time(datetime.now(timezone.utc))
        self.events: list[tuple] = []
        self.effects: list[tuple] = []
        self.flags: list[tuple] = []
        self.corrections: dict[str, str] = {}  # corrected id -> correcting id
        self.lines: dict[str, dict] = {}  # latest snapshot per line
        # Per line from `add`: the cells its events changed, the only cell rows to upsert (the table
        # holds the others already). A line given whole by `snapshot` writes every cell.
        self.changed_cells: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self.events) + len(self.lines)

    def add(self, outcome: core.Outcome, message: core.Message, partition: int, offset: int,
            raw: bytes | None = None) -> None:
        """Queue what an applied event changes (pure: builds rows only)."""
        time = self.bind_time(message.time)
        payload = raw.decode("utf-8", "replace") if raw is not None else json.dumps(message.to_wire())
        corrects_id = _corrects_id(message)
        event_row = {"event_id": message.id, "line_id": outcome.line_id, "kind": message.kind,
                     "source_ministry": message.source_ministry,
                     "fiscal_year": core.event_fiscal_year(message, outcome.effect), "time": time, "partition": partition,
                     "kafka_offset": offset, "corrects_id": corrects_id, "corrected_by": None,
                     "payload": payload, "recorded_at": self.recorded_at}
        self.events.append(EVENT_ROW(event_row))
        deltas = core.effect_post_deltas(outcome.effect)
        for seq, ((ministry, phase, year, post), amounts) in enumerate(sorted(deltas.items())):
            kap, number = core.split_post_key(post)
            amounts.update(event_id=message.id, seq=seq, line_id=outcome.line_id, ministry=ministry, phase=phase,
                           fiscal_year=year, kap=kap, post=number, time=time)
            self.effects.append(EFFECT_ROW(amounts))
        for flag in outcome.flags:
            self.flags.append(FLAG_ROW({**flag, "time": time}))
        if corrects_id:
            self.corrections[corrects_id] = message.id
        if outcome.line is not None:
            self.lines[outcome.line_id] = outcome.line
            self.changed_cells.setdefault(outcome.line_id, set()).update(
                core.cell_key(*cell) for cell in outcome.touched)

    def snapshot(self, line: dict[str, Any]) -> None:
        """Queue a whole line (every cell), e.g. at the end of a rebuild."""
        self.lines[line["line_id"]] = line
        self.changed_cells.pop(line["line_id"], None)

    def snapshot_rows(self) -> tuple[list[tuple], list[tuple]]:
        """(line rows, cell rows) of the lines' latest snapshots."""
        line_rows, cell_rows = [], []
        for line_id, line in self.lines.items():
            row = {"line_id": line_id, "events": line["events"],
                   "last_event_time": self.bind_time(_parse_time(line["last_event_time"])),
                   "updated_at": self.bind_time(_parse_time(line["updated_at"])),
                   "closed_years": json.dumps(line.get("closed_years", {}), sort_keys=True)}
            line_rows.append(LINE_ROW(row))
            changed = self.changed_cells.get(line_id)
            for key, cell in line["cells"].items():
                if changed is not None and key not in changed:
                    continue
                ministry, phase, year = core.split_cell_key(key)
                row = {"line_id": line_id, "ministry": ministry, "phase": phase, "fiscal_year": year,
                       **{n: cell[n] for n in core.AMOUNT_FIELDS}, "disponibelt_ore": core.disponibelt(cell),
                       "overcommitted": cell["overcommitted"], "overspent": cell["overspent"],
                       "overslagsbevilgning": cell["overslagsbevilgning"], "kan_overfores": cell["kan_overfores"],
                       "funding_posts": " ".join(cell["funding_posts"]), "carry_rule": cell["carry_rule"]}
                cell_rows.append(CELL_ROW(row))
        return line_rows, cell_rows

    def post_rows(self) -> list[tuple]:
        """The per-post rows of the lines' latest snapshots (budsjett_cell_post): of the changed cells only,
        as snapshot_rows."""
        rows = []
        for line_id, line in self.lines.items():
            changed = self.changed_cells.get(line_id)
            for key, cell in line["cells"].items():
                if changed is not None and key not in changed:
                    continue
                ministry, phase, year = core.split_cell_key(key)
                for post, amounts in core.cell_posts(cell).items():
                    kap, number = core.split_post_key(post)
                    # core.post_view's fields, and the post's carry terms
                    row = {**amounts, "line_id": line_id, "ministry": ministry, "phase": phase, "fiscal_year": year,
                           "kap": kap, "post": number, "disponibelt_ore": core.disponibelt(amounts),
                           "carry_rule": amounts.get("carry_rule")}
                    rows.append(CELL_POST_ROW(row))
        return rows


def _time_binder(dialect: Any) -> Callable[[datetime | None], Any]:
    """The column type's own binding of a datetime (aware, in UTC); for SQLite also turned into its text
    here, as sqlite3's default adapter would (`isoformat(" ")`), so an event's time is formatted once
    for its event and effect rows, and a batch's `recorded_at` once per batch, not once per row."""
    bind = BudsjettEvent.__table__.c.time.type.bind_processor(dialect) or (lambda v: v)
    if dialect.name != "sqlite":
        return bind  # psycopg2 takes datetimes
    return lambda value: None if value is None else bind(value).isoformat(" ")


class ReadModel:
    def __init__(self, url: str, sqlite_cache_mib: int | None = None, rebuild: bool = False):
        """`rebuild`: a bulk rebuild into a fresh database (replay), whose commits need not survive a power cut
        (a rebuild cut short is run again), so SQLite skips its fsyncs."""
        self.url = url
        self.engine = make_engine(url)  # SQLite in WAL mode: HTTP reads do not block the batch writer
        self.dialect = self.engine.dialect.name
        if (sqlite_cache_mib or rebuild) and self.dialect == "sqlite":
            @event.listens_for(self.engine, "connect")
            def _cache(dbapi_connection, _record) -> None:
                if sqlite_cache_mib:
                    # Random event ids land all over the primary-key B-tree: a bulk rebuild keeps it in memory.
                    dbapi_connection.execute(f"PRAGMA cache_size=-{int(sqlite_cache_mib) * 1024}")
                if rebuild:
                    dbapi_connection.execute("PRAGMA synchronous=OFF")
                    dbapi_connection.execute("PRAGMA temp_store=MEMORY")
        create_tables(self.engine, [m.__table__ for m in _TABLES])
        self._refuse_an_older_layout()
        self.bind_time = _time_binder(self.engine.dialect)
        self._insert_sql = {
            model: self._values_sql(model, "ON CONFLICT DO NOTHING") for model in (BudsjettEvent, BudsjettEffect,
                                                                                    BudsjettFlag)}
        for model, keys in ((BudsjettLine, ("line_id",)), (BudsjettCell, ("line_id", "ministry", "phase", "fiscal_year")),
                            (BudsjettCellPost, ("line_id", "ministry", "phase", "fiscal_year", "kap", "post"))):
            updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[model] if c not in keys)
            self._insert_sql[model] = self._values_sql(model, f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}")
        mark = "%s" if self.dialect == "postgresql" else "?"
        self._correction_sql = f"UPDATE {BudsjettEvent.__tablename__} SET corrected_by = {mark} WHERE event_id = {mark}"

    def _refuse_an_older_layout(self) -> None:
        """Tables from before cells had a fiscal year cannot be written: say so in one line, at start."""
        present = {column["name"] for column in inspect(self.engine).get_columns(BudsjettCell.__tablename__)}
        effect_columns = {column["name"] for column in inspect(self.engine).get_columns(BudsjettEffect.__tablename__)}
        if not {"fiscal_year", "carry_rule"} <= present or not {"kap", "post"} <= effect_columns:
            raise RuntimeError(f"the budsjett read model at {self.engine.url.render_as_string()} has tables from "
                               f"before cells had a fiscal year, year-end figures and amounts per kap/post: rebuild "
                               f"it into a fresh database (`reformspor replay --db <new url>`) or drop its budsjett_* "
                               f"tables")

    def _values_sql(self, model: Any, conflict: str) -> str:
        """INSERT … VALUES <rows> <conflict>: psycopg2's execute_values fills one %s with many rows."""
        columns = _COLUMNS[model]
        values = "%s" if self.dialect == "postgresql" else f"({', '.join('?' * len(columns))})"
        return f"INSERT INTO {model.__tablename__} ({', '.join(columns)}) VALUES {values} {conflict}"

    def close(self) -> None:
        self.engine.dispose()

    def new_batch(self) -> Batch:
        return Batch(self.bind_time)

    def _insert_rows(self, connection: Any, model: Any, rows: list[tuple]) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            from psycopg2.extras import execute_values  # many rows per statement, not a round trip per row

            with connection.connection.cursor() as cursor:
                execute_values(cursor, self._insert_sql[model], rows, page_size=1000)
        else:
            connection.exec_driver_sql(self._insert_sql[model], rows)

    def write(self, batch: Batch) -> None:
        """Write a batch in one transaction; idempotent (duplicates by key are ignored, snapshots upserted)."""
        line_rows, cell_rows = batch.snapshot_rows()
        with self.engine.begin() as connection:
            self._insert_rows(connection, BudsjettEvent, batch.events)
            self._insert_rows(connection, BudsjettEffect, batch.effects)
            self._insert_rows(connection, BudsjettFlag, batch.flags)
            if batch.corrections:
                connection.exec_driver_sql(self._correction_sql,
                                           [(by, corrected) for corrected, by in batch.corrections.items()])
            self._insert_rows(connection, BudsjettLine, line_rows)
            self._insert_rows(connection, BudsjettCell, cell_rows)
            self._insert_rows(connection, BudsjettCellPost, batch.post_rows())

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
                {"ministry": effect.ministry, "phase": effect.phase, "fiscal_year": effect.fiscal_year,
                 "kap": effect.kap, "post": effect.post, **{n: getattr(effect, n) for n in core.AMOUNT_FIELDS}})
        return [{"event_id": r.event_id, "kind": r.kind, "source_ministry": r.source_ministry,
                 "fiscal_year": r.fiscal_year, "time": core.rfc3339(_utc(r.time)), "partition": r.partition, "offset": r.kafka_offset,
                 "corrects_id": r.corrects_id, "corrected_by": r.corrected_by,
                 "event": json.loads(r.payload), "deltas": by_event.get(r.event_id, [])} for r in rows]

    def cells_as_of(self, line_id: str, as_of: datetime, fiscal_year: int | None = None) -> list[dict[str, Any]]:
        """Totals per cell (of `fiscal_year`, or every year) from every delta with event time at or before `as_of`."""
        return self.lines_as_of(as_of, fiscal_year, line_id).get(line_id, [])

    def lines_as_of(self, as_of: datetime, fiscal_year: int | None = None,
                    line_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """cells_as_of for every line (or one) in one statement: line id -> its cells, for lines with a delta by then."""
        table = BudsjettEffect.__table__.c
        cell_columns = (table.line_id, table.fiscal_year, table.ministry, table.phase)
        query = (select(*cell_columns, *[func.sum(table[n]) for n in core.AMOUNT_FIELDS])
                 .where(table.time <= as_of.astimezone(timezone.utc))
                 .group_by(*cell_columns).order_by(*cell_columns))
        if line_id is not None:
            query = query.where(table.line_id == line_id)
        if fiscal_year is not None:
            query = query.where(table.fiscal_year == fiscal_year)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        lines: dict[str, list[dict[str, Any]]] = {}
        for line, year, ministry, phase, *sums in rows:
            cell = dict(zip(core.AMOUNT_FIELDS, (int(s or 0) for s in sums)))
            lines.setdefault(line, []).append(core.cell_view(ministry, phase, year, cell))
        return lines

    def events_as_of(self, as_of: datetime, line_id: str | None = None) -> dict[str, tuple[int, str]]:
        """Per line (or one): how many of its events have a time at or before `as_of`, and the last one's time."""
        table = BudsjettEvent.__table__.c
        query = (select(table.line_id, func.count(), func.max(table.time))
                 .where(table.time <= as_of.astimezone(timezone.utc)).group_by(table.line_id))
        if line_id is not None:
            query = query.where(table.line_id == line_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return {line: (count, _rfc3339(last)) for line, count, last in rows}

    def posts_as_of(self, line_id: str, as_of: datetime, fiscal_year: int | None = None) -> list[dict[str, Any]]:
        """Per-post rows (core.post_view, without carry_rule) from every delta at or before `as_of`."""
        table = BudsjettEffect.__table__.c
        keys = (table.fiscal_year, table.ministry, table.phase, table.kap, table.post)
        query = (select(*keys, *[func.sum(table[n]) for n in core.AMOUNT_FIELDS])
                 .where(table.line_id == line_id, table.time <= as_of.astimezone(timezone.utc))
                 .group_by(*keys).order_by(*keys))
        if fiscal_year is not None:
            query = query.where(table.fiscal_year == fiscal_year)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [core.post_view(ministry, phase, year, core.post_key(kap, post),
                               dict(zip(core.AMOUNT_FIELDS, (int(s or 0) for s in sums))))
                for year, ministry, phase, kap, post, *sums in rows]

    def lines(self, line_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Line records in the ledger core's shape (cells keyed "ministry|phase", each with its posts), from the
        latest snapshots.

        One statement (lines joined with their cells and the cells' posts), so a line, its cells and their posts
        come from one commit and the posts add up to the cells.
        """
        line, cell, post = BudsjettLine.__table__.c, BudsjettCell.__table__.c, BudsjettCellPost.__table__.c
        post_columns = [post[name].label(f"post_{name}") for name in ("kap", "post", *POST_RECORD_COLUMNS)]
        cell_key = ("line_id", "ministry", "phase", "fiscal_year")
        joined = (BudsjettLine.__table__
                  .outerjoin(BudsjettCell.__table__, line.line_id == cell.line_id)
                  .outerjoin(BudsjettCellPost.__table__, and_(*(cell[k] == post[k] for k in cell_key))))
        query = (select(line.line_id, line.events, line.last_event_time, line.updated_at, line.closed_years,
                        *[c for c in BudsjettCell.__table__.columns if c.name != "line_id"], *post_columns)
                 .select_from(joined)
                 .order_by(line.line_id, cell.fiscal_year, cell.ministry, cell.phase, post.kap, post.post))
        if line_id is not None:
            query = query.where(line.line_id == line_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        lines: dict[str, dict[str, Any]] = {}
        for row in rows:
            record = lines.get(row["line_id"])
            if record is None:
                record = lines[row["line_id"]] = {
                    **core.new_line(row["line_id"]), "events": row["events"],
                    "last_event_time": _rfc3339(row["last_event_time"]), "updated_at": _rfc3339(row["updated_at"]),
                    "closed_years": json.loads(row["closed_years"])}
            if row["ministry"] is None:
                continue
            key = core.cell_key(row["ministry"], row["phase"], row["fiscal_year"])
            cell_record = record["cells"].setdefault(key, _cell_record(row))
            if row["post_kap"] is not None:
                cell_record["posts"][core.post_key(row["post_kap"], row["post_post"])] = _post_record(row)
        return lines

    def line_count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(BudsjettLine.__table__)).scalar_one()

    def line_partitions(self) -> dict[str, int]:
        """The input partition of every line with an event (a line's events share one partition)."""
        table = BudsjettEvent.__table__.c
        with self.engine.connect() as connection:
            rows = connection.execute(select(table.line_id, func.min(table.partition)).group_by(table.line_id)).all()
        return {line_id: partition for line_id, partition in rows}

    def cells(self, line_id: str | None = None) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            query = select(BudsjettCell).order_by(BudsjettCell.line_id, BudsjettCell.fiscal_year, BudsjettCell.ministry,
                                                  BudsjettCell.phase)
            if line_id:
                query = query.where(BudsjettCell.line_id == line_id)
            return [row.model_dump() for row in session.execute(query).scalars().all()]

    def flags(self, line_id: str) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            rows = session.execute(select(BudsjettFlag).where(BudsjettFlag.line_id == line_id)
                                   .order_by(BudsjettFlag.time)).scalars().all()
            return [row.model_dump() for row in rows]

    # --- one event, for the publisher (GET /v1/events/{id}) ---------------------------------

    def event_outcome(self, event_id: str) -> dict[str, Any] | None:
        """Where an applied event landed (line, type, fiscal year, when), or None when it is not applied here."""
        with Session(self.engine) as session:
            row = session.get(BudsjettEvent, event_id)
            if row is None:
                return None
            return {"id": row.event_id, "status": "applied", "line_id": row.line_id, "type": row.kind,
                    "ministry": row.source_ministry, "fiscal_year": row.fiscal_year,
                    "corrected_by": row.corrected_by, "applied_at": _rfc3339(_utc(row.recorded_at))}


_TABLES = (BudsjettEvent, BudsjettEffect, BudsjettCell, BudsjettCellPost, BudsjettLine, BudsjettFlag)
