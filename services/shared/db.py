"""One way to open a read model's database: SQLite by default, PostgreSQL by URL."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
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
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    return engine
