"""The thin shell's own rules: metric names and labels (dashboards and alerts depend on them), clock, totals input."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.milepael import core
from services.milepael.app import Metrics
from services.milepael.feeds import Clock
from services.shared.jsonio import loads_strict
from tests.unit.test_milepael_core import done, registered

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
