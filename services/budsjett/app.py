"""The budsjett worker: a thin Quix Streams shell around the pure ledger core.

Per budget message (key line_id) the step parses it, applies it with `core.process`
on the line's state (Quix's RocksDB store, scoped to the message key, i.e. the line)
and says what to produce: cross-line credits back to the budget topic keyed by the
target line, flags to the notifications topic, and the line's newest totals to the
totals topic once per checkpoint, all inside the checkpoint's Kafka transaction. The read-model rows go
to a sink that Quix flushes at each checkpoint, before that transaction commits.
HTTP reads come from the read model.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from quixstreams import State, message_context
from quixstreams.sinks import BaseSink, BatchingSink, SinkBackpressureError, SinkBatch
from quixstreams.state.rocksdb import RocksDBOptions
from sqlalchemy.exc import OperationalError

from services.budsjett import core
from services.budsjett.catalogue import CatalogueHolder
from services.budsjett.http import LedgerRoutes
from services.budsjett.readmodel import Batch, ReadModel
from services.shared.config import Settings
from services.shared.contract import BUDGET_KINDS, ContractError
from services.shared.gauges import GaugeFamilies
from services.shared.jsonio import dumps_compact
from services.shared.logs import setup_logging
from services.shared.streaming import (
    DeadLetters,
    GroupMonitor,
    Record,
    Rejection,
    ServiceHttp,
    Snapshot,
    StateRecovery,
    input_topic,
    make_application,
    output_topic,
    route_outputs,
    run_service,
)

log = logging.getLogger(__name__)
SERVICE = "budsjett"
# A read model that cannot be written (database down or locked): Quix pauses the input and redoes
# the checkpoint after this long.
READ_MODEL_RETRY_S = 2.0
# RocksDB per input partition: Quix's defaults (64 MB x 3 memtables, a 1 GB block cache) let memory
# grow with the events applied until those fill. Id records are written once and rarely read back.
STATE_OPTIONS = RocksDBOptions(write_buffer_size=8 * 1024 * 1024, max_write_buffer_number=2,
                               block_cache_size=16 * 1024 * 1024)


class CheckpointLines(BaseSink):
    """Line records read or written in the current checkpoint, kept as the objects they are, and
    written to Quix's state once per line at the checkpoint's end.

    Quix's state gives every read as a fresh copy from JSON and serializes every write at once (a
    line with its cells and posts is ~10 KB of JSON, read and written on every event). Within one
    checkpoint the step is the line's only writer, and the core never changes a record it read (it
    copies on write), so the object written last is what the state must hold. Quix flushes its
    sinks, this one included, at the start of each commit, before its state transactions are
    prepared: `flush` then sets each line written in the checkpoint through the message's own
    `State` (public API), so the line joins the same changelog and Kafka transaction as the
    event's other records. A new checkpoint (Quix starts one after every commit, abort or
    backpressure) starts empty, as Quix's own transaction does. With no processing context
    (tests), nothing is kept and every write goes to the state at once.
    """

    def __init__(self, context: Any = None):
        super().__init__()
        self.context = context
        self.checkpoint: Any = None
        self.lines: dict[str, Any] = {}
        self.unwritten: dict[str, State] = {}  # line key -> the State (line-scoped) to write it through

    def current(self) -> dict[str, Any]:
        if self.context is None:
            return {}
        self.follow_checkpoint()
        return self.lines

    def follow_checkpoint(self) -> None:
        checkpoint = self.context.checkpoint
        if checkpoint is not self.checkpoint:
            self.checkpoint, self.lines, self.unwritten = checkpoint, {}, {}

    def defer(self, key: str, state: State) -> bool:
        """Whether the line under `key` is written at the checkpoint's end (only with a checkpoint to follow)."""
        if self.context is None:
            return False
        self.unwritten[key] = state
        return True

    def add(self, value: Any, key: Any, timestamp: int, headers: Any, topic: str, partition: int,
            offset: int) -> None:
        raise TypeError("CheckpointLines takes no outputs: the step writes lines through LineState")

    def flush(self) -> None:
        if self.context is None:
            return
        self.follow_checkpoint()  # never write a record of a checkpoint that is gone
        unwritten, self.unwritten = self.unwritten, {}
        for key, state in unwritten.items():
            state.set(key, self.lines[key])

    def on_paused(self) -> None:
        self.unwritten = {}  # the checkpoint is aborted: its state transaction with it


