"""The thin shell's own rules: metric names and labels (dashboards and alerts depend on them), clock, totals input,
what each message becomes (state, justering records, read-model rows, dead letters)."""
from __future__ import annotations

import json
import logging
from datetime import date, datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session, select

from services.milepael import core
from services.milepael.app import (REFORM_STATE_KEY, Metrics, ReformPicture, ReformStep, latest_pictures,
                                   parse_reform_event)
from services.milepael.feeds import Clock, FundedReforms, LineTotals, Tick, TotalsFollower, tick_interval_s
from services.milepael.readmodel import TABLES, ReadModel, ReformLocation
from services.shared.config import Settings
from services.shared.contract import make_event
from services.shared.follower import FollowedRecord
from services.shared.jsonio import loads_strict
from services.shared.streaming import Record, Rejection
from tests.unit.test_milepael_core import done, registered, stage_plan

STAGE_GAUGES = [
    "reformspor_reform_stage_spi", "reformspor_reform_stage_spi_t", "reformspor_reform_stage_cpi",
    "reformspor_reform_stage_schedule_variance_days", "reformspor_reform_stage_cost_variance_ore",
    "reformspor_reform_stage_earned_value_ore", "reformspor_reform_stage_planned_value_ore",
    "reformspor_reform_stage_actual_cost_ore", "reformspor_reform_stage_adjustment_required",
    "reformspor_reform_stage_forecast_finish_timestamp_seconds",
    "reformspor_reform_stage_planned_finish_timestamp_seconds",
]


def test_metrics_are_labelled_by_reform_and_stage_only():
    state = done(registered(), "A", date(2026, 1, 21))
    _, _, verdicts = core.reconcile(state, {}, date(2026, 3, 2), datetime(2026, 3, 2, tzinfo=timezone.utc))
    metrics = Metrics()
    metrics.observe("R1", verdicts)
    families = {f.name: f for f in text_string_to_metric_families(metrics.gauges.render().decode())}
    for name in STAGE_GAUGES:
        [sample] = families[name].samples
        assert sample.labels == {"reform": "R1", "stage": "s1"}, name
    status = {s.labels["status"]: s.value for s in families["reformspor_reform_stage_status"].samples}
    assert status == {s: (1.0 if s == "justering påkrevd" else 0.0) for s in core.STATUSES}
    levels = {s.labels["dimension"]: s.value for s in families["reformspor_reform_stage_tolerance_level"].samples}
    assert levels == {"time": 1.0, "cost": 0.0}
    by_name = {s.name: s.value for f in families.values() for s in f.samples}
    assert by_name["reformspor_reform_stage_schedule_variance_days"] == 20
    assert by_name["reformspor_reform_stage_forecast_finish_timestamp_seconds"] == datetime(
        2026, 5, 1, tzinfo=timezone.utc).timestamp()


def test_clock_fixed_file_and_real(tmp_path):
    assert Clock("2026-03-02T08:00:00Z").now() == datetime(2026, 3, 2, 8, tzinfo=timezone.utc)
    clock_file = tmp_path / "clock"
    clock_file.write_text("2026-03-02T09:00:00+01:00\n")
    clock = Clock(f"file:{clock_file}")
    assert clock.now() == datetime(2026, 3, 2, 8, tzinfo=timezone.utc)
    clock_file.write_text("2026-04-01T00:00:00Z")
    assert clock.now().date() == date(2026, 4, 1)  # re-read: tests move time without a restart
    assert Clock(None).now().tzinfo is not None
    with pytest.raises(ValueError):
        Clock("2026-03-02T08:00:00").now()  # local time is ambiguous


def test_totals_summary_sums_utbetalt_per_phase_and_refuses_floats():
    message = loads_strict(b'{"line_id": "0-24", "cells": ['
                           b'{"ministry": "BFD", "phase": "utredning", "utbetalt_ore": 80000000},'
                           b'{"ministry": "KD", "phase": "utredning", "utbetalt_ore": 110000000},'
                           b'{"ministry": "HOD", "phase": "utvikling", "utbetalt_ore": 30000025}], "totals": {}}')
    summary = core.totals_summary(message)
    assert summary["utbetalt_ore_by_phase"] == {"utredning": 190_000_000, "utvikling": 30_000_025}
    with pytest.raises(ValueError):
        core.totals_summary(loads_strict(b'{"line_id": "0-24", "cells": [{"phase": "utredning", "utbetalt_ore": 1.5}]}'))
    with pytest.raises(ValueError):
        core.totals_summary({"cells": []})


