"""The milepael service: a thin Quix Streams shell around services.milepael.core.

Inputs: the reform topic (key reform_id, CloudEvents JSON, re-validated here)
and milepael's own ticks topic (key reform_id, co-partitioned), concatenated
into one stream, so one state store entry per reform holds the reform's state
and every change to it (a reform event, or a tick asking for a re-evaluation)
happens in the reform's own partition and Kafka transaction. Ticks come from a
timer and from budsjett's totals (see services.milepael.feeds).
Outputs, exactly once: justering events (in the transaction), the SQL read
model (a sink written at each checkpoint), /metrics and /v1/reforms (services.milepael.http).
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from datetime import date, datetime, timezone
from itertools import count
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from quixstreams import State, message_context
from quixstreams.sinks import BatchingSink, SinkBatch

from services.milepael import core
from services.milepael.feeds import (CLOCK_ENV, TICK_ENV, Clock, FundedReforms, LineTotals, Tick, Ticker,
                                     TotalsFollower, tick_interval_s, tick_periodically)
from services.milepael.http import ReformRoutes
from services.milepael.readmodel import ReadModel, ReformLocation
from services.shared.config import Settings
from services.shared.contract import ContractError, Event, parse_event
from services.shared.gauges import GaugeFamilies
from services.shared.jsonio import JsonInputError, dumps_compact, loads_strict
from services.shared.logs import setup_logging
from services.shared.streaming import (DeadLetters, GroupMonitor, Record, Rejection, ServiceHttp, input_topic,
                                       make_application, output_topic, route_outputs, run_service)
from services.shared.topics import ensure_topics

log = logging.getLogger("reformspor.milepael")

SERVICE = "milepael"
REFORM_STATE_KEY = "reform"  # the one state entry per reform (Quix scopes state to the message key)
# Generous: the compacted totals topic holds one message per budget line.
TOTALS_LOAD_TIMEOUT_S = 120.0


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


# --- the stream: reform events and ticks, one state entry per reform ---------------------------

@dataclass(frozen=True)
class ReformPicture:
    """A sink row: the reform after one evaluation, for the read model. `seq` orders pictures in a checkpoint."""

    seq: int
    state: dict
    verdicts: dict[str, core.StageVerdict]
    justering_events: list[dict]
    evaluated_at: datetime


def parse_reform_event(value: bytes | None, key: bytes | None) -> Event:
    """The reform event in a message, or the Rejection that dead-letters it."""
    try:
        event = parse_event(loads_strict(value or b""))
    except (JsonInputError, ContractError) as error:
        raise Rejection([str(p) for p in getattr(error, "problems", [])] or [str(error)], "invalid") from None
    if event.is_budget:
        raise Rejection([f"{event.kind} is a budget event; send it to the budget topic"], "wrong_topic")
    if key != event.key.encode("utf-8"):
        # The key decides the partition and so the reform's state: another key would split the reform.
        raise Rejection([f"the message key must be the reform_id {event.key!r}"], "wrong_key")
    return event


class ReformStep:
    """step(value, key, state) for route_outputs: justering Records and read-model pictures."""

    def __init__(self, settings: Settings, totals: LineTotals, funded: FundedReforms, metrics: Metrics):
        self.topics = settings.topics
        self.totals = totals
        self.funded = funded
        self.metrics = metrics
        self.sequence = count()
        # What this worker last wrote per reform (a digest): a tick that changes nothing writes nothing.
        self.written: dict[str, str] = {}

    def __call__(self, value: bytes, key: bytes | None, state: State) -> list[Any]:
        context = message_context()
        if context.topic == self.topics.milepael_ticks:
            return self.on_tick(value, key, state, context.partition)
        return self.on_reform_event(value, key, state, context.partition)

    def on_reform_event(self, value: bytes, key: bytes | None, state: State, partition: int) -> list[Any]:
        event = parse_reform_event(value, key)
        self.totals.wait_loaded(TOTALS_LOAD_TIMEOUT_S)
        previous = state.get(REFORM_STATE_KEY)
        try:
            return self.evaluate(core.apply(previous, event), previous, event.time, state, partition)
        except core.DomainRejection as error:
            raise Rejection([str(error)], "rejected") from None

    def on_tick(self, value: bytes, key: bytes | None, state: State, partition: int) -> list[Any]:
        try:
            tick = Tick.from_bytes(value)
        except ValueError as error:
            raise Rejection([str(error)], "invalid_tick") from None
        if not key:
            raise Rejection(["a tick needs the reform_id as its key"], "invalid_tick")
        current = state.get(REFORM_STATE_KEY)
        if current is None:
            return []  # a tick for a reform that was never registered (its registration was refused)
        self.totals.wait_loaded(TOTALS_LOAD_TIMEOUT_S)
        return self.evaluate(current, current, tick.now, state, partition)

    def evaluate(self, reform: dict, previous: dict | None, now: datetime, state: State, partition: int) -> list[Any]:
        """Reconcile the reform (may raise DomainRejection, before any effect); then state, metrics, outputs."""
        lines = core.funded_lines(reform)
        self.funded.note(ReformLocation(reform["reform_id"], partition), lines)  # before reading the totals
        totals = self.totals.for_lines(lines)
        new_state, events, verdicts = core.reconcile(reform, totals, now.date(), now)
        reform_id = new_state["reform_id"]
        if new_state != previous:
            state.set(REFORM_STATE_KEY, new_state)
        self.metrics.observe(reform_id, verdicts)
        outputs: list[Any] = [self.justering_record(reform_id, event) for event in events]
        # A digest, not the text: a reform's state carries up to core.MAX_PROCESSED_IDS event ids.
        fingerprint = hashlib.sha256(dumps_compact({"state": new_state, "numbers": {
            k: v.numbers() for k, v in verdicts.items()}})).hexdigest()
        if events or self.written.get(reform_id) != fingerprint:
            self.written[reform_id] = fingerprint
            outputs.append(ReformPicture(next(self.sequence), new_state, verdicts, events, now))
        return outputs

    def justering_record(self, reform_id: str, event: dict) -> Record:
        self.metrics.justering.labels(reform=reform_id).inc()
        data = event["data"]
        # English in the log (the on-call's language); the Norwegian text is in the event and the read model.
        log.warning("justering %s for %s/%s", data["state"], reform_id, data["stage_id"], extra={
            "event_id": event["id"], "reform_id": reform_id, "stage_id": data["stage_id"], "state": data["state"],
            "reason": "; ".join(r["message_en"] for r in data["reasons"])})
        return Record(self.topics.justering, reform_id.encode("utf-8"), dumps_compact(event))


def latest_pictures(pictures: list[ReformPicture]) -> list[tuple[ReformPicture, list[dict]]]:
    """Per reform, its latest picture and every justering event of all its pictures, in order."""
    by_reform: dict[str, tuple[ReformPicture, list[dict]]] = {}
    for picture in sorted(pictures, key=lambda p: p.seq):
        _, events = by_reform.get(picture.state["reform_id"], (picture, []))
        by_reform[picture.state["reform_id"]] = (picture, events + picture.justering_events)
    return list(by_reform.values())


class ReadModelSink(BatchingSink):
    """Writes the read model at each checkpoint, before the checkpoint's transaction commits.

    Quix hands the rows in one batch per input partition (the reform topic's apart from the
    ticks topic's), so one reform may be in several: `write` only gathers them, and `flush`
    writes each reform's latest picture once, with the partition its state lives in (where
    its ticks must go). Every write is an upsert: a batch delivered again after a crash
    leaves the tables as they were.
    """

    def __init__(self, readmodel: ReadModel):
        super().__init__()
        self.readmodel = readmodel
        self.gathered: list[ReformPicture] = []
        self.partitions: dict[str, int] = {}

    def write(self, batch: SinkBatch) -> None:
        for item in batch:
            self.gathered.append(item.value)
            self.partitions[item.value.state["reform_id"]] = batch.partition

    def flush(self) -> None:
        try:
            super().flush()
            for picture, events in latest_pictures(self.gathered):
                reform_id = picture.state["reform_id"]
                self.readmodel.save(picture.state, picture.verdicts, events, evaluated_at=picture.evaluated_at,
                                    partition=self.partitions[reform_id])
        finally:
            self.gathered = []
            self.partitions = {}


# --- wiring ------------------------------------------------------------------------------------

def main(settings: Settings) -> None:
    setup_logging(SERVICE, settings.log_level)
    ensure_topics(settings)  # includes the internal ticks topic, co-partitioned with the reform topic
    topics = settings.topics
    interval_s = tick_interval_s(os.environ.get(TICK_ENV))
    app = make_application(SERVICE, settings)
    metrics = Metrics()
    dead_letters = DeadLetters(SERVICE, topics.dead_letter, metrics.registry)
    readmodel = ReadModel(settings.db_url(SERVICE))
    totals = LineTotals()
    funded = FundedReforms(readmodel.reform_funding())
    producer = app.get_producer()  # plain, not transactional: ticks and the totals' dead letters
    producer.poll(0)  # creates the client now, before the two threads that share it start
    ticker = Ticker(producer, topics.milepael_ticks, Clock(os.environ.get(CLOCK_ENV)))

    def dead_letter(value: bytes | None, key: bytes | None, rejection: Rejection) -> None:
        record = dead_letters.record(value, key, rejection)
        producer.produce(topic=record.topic, key=record.key, value=record.value, headers=list(record.headers))

    follower = TotalsFollower(settings, totals, dead_letter=dead_letter,
                              on_change=lambda lines: ticker.send(funded.funded_by(lines), "totals"))

    reforms = app.dataframe(input_topic(app, topics.reform))
    sdf = reforms.concat(app.dataframe(input_topic(app, topics.milepael_ticks)))
    route_outputs(sdf, ReformStep(settings, totals, funded, metrics), dead_letters,
                  {name: output_topic(app, name) for name in (topics.justering, topics.dead_letter)},
                  ReadModelSink(readmodel))

    monitor = GroupMonitor(settings, SERVICE, [topics.reform, topics.milepael_ticks], metrics.registry)
    http = ServiceHttp(SERVICE, settings, metrics.registry, monitor, gauges=metrics.gauges)
    http.ready_checks.append(follower.problems)
    ReformRoutes(readmodel).register(http.app)
    stop_ticks = threading.Event()
    follower.start()
    threading.Thread(target=tick_periodically, args=(ticker, readmodel.reform_locations, interval_s, stop_ticks),
                     name="milepael-ticks", daemon=True).start()
    try:
        run_service(app, http, monitor)
    finally:
        stop_ticks.set()
        follower.stop()
        producer.flush(5.0)
