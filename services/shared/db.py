"""One way to open a read model's database: SQLite by default, PostgreSQL by URL."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlmodel import create_engine


def make_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite the file's folder is created and WAL is on.

    WAL lets HTTP reads run while the service writes, and costs one fsync per
    commit instead of a rollback journal's several. synchronous stays FULL, so
    a committed row is durable.
    """
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _wal(dbapi_connection, _record) -> None:
        # Switching a new file to WAL needs a moment of exclusive access, and SQLite
        # answers "locked" at once (no busy wait) when another worker is doing the same.
        for attempt in range(100):
            try:
                dbapi_connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or attempt == 99:
                    raise
                time.sleep(0.05)

    return engine


def create_tables(engine: Engine, tables: list) -> None:
    """Create missing tables; safe when several workers of a service start at once.

    A table's check-then-create can lose to another worker's create in
    between; the loser sees "already exists", which means the table is there.
    """
    for table in tables:
        try:
            table.create(engine, checkfirst=True)
        except (OperationalError, ProgrammingError, IntegrityError) as error:
            if "already exists" not in str(error):
                raise
