"""The demo reform is valid input and drifts so that an adjustment fires (stage 1 only)."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

from services.milepael import core
from services.milepael.readmodel import ReadModel
from services.milepael.scenario import demo_events, reform_id_for, summary_lines
from services.shared.contract import parse_event

NOW = datetime(2026, 3, 14, 13, 30, tzinfo=timezone.utc)


def _run(now=NOW):
    events = [parse_event(e) for e in demo_events("0-24", now)]  # contract + ownership checks
    state = None
    utbetalt: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for event in events:
        if event.is_budget:
            if event.kind == "utbetalt":
                utbetalt[event.data.line_id][event.data.phase] += event.data.amount_ore
        else:
            state = core.apply(state, event)
    totals = {line: core.totals_summary({"line_id": line, "cells": [
        {"ministry": "KD", "phase": phase, "utbetalt_ore": amount} for phase, amount in phases.items()]})
        for line, phases in utbetalt.items()}
    return events, core.reconcile(state, totals, now.date(), now)


def test_demo_reform_is_valid_and_stage_one_needs_adjustment(tmp_path):
    events, (state, justering, verdicts) = _run()
    assert state["reform_id"] == reform_id_for("0-24") and len(state["stages"]) == 3
    assert {e.source_ministry for e in events} >= {"BFD", "KD", "HOD"}
    assert all(e.time <= NOW for e in events)
    bevilget = {(e.data.ministry, e.data.kap, e.data.post) for e in events if e.kind == "bevilget"}
    assert bevilget <= {("BFD", 846, 21), ("KD", 226, 21), ("HOD", 765, 21)}

    stage1 = verdicts["trinn-1-utredning"]
    assert stage1.status == "justering påkrevd"
    assert {r.code for r in stage1.reasons} >= {"milestone_overdue", "cost_tolerance", "time_tolerance"}
    assert stage1.ac_ore > stage1.ev_ore
    assert [e["data"]["stage_id"] for e in justering] == ["trinn-1-utredning"]
    assert not verdicts["trinn-2-utvikling"].adjustment_required
    assert not verdicts["trinn-3-implementering"].adjustment_required

    # What the demo prints, from the same document the API serves.
    readmodel = ReadModel(f"sqlite:///{tmp_path / 'milepael.db'}")
    readmodel.save(state, verdicts, justering)
    document = readmodel.get_reform(state["reform_id"])
    assert any(s["adjustment_required"] for s in document["stages"])
    text = "\n".join(summary_lines(document))
    assert "justering påkrevd" in text and "Høringsnotat" in text and "SPI(t)" in text
    assert "eac_bac_over_cpi" in text


def test_same_day_reruns_publish_identical_events():
    later = NOW.replace(hour=20)
    assert demo_events("0-24", NOW) == demo_events("0-24", later)