class LineState:
    """The core's Store over Quix's State: every key (line:, id:, c:) lives under the message's line."""

    def __init__(self, state: State, lines: CheckpointLines):
        self.state = state
        self.checkpoint_lines = lines
        self.lines = lines.current()  # this checkpoint's line records, by key

    def get(self, key: str, default: Any = None) -> Any:
        if not key.startswith("line:"):
            return self.state.get(key, default)
        line = self.lines.get(key)
        if line is None:
            line = self.state.get(key)
            if line is not None:
                self.lines[key] = line
        return default if line is None else line

    def __setitem__(self, key: str, value: Any) -> None:
        if not key.startswith("line:"):
            self.state.set(key, value)
            return
        self.lines[key] = value
        if not self.checkpoint_lines.defer(key, self.state):
            self.state.set(key, value)


class LineGauges:
    """Per line, ministry, phase and fiscal year gauges, set from the stream and, for lines not applied to
    since the start, from the read model; a lock keeps an older database value from overwriting a newer one.

    The fiscal_year label is bounded: a line's cells span the few years it is funded in.
    """

    def __init__(self, gauges: GaugeFamilies):
        cell_labels = ("line", "ministry", "phase", "fiscal_year")
        self.amounts = {
            name: gauges.gauge(f"reformspor_budsjett_{name}",
                               f"{name.removesuffix('_ore')} per line, ministry, phase and fiscal year, in øre",
                               cell_labels)
            for name in core.TOTAL_FIELDS
        }
        self.overcommitted = gauges.gauge("reformspor_budsjett_overcommitted",
                                          "1 when commitments plus payments exceed the money available", cell_labels)
        self.overspent = gauges.gauge("reformspor_budsjett_overspent",
                                      "1 when payments exceed the money available (not for overslagsbevilgning)",
                                      cell_labels)
        self.last_event = gauges.gauge("reformspor_budsjett_last_event_timestamp_seconds",
                                       "Event time of the newest event applied to a line", ("line",))
        self.shown: set[str] = set()
        self.lock = threading.Lock()

    def applied(self, line: dict[str, Any], cells: set[tuple[str, str, int]]) -> None:
        """At a checkpoint: the cells its events touched (every cell, the first time this worker shows the line)."""
        with self.lock:
            first = line["line_id"] not in self.shown
            self.shown.add(line["line_id"])
            self._set(line, None if first else cells)

    def loaded(self, line: dict[str, Any]) -> None:
        """A line read from the read model: shown only if the stream has not shown it already."""
        with self.lock:
            if line["line_id"] not in self.shown:
                self.shown.add(line["line_id"])
                self._set(line, None)

    def _set(self, line: dict[str, Any], cells: set[tuple[str, str, int]] | None) -> None:
        line_id = line["line_id"]
        # Only the touched cells' keys are built: walking every cell of the line per event cost more than the sets.
        shown = [core.split_cell_key(key) for key in line["cells"]] if cells is None else cells
        for ministry, phase, year in shown:
            cell = line["cells"][core.cell_key(ministry, phase, year)]
            labels = (line_id, ministry, phase, str(year))
            for name in core.AMOUNT_FIELDS:
                self.amounts[name].set(labels, cell[name])
            self.amounts["disponibelt_ore"].set(labels, core.disponibelt(cell))
            self.overcommitted.set(labels, 1 if cell["overcommitted"] else 0)
            self.overspent.set(labels, 1 if cell["overspent"] else 0)
        if line["last_event_time"]:
            moment = datetime.fromisoformat(line["last_event_time"].replace("Z", "+00:00"))
            self.last_event.set((line_id,), moment.timestamp())


@dataclass(frozen=True)
class Applied:
    """An applied event, for the read model (the sink knows its partition and offset)."""

    outcome: core.Outcome
    message: core.Message
    raw: bytes


