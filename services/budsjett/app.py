"""The budsjett worker: a thin Faust shell around the pure ledger core.

One agent (concurrency=1) reads the budget topic, re-validates every message,
and hands it to `core.process` with the Faust table as the store. The shell
then publishes flags and cross-line credits per event, and per batch of events
the totals and metrics once per touched line and the read-model rows, written
(off the event loop) before the batch's offsets can be committed.
"""
from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter as Counter_
from datetime import datetime, timezone
from typing import Any

import faust
from faust.streams import _current_event
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.budsjett import core
from services.budsjett.catalogue import Catalogue
from services.budsjett.readmodel import Batch, ReadModel
from services.shared.config import Settings
from services.shared.contract import BUDGET_KINDS, ContractError
from services.shared.gauges import GaugeFamilies
from services.shared.jsonio import dumps_compact
from services.shared.money import format_ore
from services.shared.service import (
    add_standard_routes,
    confirm_deliveries,
    confirmed_table,
    finish_before_ack,
    json_response,
    make_app,
    raw_topic,
    run_worker,
    send_dead_letter,
    take_batches,
    track_consumer_lag,
)

log = logging.getLogger(__name__)
SERVICE = "budsjett"
# Events per batch: bigger batches mean fewer produce requests and read-model transactions.
BATCH_MAX = 1000
BATCH_WITHIN_S = 0.1
# Small linger so the per-event changelog writes go out in few produce requests.
PRODUCER_LINGER_S = 0.005
PRODUCER_BATCH_BYTES = 256 * 1024
CATALOGUE_REFRESH_S = 10.0


class Metrics:
    def __init__(self, registry: CollectorRegistry, gauges: GaugeFamilies):
        # Per-line series are many (lines x cells x 7): fast gauges. The rest stay in the registry.
        cell_labels = ("line", "ministry", "phase")
        self.amounts = {
            name: gauges.gauge(f"reformspor_budsjett_{name}",
                               f"{name.removesuffix('_ore')} per line, ministry and phase, in øre", cell_labels)
            for name in core.TOTAL_FIELDS
        }
        self.overcommitted = gauges.gauge("reformspor_budsjett_overcommitted",
                                          "1 when commitments plus payments exceed the money available", cell_labels)
        self.overspent = gauges.gauge("reformspor_budsjett_overspent",
                                      "1 when payments exceed the money available (not for overslagsbevilgning)",
                                      cell_labels)
        self.last_event = gauges.gauge("reformspor_budsjett_last_event_timestamp_seconds",
                                       "Event time of the newest event applied to a line", ("line",))
        self.events = Counter("reformspor_budsjett_events", "Budget events by type and outcome",
                              ["type", "outcome"], registry=registry)
        self.dead_letters = Counter("reformspor_dead_letters", "Messages sent to the dead-letter topic",
                                    ["service", "reason"], registry=registry)
        self.read_model_pending = Gauge("reformspor_budsjett_read_model_pending_rows",
                                        "Rows waiting to be written to the read model", registry=registry)
        for kind in BUDGET_KINDS + (core.TRANSFER_KIND,):
            for outcome in ("applied", "duplicate", "conflict", "rejected", "redelivered"):
                self.events.labels(type=kind, outcome=outcome)

    def update_line(self, line: dict[str, Any], cells: set[tuple[str, str]] | None = None) -> None:
        line_id = line["line_id"]
        for key, cell in line["cells"].items():
            ministry, phase = key.split("|")
            if cells is not None and (ministry, phase) not in cells:
                continue
            labels = (line_id, ministry, phase)
            for name in core.AMOUNT_FIELDS:
                self.amounts[name].set(labels, cell[name])
            self.amounts["disponibelt_ore"].set(labels, core.disponibelt(cell))
            self.overcommitted.set(labels, 1 if cell["overcommitted"] else 0)
            self.overspent.set(labels, 1 if cell["overspent"] else 0)
        if line["last_event_time"]:
            moment = datetime.fromisoformat(line["last_event_time"].replace("Z", "+00:00"))
            self.last_event.set((line_id,), moment.timestamp())


