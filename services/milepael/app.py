"""The milepael service: a thin Faust shell around services.milepael.core.

Inputs: the reform topic (key reform_id, CloudEvents JSON, re-validated here)
and budsjett's compacted totals topic (key line_id), which every worker reads
in full into memory (no shared database with budsjett). State per reform lives
in a Faust table; every mutation happens in a stream on the reform's own
partition: reform events, and "ticks" on a co-partitioned internal topic that
the periodic timer and totals updates send to ask for a re-evaluation.
Outputs: justering events, the SQL read model, /metrics and /v1/reforms.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import date, datetime, timezone
from pathlib import Path

import faust
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, Counter

from services.milepael import core
from services.milepael.readmodel import ReadModel
from services.shared.config import Settings
from services.shared.contract import ContractError, parse_event
from services.shared.gauges import GaugeFamilies
from services.shared.jsonio import JsonInputError, dumps_compact, loads_strict
from services.shared.service import (add_standard_routes, confirm_deliveries, confirmed_table, json_response, make_app,
                                     raw_topic, run_worker, send_dead_letter, track_consumer_lag)
from services.shared.topics import ensure_topics

log = logging.getLogger("reformspor.milepael")

CLOCK_ENV = "REFORMSPOR_MILEPAEL_CLOCK"
TICK_ENV = "REFORMSPOR_MILEPAEL_TICK_S"
DEFAULT_TICK_S = 60.0


def ticks_topic_name(settings: Settings) -> str:
    return settings.topics.milepael_ticks


class Clock:
    """'Today' for the periodic re-evaluation.

    REFORMSPOR_MILEPAEL_CLOCK unset: the real UTC time. An RFC 3339 time: that
    fixed moment (tests, demo). "file:<path>": the RFC 3339 time in that file,
    re-read on every tick, so a test can move time forward without a restart.
    """

    def __init__(self, spec: str | None = None):
        self.spec = (spec or "").strip()

    @staticmethod
    def _parse(text: str) -> datetime:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError(f"{CLOCK_ENV} must carry a time zone: {text!r}")
        return moment.astimezone(timezone.utc)

    def now(self) -> datetime:
        if not self.spec:
            return datetime.now(timezone.utc)
        if self.spec.startswith("file:"):
            return self._parse(Path(self.spec.removeprefix("file:")).read_text())
        return self._parse(self.spec)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Per-stage series are many (reforms x stages x ~20): fast gauges, as budsjett's per-line ones.
        self.gauges = GaugeFamilies()
        g = self.gauges.gauge
        stage = ("reform", "stage")
        self.status = g("reformspor_reform_stage_status", "1 for the stage's current status, 0 for the others",
                        stage + ("status",))
        self.spi = g("reformspor_reform_stage_spi", "Schedule performance index EV/PV", stage)
        self.spi_t = g("reformspor_reform_stage_spi_t", "Earned Schedule SPI(t) = ES/AT", stage)
        self.cpi = g("reformspor_reform_stage_cpi", "Cost performance index EV/AC", stage)
        self.schedule_variance = g("reformspor_reform_stage_schedule_variance_days",
                                   "Forecast finish minus planned finish, days (positive = late)", stage)
        self.cost_variance = g("reformspor_reform_stage_cost_variance_ore",
                               "Estimate at completion minus budget at completion, øre", stage)
        self.ev = g("reformspor_reform_stage_earned_value_ore", "Earned value, øre", stage)
        self.pv = g("reformspor_reform_stage_planned_value_ore", "Planned value, øre", stage)
        self.ac = g("reformspor_reform_stage_actual_cost_ore", "Actual cost (utbetalt on the stage's funding), øre",
                    stage)
        self.adjustment = g("reformspor_reform_stage_adjustment_required",
                            "1 while the stage needs adjustment (forecast outside tolerance or gate criterion failing)",
                            stage)
        self.forecast_finish = g("reformspor_reform_stage_forecast_finish_timestamp_seconds",
                                 "Forecast finish (Earned Schedule), Unix time", stage)
        self.planned_finish = g("reformspor_reform_stage_planned_finish_timestamp_seconds",
                                "Planned finish of the current baseline, Unix time", stage)
        self.tolerance = g("reformspor_reform_stage_tolerance_level",
                           "Forecast against tolerance: 0 ok, 1 warning, 2 critical", stage + ("dimension",))
        self.justering = Counter("reformspor_reform_justering_events_total", "justering events emitted", ["reform"],
                                 registry=self.registry)
        self.dead_letters = Counter("reformspor_dead_letters_total", "Messages sent to the dead-letter topic",
                                    ["service", "reason"], registry=self.registry)

    def observe(self, reform_id: str, verdicts: dict[str, core.StageVerdict]) -> None:
        for stage_id, v in verdicts.items():
            labels = (reform_id, stage_id)
            for status in core.STATUSES:
                self.status.set(labels + (status,), 1 if v.status == status else 0)
            for gauge, value in ((self.spi, v.spi), (self.spi_t, v.spi_t), (self.cpi, v.cpi)):
                # Undefined ratios (no PV, no AC yet) are NaN: absent data, not a bad number.
                gauge.set(labels, float(value) if value is not None else float("nan"))
            self.schedule_variance.set(labels, v.schedule_variance_days)
            self.cost_variance.set(labels, v.cost_variance_ore)
            self.ev.set(labels, v.ev_ore)
            self.pv.set(labels, v.pv_ore)
            self.ac.set(labels, v.ac_ore)
            self.adjustment.set(labels, 1 if v.adjustment_required else 0)
            self.forecast_finish.set(labels, _timestamp(v.forecast_finish))
            self.planned_finish.set(labels, _timestamp(v.planned_finish))
            self.tolerance.set(labels + ("time",), v.time_level)
            self.tolerance.set(labels + ("cost",), v.cost_level)


def _timestamp(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()


def problem(view: View, status: int, title: str, detail: str) -> Response:
    return json_response(view, {"type": "about:blank", "title": title, "status": status, "detail": detail},
                         status=status, content_type="application/problem+json")


def create_app(settings: Settings, web_port: int | None = None, clock: Clock | None = None,
               tick_interval_s: float | None = None) -> faust.App:
    clock = clock or Clock(os.environ.get(CLOCK_ENV))
    tick_interval_s = tick_interval_s or float(os.environ.get(TICK_ENV, DEFAULT_TICK_S))
    app = make_app("milepael", settings, web_port)
    metrics = Metrics()
    readmodel = ReadModel(settings.db_url("milepael"))
    reform_topic = raw_topic(app, settings.topics.reform)
    justering_topic = raw_topic(app, settings.topics.justering)
    ticks_topic = raw_topic(app, ticks_topic_name(settings))
    reforms = confirmed_table(app, "milepael-reforms", settings.partitions)
    totals: dict[str, dict] = {}          # line_id → core.totals_summary(...), rebuilt from the compacted topic
    totals_loaded = asyncio.Event()
    # Reform events and ticks are two agents on one table: one lock keeps each read-modify-write whole.
    lock = asyncio.Lock()
    saved_documents: dict[str, bytes] = {}
    app.milepael_metrics = metrics  # for tests and debugging
    app.milepael_readmodel = readmodel

    async def dead_letter(value: bytes, key: bytes | None, reasons: list[str], origin: str, reason_label: str) -> None:
        metrics.dead_letters.labels(service="milepael", reason=reason_label).inc()
        # Delivered before the input offset can be acked: a rejected event is parked, never lost.
        await confirm_deliveries([], [await send_dead_letter(app, settings, value, key, reasons, origin)])

    async def evaluate_and_publish(reform_id: str, state: dict, previous: dict | None, today: date, now: datetime) -> None:
        new_state, events, verdicts = core.reconcile(state, dict(totals), today, now)
        sends = []
        for event in events:
            sends.append(await justering_topic.send(key=reform_id.encode(), value=dumps_compact(event)))
            metrics.justering.labels(reform=reform_id).inc()
            log.warning("justering %s %s/%s: %s", event["data"]["state"], reform_id, event["data"]["stage_id"],
                        "; ".join(r["message"] for r in event["data"]["reasons"]))
        if new_state != previous:
            reforms[reform_id] = new_state  # changelog goes to this event's partition: co-partitioned
        metrics.observe(reform_id, verdicts)
        fingerprint = dumps_compact({"state": new_state, "numbers": {k: v.numbers() for k, v in verdicts.items()},
                                     "events": [e["id"] for e in events]})
        if events or saved_documents.get(reform_id) != fingerprint:
            await asyncio.to_thread(readmodel.save, new_state, verdicts, events)
            saved_documents[reform_id] = fingerprint
        # The state and the justering events reach the broker before the input offset is acked.
        await confirm_deliveries([reforms], sends)

    @app.agent(reform_topic, concurrency=1)
    async def reform_events(stream):
        async for message_event in stream.events():
            value, key = message_event.value, message_event.key
            try:
                event = parse_event(loads_strict(value))
            except (JsonInputError, ContractError) as error:
                problems = [str(p) for p in getattr(error, "problems", [])] or [str(error)]
                await dead_letter(value, key, problems, settings.topics.reform, "invalid")
                continue
            if event.is_budget:
                await dead_letter(value, key, [f"{event.kind} is a budget event; send it to the budget topic"],
                                  settings.topics.reform, "wrong_topic")
                continue
            # Never evaluate against half-loaded totals (after a restart): that would clear and re-raise alerts.
            await totals_loaded.wait()
            async with lock:
                previous = reforms.get(event.key)
                try:
                    state = core.apply(previous, event)
                    core.reconcile(state, dict(totals), event.time.date(), event.time)  # fails here, not half-way
                except core.DomainRejection as error:
                    await dead_letter(value, key, [str(error)], settings.topics.reform, "rejected")
                    continue
                except Exception as error:  # a bug must not stall the partition: park the event with the reason
                    log.exception("milepael could not process %s", event.id)
                    await dead_letter(value, key, [f"internal error: {error!r}"[:500]], settings.topics.reform,
                                      "internal_error")
                    continue
                await evaluate_and_publish(event.key, state, previous, event.time.date(), event.time)

    @app.agent(ticks_topic, concurrency=1)
    async def ticks(stream):
        async for message_event in stream.events():
            try:
                reform_id = message_event.key.decode("utf-8")
                payload = json.loads(message_event.value)
                now = Clock._parse(payload["now"])
            except (AttributeError, ValueError, KeyError, TypeError):
                continue  # our own internal topic: nothing else writes here
            await totals_loaded.wait()
            async with lock:
                state = reforms.get(reform_id)
                if state is not None:
                    await evaluate_and_publish(reform_id, state, state, now.date(), now)

    async def send_ticks(reform_ids, why: str) -> None:
        try:
            now = clock.now()
        except (OSError, ValueError) as error:
            log.error("clock unreadable (%s): skipping re-evaluation", error)
            return
        payload = dumps_compact({"now": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "why": why})
        for reform_id in reform_ids:
            # Keyed like the reform topic (murmur2 of the reform_id), so a tick lands on the reform's partition.
            await ticks_topic.send(key=reform_id.encode("utf-8"), value=payload)

    @app.timer(interval=tick_interval_s)
    async def periodic_reevaluation():
        # Catches milestones that became overdue with no new event.
        if not app.rebalancing:
            await send_ticks(list(reforms.keys()), "clock")

    @app.task
    async def follow_totals():
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(settings.topics.totals, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    key_deserializer=None, value_deserializer=None)
        await consumer.start()
        try:
            while not consumer.assignment():
                await asyncio.sleep(0.1)
            end_offsets = await consumer.end_offsets(list(consumer.assignment()))
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                changed_lines: set[str] = set()
                for records in batches.values():
                    for record in records:
                        try:
                            summary = core.totals_summary(loads_strict(record.value))
                        except (JsonInputError, ValueError, TypeError) as error:
                            await dead_letter(record.value, record.key, [f"totals message: {error}"],
                                              settings.topics.totals, "invalid_totals")
                            continue
                        totals[summary["line_id"]] = summary
                        changed_lines.add(summary["line_id"])
                if not totals_loaded.is_set():
                    positions = {tp: await consumer.position(tp) for tp in end_offsets}
                    if all(positions[tp] >= end for tp, end in end_offsets.items()):
                        totals_loaded.set()
                if changed_lines:
                    affected = [rid for rid, st in list(reforms.items())
                                if st is not None and core.funded_lines(st) & changed_lines]
                    await send_ticks(affected, "totals")
        except asyncio.CancelledError:
            raise
        finally:
            await consumer.stop()

    async def ready_check() -> list[str]:
        return [] if totals_loaded.is_set() else ["totals topic not loaded yet"]

    add_standard_routes(app, metrics.registry, ready_check, gauges=metrics.gauges)
    track_consumer_lag(app, metrics.registry, "milepael")

    @app.page("/v1/reforms")
    class ReformList(View):
        async def get(self, request: Request) -> Response:
            rows = await asyncio.to_thread(readmodel.list_reforms)
            return json_response(self, {"reforms": rows})

    @app.page("/v1/reforms/{reform_id}")
    class ReformDetail(View):
        async def get(self, request: Request, reform_id: str) -> Response:
            document = await asyncio.to_thread(readmodel.get_reform, reform_id)
            if document is None:
                return problem(self, 404, "reform not found", f"no reform with reform_id {reform_id[:64]!r}")
            return json_response(self, document)

    return app


def main(settings: Settings) -> None:
    ensure_topics(settings)  # includes the internal ticks topic, co-partitioned with the reform topic
    run_worker(create_app(settings), settings)