class ReadModelSink(BatchingSink):
    """Writes a checkpoint's read-model rows, every partition's, in one database transaction.

    Quix calls `flush` before the checkpoint's Kafka transaction commits, so rows are never
    behind the committed state; the writes are idempotent (unique event id, snapshots
    upserted), so a checkpoint redone after a crash leaves the tables as they were.
    """

    def __init__(self, read_model: ReadModel, pending_gauge: Gauge):
        super().__init__()
        self.read_model = read_model
        self.pending_gauge = pending_gauge
        self.pending_rows = 0
        self.rows: Batch | None = None

    def add(self, value: Any, key: Any, timestamp: int, headers: Any, topic: str, partition: int,
            offset: int) -> None:
        super().add(value, key, timestamp, headers, topic, partition, offset)
        self.pending_rows += 1

    def write(self, batch: SinkBatch) -> None:
        """Collect one partition's rows; `flush` writes them all."""
        rows = self.read_model.new_batch() if self.rows is None else self.rows
        for item in batch:
            applied: Applied = item.value
            rows.add(applied.outcome, applied.message, batch.partition, item.offset, applied.raw)
        self.rows = rows

    def flush(self) -> None:
        self.pending_gauge.set(self.pending_rows)
        try:
            super().flush()
            if self.rows is not None:
                self.read_model.write(self.rows)
        except OperationalError as error:
            log.warning("read model write failed (%s); the checkpoint is redone in %.0f s",
                        str(error).splitlines()[0], READ_MODEL_RETRY_S)
            raise SinkBackpressureError(retry_after=READ_MODEL_RETRY_S) from None
        finally:
            self.rows = None
            self.pending_rows = 0
            self.pending_gauge.set(0)


class Ledger:
    """The step Quix calls for each budget message, and the metrics it keeps."""

    def __init__(self, settings: Settings, registry: CollectorRegistry, gauges: GaugeFamilies,
                 catalogue: CatalogueHolder, lines: CheckpointLines | None = None):
        self.topics = settings.topics
        self.checkpoint_lines = lines or CheckpointLines()
        self.catalogue = catalogue
        self.lines = LineGauges(gauges)
        # Per line: cells touched since its gauges were last set. Kept across an aborted checkpoint
        # (its snapshots are dropped): the redone one shows them, with at most a few cells extra.
        self.unshown_cells: dict[str, set[tuple[str, str, int]]] = {}
        self.events = Counter("reformspor_budsjett_events", "Budget events by type and outcome",
                              ["type", "outcome"], registry=registry)
        for kind in BUDGET_KINDS + (core.TRANSFER_KIND,):
            for outcome in ("applied", "duplicate", "conflict", "rejected", "redelivered"):
                self.events.labels(type=kind, outcome=outcome)

    def step(self, value: bytes, key: bytes | None, state: State) -> list[Any]:
        message = self.parse(value, key)
        store = LineState(state, self.checkpoint_lines)
        outcome = core.process(store, message_context().offset, message, self.catalogue.current,
                               now=datetime.now(timezone.utc))
        self.events.labels(type=message.kind, outcome=outcome.status).inc()
        if outcome.status in ("conflict", "rejected"):
            raise Rejection(outcome.reasons, outcome.status)
        if outcome.status == "duplicate":
            return []
        return self.outputs(message, outcome, value)

    def parse(self, value: bytes, key: bytes | None) -> core.Message:
        try:
            message = core.parse_trusted(value)
        except ContractError as error:
            self.events.labels(type="unknown", outcome="rejected").inc()
            raise Rejection([str(p) for p in error.problems], "invalid") from None
        if key is None or key.decode("utf-8", "replace") != message.key:
            # The line's state lives under its key, on its key's partition: a wrong key would split it.
            self.events.labels(type=message.kind, outcome="rejected").inc()
            raise Rejection([f"Kafka key {(key or b'')[:80]!r} is not the event's line_id {message.key!r}"],
                            "key_mismatch")
        return message

    def outputs(self, message: core.Message, outcome: core.Outcome, raw: bytes) -> list[Any]:
        line_key = message.key.encode()
        outputs: list[Any] = [Record(self.topics.budget, transfer.line_id.encode(), dumps_compact(transfer.to_wire()))
                              for transfer in outcome.sends]
        outputs += [Record(self.topics.notifications, line_key, dumps_compact(flag)) for flag in outcome.flags]
        line = outcome.line
        # milepael needs every line's newest totals, not each step: one snapshot per line and checkpoint.
        # The gauges follow the same way: the cells its events touched, set once when it is rendered.
        self.unshown_cells.setdefault(message.key, set()).update(outcome.touched)
        outputs.append(Snapshot(self.topics.totals, line_key, lambda: self.totals_at_checkpoint(line)))
        if outcome.effect:
            outputs.append(Applied(outcome, message, raw))
        return outputs

    def totals_at_checkpoint(self, line: dict[str, Any]) -> bytes:
        """A line's newest totals message, rendered at the checkpoint; its gauges are set then too."""
        self.lines.applied(line, self.unshown_cells.pop(line["line_id"], set()))
        return dumps_compact(core.line_totals(line))


