"""Rebuild budsjett's state and read model from the Kafka log (the log of record).

Reads every partition of the budget topic from offset 0 up to the end offsets
seen at start (read_committed, as the live worker reads: a cross-line credit of
a transaction that a crashed worker never committed is not in the log), through
the same `core.process` as the live worker with the same offsets and the same
state scope: one store per line, as the worker's state lives under the message
key. So replay makes the live worker's decisions. Cross-line credits are already
in the log (on the credited line's partition), so they are applied and nothing
is sent.

Partitions are independent (every record `core.process` reads for an event lives
under its line, and a line's events share a partition), so replay runs one
process per partition (at most os.cpu_count() at a time) and merges the per-line
results; one process gives the same read model.

Replay does only what the read model needs: no totals or flag messages, and
the audit rows go to the database with one `executemany` per table and chunk
of 20 k events, without fsyncs (a rebuild cut short is simply run again) and
with the garbage collector off (the stores hold no cycles). Each process says
where its time went: the rules, the read model, the rest (waiting for Kafka).
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from services.budsjett import core
from services.budsjett.catalogue import Catalogue, read_catalogue
from services.budsjett.readmodel import Batch, ReadModel
from services.shared.config import Settings
from services.shared.contract import ContractError
from services.shared.kafka_security import consumer_group
from services.shared.streaming import connection_config

SERVICE = "budsjett"
CHUNK_EVENTS = 20_000  # events per read-model transaction (bigger: more memory, no faster)
FETCH_RECORDS = 10_000
# Set in the parent before the worker processes fork (a Catalogue need not be picklable).
_CATALOGUE: Catalogue | None = None


@dataclass
class PartitionResult:
    partition: int
    seen: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)  # line_id -> line record


class LineStores:
    """One store per line, as the live worker's state is scoped to the message key.

    Id and commitment records are kept as JSON text (`core.CompactStore`): a quarter of the memory.
    """

    def __init__(self) -> None:
        self.stores: dict[str, core.CompactStore] = {}

    def of(self, line_id: str) -> core.CompactStore:
        store = self.stores.get(line_id)
        if store is None:
            store = self.stores[line_id] = core.CompactStore({})
        return store

    def lines(self) -> dict[str, dict[str, Any]]:
        return {line_id: store.get(f"line:{line_id}") for line_id, store in self.stores.items()
                if store.get(f"line:{line_id}") is not None}


def _apply_records(records, partition: int, stores: LineStores, batch: Batch, result: PartitionResult,
                   catalogue: Catalogue | None) -> None:
    counts = result.counts
    for offset, key, value in records:
        result.seen += 1
        try:
            message = core.parse_trusted(value)  # as the live worker reads it
        except ContractError:
            counts["invalid"] = counts.get("invalid", 0) + 1
            continue
        if key is None or key.decode("utf-8", "replace") != message.key:
            counts["key_mismatch"] = counts.get("key_mismatch", 0) + 1
            continue
        outcome = core.process(stores.of(message.key), offset, message, catalogue)
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        if outcome.status in ("applied", "redelivered") and outcome.effect:
            batch.add(outcome, message, partition, offset, value)


def _read_partition(settings: Settings, partition: int, end_offset: int, on_records) -> None:
    """Feed (offset, key, value) of one partition, offset 0 up to end_offset, to on_records in fetch batches."""
    # As budsjett's principal (the ACLs let it read its input), in a group under its prefix; nothing is committed.
    consumer = Consumer({**connection_config(settings, SERVICE).as_librdkafka_dict(),
                         "group.id": f"{consumer_group(settings, SERVICE)}-replay",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "fetch.max.bytes": 32 * 1024 * 1024, "max.partition.fetch.bytes": 8 * 1024 * 1024})
    tp = TopicPartition(settings.topics.budget, partition, OFFSET_BEGINNING)
    try:
        consumer.assign([tp])
        position = 0
        while position < end_offset:
            fetched = consumer.consume(FETCH_RECORDS, timeout=1.0)
            for record in fetched:
                if record.error() is not None:
                    raise RuntimeError(f"reading partition {partition}: {record.error()}")
            records = [(r.offset(), r.key(), r.value()) for r in fetched if r.offset() < end_offset]
            if records:
                on_records(records)
            if fetched:
                position = fetched[-1].offset() + 1
            else:
                # Transaction markers and aborted records take offsets but are never handed out.
                position = max(position, consumer.position([tp])[0].offset)
    finally:
        consumer.close()


def replay_partitions(settings: Settings, partitions: list[tuple[int, int]], db_url: str,
                      catalogue: Catalogue | None, progress: Callable[[str], None] | None = None) -> PartitionResult:
    """Replay the given (partition, end_offset)s one after another; rows into db_url."""
    stores = LineStores()
    model = ReadModel(db_url, sqlite_cache_mib=256, rebuild=True)
    batch = model.new_batch()
    result = PartitionResult(partition=partitions[0][0] if len(partitions) == 1 else -1)
    timing = RebuildTiming()
    # The stores only grow and hold no reference cycles (a collection after 50 k events finds none), so the
    # collector would only rescan them as they grow; whatever garbage has cycles waits for the end.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for partition, end_offset in partitions:
            def on_records(records, partition=partition):
                nonlocal batch
                with timing.rules():
                    _apply_records(records, partition, stores, batch, result, catalogue)
                if len(batch.events) >= CHUNK_EVENTS:
                    with timing.read_model():
                        model.write(batch)
                    batch = model.new_batch()
                    if progress:
                        progress(f"  partition {partition}: {records[-1][0] + 1}/{end_offset} messages")

            if end_offset > 0:
                _read_partition(settings, partition, end_offset, on_records)
        result.lines = stores.lines()
        for line in result.lines.values():
            batch.snapshot(line)
        with timing.read_model():
            model.write(batch)
    finally:
        model.close()
        if collecting:
            gc.enable()
    if progress:
        progress(f"  partition{'s' if len(partitions) > 1 else ''} {', '.join(str(p) for p, _ in partitions)}: "
                 f"{result.seen} messages; {timing.summary()}")
    return result


class RebuildTiming:
    """Where a replay process's time went: the rules (parse, process, rows; CPU and wall seconds, apart when
    the machine is busy), writing the read model (waits for the other processes' writes) and the rest
    (mostly waiting for Kafka), so a slow replay says which."""

    def __init__(self) -> None:
        self.rules_cpu_s = 0.0
        self.rules_s = 0.0
        self.read_model_s = 0.0
        self.started = time.perf_counter()

    @contextmanager
    def rules(self) -> Iterator[None]:
        started_cpu_s, started = time.process_time(), time.perf_counter()
        yield
        self.rules_cpu_s += time.process_time() - started_cpu_s
        self.rules_s += time.perf_counter() - started

    @contextmanager
    def read_model(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.read_model_s += time.perf_counter() - started

    def summary(self) -> str:
        return (f"rules {self.rules_cpu_s:.1f} CPU s in {self.rules_s:.1f} s, read model {self.read_model_s:.1f} s, "
                f"{time.perf_counter() - self.started:.1f} s in all")


def _replay_one_partition(args: tuple) -> PartitionResult:
    settings, partition, end_offset, db_url = args
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731 - a worker process's progress
    return replay_partitions(settings, [(partition, end_offset)], db_url, _CATALOGUE, progress=say)


def _end_offsets(settings: Settings) -> dict[int, int]:
    """Per partition, the last stable offset: the end as a read_committed reader sees it."""
    admin = AdminClient(connection_config(settings, SERVICE).as_librdkafka_dict())
    topic = settings.topics.budget
    described = admin.list_topics(topic, timeout=30).topics[topic]
    if described.error is not None:
        raise RuntimeError(f"cannot read {topic}: {described.error}")
    wanted = {TopicPartition(topic, p): OffsetSpec.latest() for p in sorted(described.partitions)}
    futures = admin.list_offsets(wanted, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=30)
    return {tp.partition: future.result().offset for tp, future in futures.items()}


def _live_catalogue(settings: Settings) -> Catalogue:
    """Every year's catalogue as the catalogue topic holds it, read as budsjett (the live worker's source)."""
    return read_catalogue(settings, SERVICE)


def replay(settings: Settings, db_url: str, progress: Callable[[str], None] = print,
           catalogue: Catalogue | None = None, workers: int | None = None) -> dict[str, Any]:
    """Rebuild the read model in db_url; `workers` = processes (default: min(partitions, CPUs); 1 = in-process)."""
    global _CATALOGUE
    catalogue = _live_catalogue(settings) if catalogue is None else catalogue
    ReadModel(db_url).close()  # create the tables once, before workers race to
    ends = _end_offsets(settings)
    busy = [(p, end) for p, end in sorted(ends.items()) if end > 0]
    workers = min(workers or os.cpu_count() or 1, max(len(busy), 1))
    progress(f"Replaying {sum(ends.values())} messages from {settings.topics.budget} ({len(ends)} partitions, "
             f"{workers} process{'es' if workers > 1 else ''}) into {db_url}")
    if workers > 1:
        _CATALOGUE = catalogue
        # Biggest partitions first, so the last one to finish is a small one.
        jobs = [(settings, p, end, db_url) for p, end in sorted(busy, key=lambda j: -j[1])]
        # A fresh process per partition: a finished partition's stores leave with their process, not in its heap.
        with multiprocessing.get_context("fork").Pool(workers, maxtasksperchild=1) as pool:
            results = pool.map(_replay_one_partition, jobs, chunksize=1)
        _CATALOGUE = None
    else:
        results = [replay_partitions(settings, busy, db_url, catalogue, progress=progress)]
    lines: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for result in results:
        lines.update(result.lines)
        for name, count in result.counts.items():
            counts[name] = counts.get(name, 0) + count
    seen = sum(result.seen for result in results)
    progress(f"Done: {seen} messages; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return {"lines": summarize(lines), "counts": counts, "seen": seen, "workers": workers}


def summarize(lines: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per line: totals, per-ministry and per-year roll-ups and raised flags (what `reformspor replay` prints)."""
    summary = []
    for line_id, line in sorted(lines.items()):
        cells = core.line_cells(line)
        groups = core.rollups(cells)
        summary.append({"line_id": line_id, "totals": core.sum_amounts(cells),
                        "by_ministry": groups["by_ministry"], "by_fiscal_year": groups["by_fiscal_year"],
                        "flags": [{"ministry": core.split_cell_key(key)[0], "fiscal_year": core.split_cell_key(key)[2],
                                   "flag": f} for key, c in line["cells"].items() for f in core.FLAGS if c[f]]})
    return summary