def with_nok(amounts: dict[str, Any]) -> dict[str, Any]:
    """Add a *_nok decimal string beside every *_ore integer."""
    result = dict(amounts)
    for name, value in amounts.items():
        if name.endswith("_ore") and isinstance(value, int):
            result[name.removesuffix("_ore") + "_nok"] = format_ore(value)
    return result


def line_document(line: dict[str, Any], cells: list[dict[str, Any]] | None = None,
                  as_of: str | None = None) -> dict[str, Any]:
    """The HTTP view of one line: cells, totals and per-ministry / per-phase rollups."""
    if cells is None:
        cells = core.line_totals(line)["cells"]
        for cell in cells:
            stored = line["cells"][core.cell_key(cell["ministry"], cell["phase"])]
            cell.update(overcommitted=stored["overcommitted"], overspent=stored["overspent"],
                        overslagsbevilgning=stored["overslagsbevilgning"], kan_overfores=stored["kan_overfores"],
                        funding_posts=stored["funding_posts"])
    groups = core.rollups(cells)
    document = {
        "line_id": line["line_id"],
        "last_event_time": line.get("last_event_time"),
        "updated_at": line.get("updated_at"),
        "events_applied": line.get("events"),
        "totals": with_nok(core.sum_amounts(cells)),
        "cells": [with_nok(cell) for cell in cells],
        "by_ministry": {k: with_nok(v) for k, v in groups["by_ministry"].items()},
        "by_phase": {k: with_nok(v) for k, v in groups["by_phase"].items()},
        "flags": [{"ministry": c["ministry"], "phase": c["phase"], "flag": f}
                  for c in cells for f in core.FLAGS if c.get(f)],
    }
    if as_of is not None:
        document["as_of"] = as_of
    return document


def problem(view: View, status: int, title: str, detail: str) -> Response:
    return json_response(view, {"type": "about:blank", "title": title, "status": status, "detail": detail},
                         status=status, content_type="application/problem+json")


def set_current_event(ref: Any) -> None:
    """Set the stream's current-event context (as faust.streams does per event) for table writes."""
    _current_event.set(ref)