# --- wiring -----------------------------------------------------------------------------------

def show_held_lines_forever(read_model: ReadModel, gauges: LineGauges, monitor: GroupMonitor,
                            stop: threading.Event) -> None:
    """Whenever the partitions this worker holds change (its start, a rebalance), show the gauges of their
    lines that it has not applied anything to yet. (The catalogue needs no reloading: its follower keeps
    reading the topic, and retries on its own after a failure.)"""
    shown_for: frozenset[tuple[str, int]] = frozenset()
    while not stop.wait(1.0):
        held = monitor.held
        if held and held != shown_for:
            try:
                show_held_lines(read_model, gauges, {partition for _topic, partition in held})
                shown_for = held
            except Exception:  # noqa: BLE001 - gauges from the database are a convenience; try again
                log.warning("could not load line gauges from the read model", exc_info=True)


def show_held_lines(read_model: ReadModel, gauges: LineGauges, partitions: set[int]) -> None:
    wanted = {line_id for line_id, partition in read_model.line_partitions().items()
              if partition in partitions and line_id not in gauges.shown}
    if wanted:
        for line_id, line in read_model.lines().items():
            if line_id in wanted:
                gauges.loaded(line)


def main(settings: Settings) -> None:
    setup_logging(SERVICE, settings.log_level)
    app = make_application(SERVICE, settings, rocksdb_options=STATE_OPTIONS)
    registry = CollectorRegistry()
    gauges = GaugeFamilies()
    read_model = ReadModel(settings.db_url(SERVICE))
    catalogue = CatalogueHolder(settings, SERVICE)
    catalogue.load()
    topics = settings.topics
    sdf = app.dataframe(input_topic(app, topics.budget))
    lines = CheckpointLines(sdf.processing_context)
    sdf.processing_context.sink_manager.register(lines)  # flushed at each commit, before state is prepared
    ledger = Ledger(settings, registry, gauges, catalogue, lines)
    sink = ReadModelSink(read_model, Gauge("reformspor_budsjett_read_model_pending_rows",
                                           "Rows waiting to be written to the read model", registry=registry))
    outputs = {name: output_topic(app, name)
               for name in (topics.budget, topics.notifications, topics.totals, topics.dead_letter)}
    route_outputs(sdf, ledger.step, DeadLetters(SERVICE, topics.dead_letter, registry), outputs, sink)
    monitor = GroupMonitor(settings, SERVICE, [topics.budget], registry)
    http = ServiceHttp(SERVICE, settings, registry, monitor, gauges)
    http.ready_checks.append(StateRecovery(sdf, monitor).problems)
    LedgerRoutes(read_model, catalogue, sink).register(http.app)
    stop = threading.Event()
    threading.Thread(target=show_held_lines_forever, args=(read_model, ledger.lines, monitor, stop),
                     name=f"{SERVICE}-refresh", daemon=True).start()
    try:
        run_service(app, http, monitor)
    finally:
        stop.set()