# --- the Quix shell's own rules: what a message becomes ------------------------------------------

class FakeState:
    """The slice of quixstreams.State the step uses (get/set on the current message's key)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value) -> None:
        self.values[key] = json.loads(json.dumps(value))  # Quix keeps state as JSON


def _step() -> ReformStep:
    totals = LineTotals()
    totals.loaded.set()
    return ReformStep(Settings(topic_prefix="t."), totals, FundedReforms(), Metrics())


def _wire(kind: str, ministry: str, data: dict, event_id: str, when: datetime) -> bytes:
    return json.dumps(make_event(kind, ministry, data, event_id, when)).encode()


def _registration() -> bytes:
    return _wire("reform_registrert", "BFD", {"reform_id": "R1", "title": "Tidlig innsats", "owner": "BFD",
                                              "stages": [stage_plan()]}, "r-1", datetime(2026, 1, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize("value, key, label", [
    (b'{"not": "an event"', b"R1", "invalid"),
    (None, b"R1", "invalid"),
    (_wire("bevilget", "BFD", {"line_id": "0-24", "ministry": "BFD", "phase": "utredning", "amount_nok": "1.00",
                               "kap": 840, "post": 70, "fiscal_year": 2026}, "b-1", datetime(2026, 1, 1, tzinfo=timezone.utc)),
     b"0-24", "wrong_topic"),
    (_registration(), b"R2", "wrong_key"),
    (_registration(), None, "wrong_key"),
])
def test_invalid_reform_messages_are_rejected_with_a_label(value, key, label):
    with pytest.raises(Rejection) as caught:
        parse_reform_event(value, key)
    assert caught.value.label == label and caught.value.reasons


def test_registration_writes_state_and_picture_and_an_unchanged_tick_writes_nothing():
    step, state = _step(), FakeState()
    [picture] = step.on_reform_event(_registration(), b"R1", state, 2)
    assert isinstance(picture, ReformPicture) and picture.state["reform_id"] == "R1"
    assert state.get(REFORM_STATE_KEY)["reform_id"] == "R1"
    tick = Tick(datetime(2026, 1, 1, 13, tzinfo=timezone.utc), "clock").to_bytes()
    assert step.on_tick(tick, b"R1", state, 2) == []  # same day, same facts: no event, no row

    late = Tick(datetime(2026, 3, 2, 8, tzinfo=timezone.utc), "clock").to_bytes()
    outputs = step.on_tick(late, b"R1", state, 2)
    [record] = [o for o in outputs if isinstance(o, Record)]
    assert record.topic == "t.reform.justering" and record.key == b"R1"
    assert json.loads(record.value)["data"]["state"] == "required"
    assert step.on_tick(late, b"R1", state, 2) == []  # exactly once: the condition is in the state now
    assert step.on_tick(late, b"R1", FakeState(), 2) == []  # a tick for an unknown reform does nothing


def test_a_justering_is_one_log_record_with_its_event_id_and_reasons(caplog):
    step, state = _step(), FakeState()
    step.on_reform_event(_registration(), b"R1", state, 2)
    late = Tick(datetime(2026, 3, 2, 8, tzinfo=timezone.utc), "clock").to_bytes()
    with caplog.at_level(logging.WARNING, logger="reformspor.milepael"):
        [record] = [o for o in step.on_tick(late, b"R1", state, 2) if isinstance(o, Record)]
    event = json.loads(record.value)
    [logged] = [r for r in caplog.records if r.name == "reformspor.milepael"]
    assert (logged.event_id, logged.reform_id, logged.stage_id, logged.state) == (event["id"], "R1", "s1", "required")
    assert logged.reason == "; ".join(r["message_en"] for r in event["data"]["reasons"]) and logged.reason


def test_domain_rejection_and_bad_ticks_are_dead_lettered():
    step, state = _step(), FakeState()
    with pytest.raises(Rejection) as caught:
        step.on_reform_event(_wire("milepael_fullfort", "BFD", {"reform_id": "R1", "stage_id": "s1",
                                                                "milestone_id": "A", "ministry": "BFD"}, "r-2",
                                   datetime(2026, 1, 21, tzinfo=timezone.utc)), b"R1", state, 2)
    assert caught.value.label == "rejected" and "not registered" in caught.value.reasons[0]
    good = Tick(datetime(2026, 3, 2, 8, tzinfo=timezone.utc), "clock").to_bytes()
    for bad, key in ((b"{}", b"R1"), (b"[]", b"R1"), (b'{"now": "2026-03-02T08:00:00"}', b"R1"), (b"nope", b"R1"),
                     (None, b"R1"), (good, None)):
        with pytest.raises(Rejection) as caught:
            step.on_tick(bad, key, state, 2)
        assert caught.value.label == "invalid_tick"


def _picture(seq: int, as_of: str, events: list[dict], reform_id: str = "R1") -> ReformPicture:
    return ReformPicture(seq, {"reform_id": reform_id, "as_of": as_of}, {}, events,
                         datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_a_checkpoint_writes_each_reform_once_latest_picture_with_all_events():
    # Batches come per input partition, so a later picture may be handed over first.
    pictures = [_picture(3, "2026-01-03", [{"id": "e3"}]), _picture(1, "2026-01-01", [{"id": "e1"}]),
                _picture(2, "2026-01-02", [], reform_id="R2")]
    written = {p.state["reform_id"]: (p.state["as_of"], [e["id"] for e in events])
               for p, events in latest_pictures(pictures)}
    assert written == {"R1": ("2026-01-03", ["e1", "e3"]), "R2": ("2026-01-02", [])}


def test_a_totals_change_ticks_every_reform_the_line_funds_where_its_state_lives():
    step, state = _step(), FakeState()
    assert step.funded.funded_by({"0-24"}) == []
    step.on_reform_event(_registration(), b"R1", state, 2)  # noted before the totals are read
    assert step.funded.funded_by({"0-24", "9-99"}) == [ReformLocation("R1", 2)]
    assert step.funded.funded_by({"9-99"}) == []
    seeded = FundedReforms({ReformLocation("R0", 1): frozenset({"0-24"})})  # from the read model at start
    assert seeded.funded_by({"0-24"}) == [ReformLocation("R0", 1)]


def test_tick_interval_refuses_nonsense_with_one_line():
    assert tick_interval_s(None) == 60.0 and tick_interval_s("0.5") == 0.5
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(SystemExit, match="REFORMSPOR_MILEPAEL_TICK_S"):
            tick_interval_s(bad)


def test_read_model_knows_where_ticks_go_and_a_second_write_changes_nothing(tmp_path):
    state = done(registered(), "A", date(2026, 1, 21))
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    new_state, events, verdicts = core.reconcile(state, {}, now.date(), now)
    readmodel = ReadModel(f"sqlite:///{tmp_path / 'milepael.db'}")
    try:
        for _ in range(2):  # a redelivered checkpoint
            readmodel.save(new_state, verdicts, events, evaluated_at=now, partition=3)
            snapshot = {table.__tablename__: sorted(map(repr, Session(readmodel.engine).exec(select(table)).all()))
                        for table in TABLES}
            if _ == 0:
                first = snapshot
        assert snapshot == first
        assert readmodel.reform_locations() == [ReformLocation("R1", 3)]
        assert readmodel.reform_funding() == {ReformLocation("R1", 3): frozenset({"0-24"})}
    finally:
        readmodel.dispose()


def test_totals_follower_keeps_the_latest_per_line_and_dead_letters_the_rest():
    totals, dead = LineTotals(), []
    follower = TotalsFollower(Settings(topic_prefix="t."), totals, on_change=lambda lines: None,
                              dead_letter=lambda value, key, rejection: dead.append((value, key, rejection)))
    line = {"line_id": "0-24", "cells": [{"ministry": "KD", "phase": "utredning", "utbetalt_ore": 5}]}
    later = {"line_id": "0-24", "cells": [{"ministry": "KD", "phase": "utredning", "utbetalt_ore": 7}]}
    batches: list[set[str]] = []
    follower.on_change = batches.append
    for value in (json.dumps(line).encode(), b'{"line_id": 1}', None, json.dumps(later).encode()):
        follower.take(FollowedRecord(partition=0, offset=0, key=b"0-24", value=value, headers=()))
    follower.batch_read()
    follower.batch_read()  # nothing new read: no change reported
    assert batches == [{"0-24"}]
    assert totals.for_lines({"0-24", "9-99"})["0-24"]["utbetalt_ore_by_phase"] == {"utredning": 7}
    assert [(key, rejection.label) for _, key, rejection in dead] == [(b"0-24", "invalid_totals")] * 2