def create_app(settings: Settings, web_port: int | None = None) -> faust.App:
    # JSON keys and values for the table's changelog (topics here are raw bytes, set per topic).
    app = make_app(SERVICE, settings, web_port, key_serializer="json", value_serializer="json",
                   producer_linger=PRODUCER_LINGER_S, producer_max_batch_size=PRODUCER_BATCH_BYTES)
    registry = CollectorRegistry()
    gauges = GaugeFamilies()
    metrics = Metrics(registry, gauges)
    track_consumer_lag(app, registry, SERVICE)
    budget_topic = raw_topic(app, settings.topics.budget)
    totals_topic = raw_topic(app, settings.topics.totals)
    notifications_topic = raw_topic(app, settings.topics.notifications)
    ledger = confirmed_table(app, "ledger", settings.partitions)
    store = core.CompactStore(ledger)
    read_model = ReadModel(settings.db_url(SERVICE))
    state: dict[str, Any] = {"catalogue": Catalogue(), "pending": 0, "catalogue_error": None}
    # The table holds an id:* key per event; HTTP and gauges need only the lines.
    line_ids: set[str] = set()

    @ledger.on_recover
    async def remember_lines() -> None:
        line_ids.update(key.removeprefix("line:") for key in list(ledger.keys()) if key.startswith("line:"))
    app.budsjett_read_model = read_model  # for tests and tools

    async def dead_letter(value: bytes, key: bytes | None, reasons: list[str], reason_label: str) -> Any:
        metrics.dead_letters.labels(service=SERVICE, reason=reason_label).inc()
        return await send_dead_letter(app, settings, value, key, reasons, origin=SERVICE)

    # A batch into a local SQLite file takes ~25 ms per 1000 events on the loop; in an executor
    # thread it took ~5x longer, the sqlite3 driver handing the GIL back and forth per row while
    # the loop sends. A server database (network round trips, may stall) stays off the loop.
    inline_writes = read_model.dialect == "sqlite"

    async def write_rows(batch: Batch) -> None:
        """Write a batch's rows, retrying until it succeeds: its offsets must not be acked before."""
        state["pending"] = len(batch)
        metrics.read_model_pending.set(len(batch))
        delay_s = 0.1
        while True:
            try:
                if inline_writes:
                    read_model.write(batch)
                else:
                    await asyncio.get_running_loop().run_in_executor(None, read_model.write, batch)
                break
            except Exception:  # noqa: BLE001 - the rows stay; the stream waits until they are written
                log.exception("read model write failed; retrying in %.1f s", delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
        state["pending"] = 0
        metrics.read_model_pending.set(0)

    async def apply_batch(events: list[Any]) -> None:
        """Apply a batch and wait until everything it wrote is durable: only then may its offsets be acked."""
        batch = read_model.new_batch()
        sends: list[Any] = []  # deliveries to confirm, with the table's changelog writes
        outcomes: Counter_[tuple[str, str]] = Counter_()
        touched: dict[str, tuple[dict[str, Any], set[tuple[str, str]] | None]] = {}
        for event in events:
            # Table writes go to the partition of the *current event*; in a batch that
            # is not this one unless we say so (a batch can span partitions).
            set_current_event(weakref.ref(event))
            message_in = event.message
            raw, key = event.value, event.key
            try:
                message = core.parse_message(raw)
            except ContractError as error:
                outcomes["unknown", "rejected"] += 1
                sends.append(await dead_letter(raw, key, [str(p) for p in error.problems], "invalid"))
                continue
            if key is not None and key.decode("utf-8", "replace") != message.key:
                # The line's state lives on its key's partition; a wrong key would split it.
                outcomes[message.kind, "rejected"] += 1
                sends.append(await dead_letter(
                    raw, key, [f"Kafka key {key[:80]!r} is not the event's line_id {message.key!r}"], "key_mismatch"))
                continue
            outcome = core.process(store, message_in.offset, message, state["catalogue"],
                                   now=datetime.now(timezone.utc))
            outcomes[message.kind, outcome.status] += 1
            if outcome.status in ("conflict", "rejected"):
                sends.append(await dead_letter(raw, key, outcome.reasons, outcome.status))
                continue
            if outcome.status == "duplicate":
                continue
            for transfer in outcome.sends:
                sends.append(await budget_topic.send(key=transfer.line_id.encode(),
                                                     value=dumps_compact(transfer.to_wire())))
            for flag in outcome.flags:
                sends.append(await notifications_topic.send(key=message.key.encode(), value=dumps_compact(flag)))
            if outcome.effect:
                batch.add(outcome, message, message_in.partition, message_in.offset, raw)
            line_ids.add(message.key)
            _, cells = touched.get(message.key, (None, set()))
            if cells is not None and outcome.touched:
                cells = cells | outcome.touched
            else:
                cells = None  # a redelivery: refresh every cell of the line
            touched[message.key] = (outcome.line, cells)
        set_current_event(None)
        # Totals are a snapshot per line: the batch's last state supersedes the earlier ones.
        for line_id, (line, cells) in touched.items():
            sends.append(await totals_topic.send(key=line_id.encode(), value=dumps_compact(core.line_totals(line))))
            metrics.update_line(line, cells)
        for (kind, status), count in outcomes.items():
            metrics.events.labels(type=kind, outcome=status).inc(count)
        if len(batch):
            await write_rows(batch)
        await confirm_deliveries([ledger], sends)

    @app.agent(budget_topic, concurrency=1)
    async def apply_events(stream):
        # A batch is acked when we ask for the next one, never on a stop or an error. It is applied
        # in a task of its own that a stop does not interrupt, and an unexpected error ends the
        # process before anything is acked.
        async for events in take_batches(stream, BATCH_MAX, BATCH_WITHIN_S):
            await finish_before_ack(apply_batch(events), log)

    async def load_catalogue() -> None:
        try:
            items = await asyncio.get_running_loop().run_in_executor(None, read_model.load_catalogue)
            state["catalogue"] = Catalogue(items)
            state["catalogue_error"] = None
        except Exception as error:  # noqa: BLE001
            state["catalogue_error"] = str(error)

    @app.task
    async def load_catalogue_at_start() -> None:
        await load_catalogue()

    @app.timer(interval=CATALOGUE_REFRESH_S)
    async def refresh() -> None:
        await load_catalogue()
        # Gauges after a restart come from the recovered table, not only from new events.
        for line in lines().values():
            metrics.update_line(line)

    def lines() -> dict[str, dict[str, Any]]:
        found = {line_id: ledger.get(f"line:{line_id}") for line_id in list(line_ids)}
        return {line_id: line for line_id, line in found.items() if line is not None}

    def catalogue_status() -> dict[str, Any]:
        catalogue = state["catalogue"]
        return {"loaded": catalogue.loaded, "items": len(catalogue), "fiscal_years": catalogue.years,
                "checks": "kap/post checked against the catalogue" if catalogue.loaded
                else "no catalogue loaded: kap/post checks are skipped",
                "error": state["catalogue_error"]}

    @app.page("/v1/lines")
    class Lines(View):
        async def get(self, request: Request) -> Response:
            result = []
            for line_id, line in sorted(lines().items()):
                document = line_document(line)
                result.append({k: document[k] for k in ("line_id", "last_event_time", "events_applied", "totals",
                                                       "by_ministry", "flags")})
            return json_response(self, {"lines": result, "catalogue": catalogue_status()})

    @app.page("/v1/lines/{line_id}")
    class LineView(View):
        async def get(self, request: Request, line_id: str) -> Response:
            line = ledger.get(f"line:{line_id}")
            if line is None:
                return problem(self, 404, "Unknown budget line", f"no events have been applied to line {line_id!r}")
            as_of_text = request.query.get("as_of")
            if as_of_text is None:
                return json_response(self, line_document(line))
            try:
                as_of = datetime.fromisoformat(as_of_text.replace("Z", "+00:00"))
                if as_of.tzinfo is None:
                    raise ValueError("no time zone")
            except ValueError:
                return problem(self, 400, "Invalid as_of",
                               f"as_of must be an RFC 3339 timestamp with time zone, e.g. 2026-03-01T10:00:00Z; "
                               f"got {as_of_text[:40]!r}")
            cells = await asyncio.get_running_loop().run_in_executor(None, read_model.cells_as_of, line_id, as_of)
            return json_response(self, line_document(line, cells=cells, as_of=core.rfc3339(as_of)))

    @app.page("/v1/lines/{line_id}/events")
    class LineEvents(View):
        async def get(self, request: Request, line_id: str) -> Response:
            if ledger.get(f"line:{line_id}") is None:
                return problem(self, 404, "Unknown budget line", f"no events have been applied to line {line_id!r}")
            try:
                limit = min(int(request.query.get("limit", "1000")), 10000)
                skip = max(int(request.query.get("offset", "0")), 0)
            except ValueError:
                return problem(self, 400, "Invalid paging", "limit and offset must be whole numbers")
            events = await asyncio.get_running_loop().run_in_executor(None, read_model.events, line_id, limit, skip)
            return json_response(self, {"line_id": line_id, "events": events})

    @app.page("/v1/status")
    class Status(View):
        async def get(self, request: Request) -> Response:
            return json_response(self, {"lines": len(lines()), "catalogue": catalogue_status(),
                                        "read_model_pending_rows": state["pending"]})

    add_standard_routes(app, registry, gauges=gauges)
    return app


def main(settings: Settings) -> None:
    run_worker(create_app(settings), settings)
