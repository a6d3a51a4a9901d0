"""The read model on SQLite and a real PostgreSQL: idempotent writes, totals equal to the ledger, as_of."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine

from services.budsjett import core
from services.budsjett.readmodel import ReadModel
from tests.unit.test_budsjett_core import (T0, _year_end_catalogue, bevilget, closing, ev, forpliktet,
                                          omdisponert, utbetalt)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'budsjett.db'}"
    return request.getfixturevalue("postgres_url")


def test_read_model_is_idempotent_and_matches_the_ledger(db_url):
    events = [
        bevilget("b1", "0-24", "BFD", "utredning", "500000000000.00", minutes=0),  # 5·10¹¹ NOK fits
        bevilget("b2", "0-24", "KD", "utvikling", "1250000.00", minutes=10),
        forpliktet("f1", "0-24", "KD", "utvikling", "K1", "2000000.00"),
        utbetalt("u1", "0-24", "KD", "utvikling", "300000.00", cid="K1"),
        omdisponert("o1", "0-24", ("BFD", "utredning"), ("HOD", "utredning"), "1000.00", to_line="ung-1"),
        ev("korrigert", "BFD", {"line_id": "0-24", "corrects_id": "b1", "reason": "feil kap"}, "k1", minutes=30),
    ]
    store: dict = {}
    model = ReadModel(db_url)
    log = list(events)
    for offset, message in enumerate(log):
        outcome = core.process(store, offset, message)
        batch = model.new_batch()
        batch.add(outcome, message, 0, offset)
        model.write(batch)
        model.write(batch)  # a redelivered batch changes nothing
        log.extend(outcome.sends)
    assert model.event_count() == len(log)
    assert model.event_count("0-24") == len(events)

    # The line records HTTP serves are the ledger's own (but for the offset, which is the worker's business).
    assert model.lines() == {line_id: {**line, "last_offset": core.NEVER}
                             for line_id, line in core.lines_in(store).items()}
    assert list(model.lines("ung-1")) == ["ung-1"] and model.line_count() == 2
    for line_id, line in core.lines_in(store).items():
        expected = core.line_totals(line)["cells"]
        stored = [{k: c[k] for k in ("ministry", "phase", "fiscal_year", *core.TOTAL_FIELDS)}
                  for c in model.cells(line_id)]
        assert stored == expected
        far_future = datetime(2100, 1, 1, tzinfo=timezone.utc)
        assert model.cells_as_of(line_id, far_future) == expected

    before_kd = model.cells_as_of("0-24", T0.replace(minute=5))
    assert {c["ministry"]: c["bevilget_ore"] for c in before_kd} == {"BFD": 50000000000000, "KD": 0}
    assert sum(c["bevilget_ore"] for c in model.cells_as_of("0-24", T0.replace(minute=31))) == 125000000
    trail = model.events("0-24")
    assert {e["event_id"] for e in trail} == {e.id for e in events}
    assert next(e for e in trail if e["event_id"] == "b1")["corrected_by"] == "k1"
    # Times come back as they were published (the batch binds them itself; the queries compare them).
    assert {e["event_id"]: e["time"] for e in trail} == {e.id: core.rfc3339(e.time) for e in events}
    kd = next(c for c in model.cells("0-24") if c["ministry"] == "KD")
    assert kd["overcommitted"] is True and model.flags("0-24")[0]["flag"] == "overcommitted"
    model.close()


def test_years_are_separate_cells_in_the_read_model_and_its_audit_trail(db_url):
    events = [
        bevilget("b26", "0-24", "BFD", "utredning", "1250000.00", year=2026),
        bevilget("b27", "0-24", "BFD", "utredning", "3000000.00", year=2027),
        utbetalt("u27", "0-24", "BFD", "utredning", "100.00", year=2027),
        ev("korrigert", "BFD", {"line_id": "0-24", "corrects_id": "b26", "reason": "feil år"}, "k1", minutes=30),
    ]
    store: dict = {}
    model = ReadModel(db_url)
    batch = model.new_batch()
    for offset, message in enumerate(events):
        batch.add(core.process(store, offset, message), message, 0, offset)
    model.write(batch)
    by_year = {c["fiscal_year"]: c for c in model.cells("0-24")}
    assert by_year[2026]["bevilget_ore"] == 0 and by_year[2027]["bevilget_ore"] == 300000000
    assert by_year[2027]["disponibelt_ore"] == 300000000 - 10000
    assert model.lines("0-24") == {"0-24": {**store["line:0-24"], "last_offset": core.NEVER}}
    far_future = datetime(2100, 1, 1, tzinfo=timezone.utc)
    assert [c["fiscal_year"] for c in model.cells_as_of("0-24", far_future, 2027)] == [2027]
    before_fix = model.cells_as_of("0-24", T0.replace(minute=5), 2026)
    assert [c["bevilget_ore"] for c in before_fix] == [125000000]
    trail = {e["event_id"]: e for e in model.events("0-24")}
    assert trail["k1"]["fiscal_year"] == 2026  # a correction reverses in the year of the original
    assert [d["fiscal_year"] for d in trail["u27"]["deltas"]] == [2027]
    model.close()


def test_a_closing_shows_the_carried_and_lapsed_amounts_and_the_rule_in_the_next_year(db_url):
    events = [
        bevilget("b26", "0-24", "BFD", "utvikling", "1000.00", kap=842, post=1),
        utbetalt("u26", "0-24", "BFD", "utvikling", "200.00"),
        closing("c26", "0-24", "FIN", 2026),
    ]
    store: dict = {}
    model = ReadModel(db_url)
    batch = model.new_batch()
    for offset, message in enumerate(events):
        batch.add(core.process(store, offset, message, _year_end_catalogue()), message, 0, offset)
    model.write(batch)
    assert model.lines("0-24") == {"0-24": {**store["line:0-24"], "last_offset": core.NEVER}}
    cell, = [c for c in model.cells("0-24") if c["fiscal_year"] == 2027]
    # post 01 carries at most 5 % of 1 000 kr; the rest of the 800 kr unspent lapses.
    assert (cell["overfort_inn_ore"], cell["bortfalt_ore"], cell["carry_rule"]) == (5000, 75000, "drift_5_prosent")
    assert cell["bevilget_ore"] == 0 and cell["disponibelt_ore"] == 5000
    far_future = datetime(2100, 1, 1, tzinfo=timezone.utc)
    as_of, = model.cells_as_of("0-24", far_future, 2027)
    assert (as_of["overfort_inn_ore"], as_of["bortfalt_ore"]) == (5000, 75000)
    assert {e["event_id"]: e["fiscal_year"] for e in model.events("0-24")}["c26"] == 2026
    model.close()


def test_a_read_model_from_before_the_year_layout_is_refused_in_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE budsjett_cell (line_id TEXT, ministry TEXT, phase TEXT, "
                                   "PRIMARY KEY (line_id, ministry, phase))")
    engine.dispose()
    with pytest.raises(RuntimeError, match="from before cells had a fiscal year, year-end figures and amounts per "
                                           "kap/post: rebuild it"):
        ReadModel(url)


def test_a_read_model_from_before_amounts_per_kap_post_is_refused_in_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'year-layout.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:  # the year layout: cells with fiscal_year and carry_rule, effects without kap
        connection.exec_driver_sql("CREATE TABLE budsjett_cell (line_id TEXT, ministry TEXT, phase TEXT, "
                                   "fiscal_year INTEGER, carry_rule TEXT, PRIMARY KEY (line_id, ministry, phase, "
                                   "fiscal_year))")
        connection.exec_driver_sql("CREATE TABLE budsjett_effect (event_id TEXT, seq INTEGER, line_id TEXT, "
                                   "ministry TEXT, phase TEXT, fiscal_year INTEGER, PRIMARY KEY (event_id, seq))")
    engine.dispose()
    with pytest.raises(RuntimeError, match="amounts per kap/post: rebuild it into a fresh database"):
        ReadModel(url)


def _sum(rows, name):
    return sum(row[name] for row in rows)


def test_by_post_in_the_line_document_adds_up_to_the_totals_per_year_and_per_cell(db_url):
    from services.budsjett.http import line_document
    from tests.unit.test_budsjett_perpost import catalogue

    events = [
        bevilget("b1", "0-24", "BFD", "utredning", "1000.00", kap=840, post=21, year=2025),
        bevilget("b2", "0-24", "BFD", "utredning", "2000.00", kap=842, post=1, year=2025),
        utbetalt("u1", "0-24", "BFD", "utredning", "300.00", kap=842, post=1, year=2025),
        closing("c25", "0-24", "FIN", 2025),
        bevilget("b3", "0-24", "BFD", "utredning", "500.00", kap=840, post=21),
        bevilget("b4", "0-24", "KD", "utvikling", "700.00", kap=226, post=21),
        omdisponert("o1", "0-24", ("BFD", "utredning"), ("BFD", "utvikling"), "1200.00"),
    ]
    store: dict = {}
    model = ReadModel(db_url)
    batch = model.new_batch()
    for offset, message in enumerate(events):
        outcome = core.process(store, offset, message, catalogue())
        assert outcome.status == "applied", outcome.reasons
        batch.add(outcome, message, 0, offset)
    model.write(batch)
    model.write(batch)  # idempotent: the per-post rows are upserts, the per-post deltas keyed by event
    line = model.lines("0-24")["0-24"]
    assert line == {**store["line:0-24"], "last_offset": core.NEVER}
    figures = core.TOTAL_FIELDS
    document = line_document(line)
    for name in figures:
        assert _sum(document["by_post"].values(), name) == document["totals"][name]
        for year, posts in document["by_fiscal_year_and_post"].items():
            assert _sum(posts.values(), name) == document["by_fiscal_year"][year][name]
        for cell in document["cells"]:
            assert _sum(cell["posts"], name) == cell[name]
    assert document["by_fiscal_year_and_post"]["2026"]["840.21"]["overfort_inn_nok"] == "1000.00"
    assert document["by_fiscal_year_and_post"]["2026"]["842.1"]["overfort_inn_nok"] == "100.00"  # 5 % of 2 000
    assert document["by_fiscal_year_and_post"]["2026"]["842.1"]["bortfalt_nok"] == "1600.00"
    one_year = line_document(line, fiscal_year=2026)
    assert "by_fiscal_year_and_post" not in one_year
    for name in figures:
        assert _sum(one_year["by_post"].values(), name) == one_year["totals"][name]
    # as of a moment, the per-post deltas give the same rollup as the snapshot
    far_future = datetime(2100, 1, 1, tzinfo=timezone.utc)
    as_of = line_document(line, cells=model.cells_as_of("0-24", far_future, 2026), fiscal_year=2026,
                          post_rows=model.posts_as_of("0-24", far_future, 2026))
    assert as_of["by_post"] == one_year["by_post"]
    # the audit trail names the kap/post of every delta: 1 200 taken from 840.21's 1 500 disponibelt (500 + 1 000 carried)
    deltas = [d for e in model.events("0-24") if e["event_id"] == "o1" for d in e["deltas"]]
    assert {(d["phase"], d["kap"], d["post"]): d["omdisponert_ore"] for d in deltas} == {
        ("utredning", 840, 21): -120000, ("utvikling", 840, 21): 120000}
    model.close()
