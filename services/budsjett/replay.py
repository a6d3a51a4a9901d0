"""Rebuild budsjett's state and read model from the Kafka log (the log of record).

Reads every partition of the budget topic from offset 0 up to the end offsets
seen at start, through the same `core.process` as the live worker (same
offsets, so the same decisions), into a dict store and a fresh read model.
Cross-line credits are already in the log (on the credited line's partition),
so they are applied and nothing is sent.

Partitions are independent: every event of a line is on its line's partition,
and so is every record `core.process` reads for it (line, commitments, the id
of a corrected event). So replay runs one process per partition (at most
os.cpu_count() at a time), each with its own store, and merges the per-line
results. The one thing that is not partition-local is an event id reused on a
line of another partition (a duplicate or conflict across lines); replay
checks for it after the parallel run and, if it finds one, rebuilds again in
one process with one store, as the single live worker would see it.

Replay does only what the read model needs: no totals or flag messages, and
the audit rows go to the database with one `executemany` per table and chunk.
"""
from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from services.budsjett import core
from services.budsjett.catalogue import Catalogue
from services.budsjett.readmodel import Batch, BudsjettEffect, BudsjettEvent, BudsjettFlag, ReadModel
from services.shared.config import Settings
from services.shared.contract import ContractError

CHUNK_EVENTS = 20_000  # events per read-model transaction
FETCH_RECORDS = 5_000
# Set in the parent before the worker processes fork (a Catalogue need not be picklable).
_CATALOGUE: Catalogue | None = None


@dataclass
class PartitionResult:
    partition: int
    seen: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)  # line_id -> line record
    ids: set[str] = field(default_factory=set)  # every event id read (for the cross-partition check)


def _apply_records(records, partition: int, store: dict[str, Any], batch: Batch, result: PartitionResult,
                   catalogue: Catalogue | None) -> None:
    counts = result.counts
    compact = core.CompactStore(store)
    for offset, key, value in records:
        result.seen += 1
        try:
            message = core.parse_message(value)
        except ContractError:
            counts["invalid"] = counts.get("invalid", 0) + 1
            continue
        result.ids.add(message.id)
        if key is not None and key.decode("utf-8", "replace") != message.key:
            counts["key_mismatch"] = counts.get("key_mismatch", 0) + 1
            continue
        outcome = core.process(compact, offset, message, catalogue)
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        if outcome.status in ("applied", "redelivered") and outcome.effect:
            batch.add(outcome, message, partition, offset, value)


async def _read_partition(bootstrap: str, topic: str, partition: int, end_offset: int, on_records) -> None:
    """Feed (offset, key, value) of one partition, offset 0 up to end_offset, to on_records in fetch batches."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024,
                                fetch_max_bytes=32 * 1024 * 1024)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        position = 0
        while position < end_offset:
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=FETCH_RECORDS)
            records = [(r.offset, r.key, r.value) for r in batches.get(tp, ()) if r.offset < end_offset]
            if records:
                position = records[-1][0] + 1
                on_records(records)
            elif await consumer.position(tp) >= end_offset:
                break
    finally:
        await consumer.stop()


def replay_partitions(bootstrap: str, topic: str, partitions: list[tuple[int, int]], db_url: str,
                      catalogue: Catalogue | None, store: dict[str, Any] | None = None,
                      progress: Callable[[str], None] | None = None) -> PartitionResult:
    """Replay the given (partition, end_offset)s one after another into one store; rows into db_url."""
    store = {} if store is None else store
    model = ReadModel(db_url, sqlite_cache_mib=256)
    batch = model.new_batch()
    result = PartitionResult(partition=partitions[0][0] if len(partitions) == 1 else -1)
    try:
        for partition, end_offset in partitions:
            def on_records(records, partition=partition):
                nonlocal batch
                _apply_records(records, partition, store, batch, result, catalogue)
                if len(batch.events) >= CHUNK_EVENTS:
                    model.write(batch)
                    batch = model.new_batch()
                    # The store only grows and holds no cycles: stop the collector rescanning it (~10 %).
                    gc.freeze()
                    if progress:
                        progress(f"  partition {partition}: {records[-1][0] + 1}/{end_offset} messages")

            if end_offset > 0:
                asyncio.run(_read_partition(bootstrap, topic, partition, end_offset, on_records))
        result.lines = core.lines_in(store)
        batch.lines.update(result.lines)
        model.write(batch)
    finally:
        model.close()
    return result


def _replay_one_partition(args: tuple) -> PartitionResult:
    bootstrap, topic, partition, end_offset, db_url = args
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731 - a worker process's progress
    return replay_partitions(bootstrap, topic, [(partition, end_offset)], db_url, _CATALOGUE, progress=say)


def _end_offsets(settings: Settings) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, group_id=None)
    try:
        topic = settings.topics.budget
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def _clear(db_url: str) -> None:
    """Empty the rebuilt tables (before a single-process rebuild replaces a parallel one)."""
    from services.budsjett.readmodel import BudsjettCell, BudsjettLine

    model = ReadModel(db_url)
    try:
        with model.engine.begin() as connection:
            for table in (BudsjettEvent, BudsjettEffect, BudsjettFlag, BudsjettCell, BudsjettLine):
                connection.execute(table.__table__.delete())
    finally:
        model.close()


def replay(settings: Settings, db_url: str, progress: Callable[[str], None] = print,
           catalogue: Catalogue | None = None, workers: int | None = None) -> dict[str, Any]:
    """Rebuild the read model in db_url; `workers` = processes (default: min(partitions, CPUs); 1 = in-process)."""
    global _CATALOGUE
    if catalogue is None:
        try:
            live = ReadModel(settings.db_url("budsjett"))
            catalogue = Catalogue(live.load_catalogue())
            live.close()
        except Exception:  # noqa: BLE001 - no live read model: replay without catalogue checks
            catalogue = Catalogue()
    ReadModel(db_url).close()  # create the tables once, before workers race to
    ends = _end_offsets(settings)
    topic = settings.topics.budget
    busy = [(p, end) for p, end in sorted(ends.items()) if end > 0]
    workers = min(workers or os.cpu_count() or 1, max(len(busy), 1))
    progress(f"Replaying {sum(ends.values())} messages from {topic} ({len(ends)} partitions, "
             f"{workers} process{'es' if workers > 1 else ''}) into {db_url}")
    fallback = False
    if workers > 1:
        _CATALOGUE = catalogue
        # Biggest partitions first, so the last one to finish is a small one.
        jobs = [(settings.kafka_bootstrap, topic, p, end, db_url) for p, end in sorted(busy, key=lambda j: -j[1])]
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_replay_one_partition, jobs, chunksize=1)
        _CATALOGUE = None
        seen_ids: set[str] = set()
        for result in results:
            if not seen_ids.isdisjoint(result.ids):
                fallback = True
                break
            seen_ids |= result.ids
        if fallback:
            progress("An event id occurs on more than one partition: rebuilding again in one process, "
                     "so the duplicate/conflict decision is the one a single live worker makes")
            _clear(db_url)
    if workers <= 1 or fallback:
        results = [replay_partitions(settings.kafka_bootstrap, topic, busy, db_url, catalogue, progress=progress)]
    lines: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for result in results:
        lines.update(result.lines)
        for name, count in result.counts.items():
            counts[name] = counts.get(name, 0) + count
    seen = sum(result.seen for result in results)
    progress(f"Done: {seen} messages; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return {"lines": summarize(lines), "counts": counts, "seen": seen, "workers": workers,
            "single_process_fallback": fallback}


def summarize(lines: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per line: totals, per-ministry roll-ups and raised flags (what `reformspor replay` prints)."""
    summary = []
    for line_id, line in sorted(lines.items()):
        cells = core.line_totals(line)["cells"]
        summary.append({"line_id": line_id, "totals": core.sum_amounts(cells),
                        "by_ministry": core.rollups(cells)["by_ministry"],
                        "flags": [{"ministry": key.split("|")[0], "flag": f} for key, c in line["cells"].items()
                                  for f in core.FLAGS if c[f]]})
    return summary
