"""Cells keep their money per funding kap/post, and årsavslutning closes each post by its own rule
(Bevilgningsreglementet § 5, R-110): a cell funded by a «kan overføres» post and a post 01 no longer lapses whole."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st

from services.budsjett import core
from services.budsjett.catalogue import Catalogue, CatalogueItem
from services.budsjett.replay import LineStores
from tests.unit.test_budsjett_core import (Crash, CrashingStore, bevilget, closing, ev, korrigert, omdisponert,
                                          utbetalt)

YEARS = (2025, 2026)
# (ministry, kap, post, stikkord): each ministry funds from posts with different year-end rules
POSTS = (("BFD", 840, 21, "kan overføres"), ("BFD", 842, 1, ""), ("BFD", 844, 70, "overslagsbevilgning"),
         ("BFD", 840, 70, ""), ("KD", 226, 21, "kan overføres"), ("KD", 226, 1, ""))


def catalogue() -> Catalogue:
    return Catalogue([CatalogueItem(year, kap, post, ministry, 8 if ministry == "BFD" else 2, stikkord=stikkord,
                                    kan_overfores="kan overføres" in stikkord,
                                    overslagsbevilgning="overslagsbevilgning" in stikkord)
                      for year in (*YEARS, 2027) for ministry, kap, post, stikkord in POSTS])


def forpliktet(event_id, line, ministry, phase, cid, nok, kap=None, post=None, year=2026):
    data = {"line_id": line, "ministry": ministry, "phase": phase, "commitment_id": cid, "amount_nok": nok,
            "fiscal_year": year, **({"kap": kap, "post": post} if kap else {})}
    return ev("forpliktet", ministry, data, event_id)


def posts_of(line, ministry, phase, year):
    """{"kap.post": (overfort_inn, bortfalt, carry_rule)} of one cell."""
    cell = line["cells"][core.cell_key(ministry, phase, year)]
    return {key: (p["overfort_inn_ore"], p["bortfalt_ore"], p["carry_rule"]) for key, p in cell["posts"].items()}


# --- table: closing a cell funded from several posts -------------------------------------------------------------

@pytest.mark.parametrize("events, expected_posts, expected_cell", [
    # «kan overføres» (§ 5) carries all 600 unspent; post 01 at most 5 % of its 1 000: 50 of 800
    ([bevilget("b1", "0-24", "BFD", "utredning", "1000.00", kap=840, post=21),
      bevilget("b2", "0-24", "BFD", "utredning", "1000.00", kap=842, post=1),
      utbetalt("u1", "0-24", "BFD", "utredning", "400.00", kap=840, post=21),
      utbetalt("u2", "0-24", "BFD", "utredning", "200.00", kap=842, post=1)],
     {"840.21": (60000, 0, "kan_overfores"), "842.1": (5000, 75000, "drift_5_prosent")},
     (65000, 75000, "per_post")),
    # an overslagsbevilgning and another post lapse in the same cell where «kan overføres» carries
    ([bevilget("b1", "0-24", "BFD", "utredning", "300.00", kap=840, post=21),
      bevilget("b2", "0-24", "BFD", "utredning", "500.00", kap=844, post=70),
      bevilget("b3", "0-24", "BFD", "utredning", "700.00", kap=840, post=70)],
     {"840.21": (30000, 0, "kan_overfores"), "844.70": (0, 50000, "overslagsbevilgning"),
      "840.70": (0, 70000, "bortfaller")},
     (30000, 120000, "per_post")),
    # overspending one post does not eat another post's carry: it stays with the closed year as negative lapse
    ([bevilget("b1", "0-24", "BFD", "utredning", "1000.00", kap=840, post=21),
      bevilget("b2", "0-24", "BFD", "utredning", "100.00", kap=842, post=1),
      utbetalt("u1", "0-24", "BFD", "utredning", "150.00", kap=842, post=1)],
     {"840.21": (100000, 0, "kan_overfores"), "842.1": (0, -5000, "overskredet")},
     (100000, -5000, "per_post")),
    # a commitment keeps its post: released and paid against it without naming one, it draws on that post
    ([bevilget("b1", "0-24", "BFD", "utredning", "1000.00", kap=840, post=21),
      bevilget("b2", "0-24", "BFD", "utredning", "1000.00", kap=842, post=1),
      forpliktet("f1", "0-24", "BFD", "utredning", "K1", "900.00", kap=842, post=1),
      utbetalt("u1", "0-24", "BFD", "utredning", "900.00", cid="K1")],
     {"840.21": (100000, 0, "kan_overfores"), "842.1": (5000, 5000, "drift_5_prosent")},
     (105000, 5000, "per_post")),
])
def test_closing_a_cell_funded_by_several_posts_carries_each_post_by_its_own_rule(events, expected_posts,
                                                                                   expected_cell):
    store, outcomes = core.run_log([*events, closing("c1", "0-24", "BFD", 2026)], catalogue())
    assert [o.status for o in outcomes] == ["applied"] * len(outcomes), [o.reasons for o in outcomes]
    line = store["line:0-24"]
    assert posts_of(line, "BFD", "utredning", 2027) == expected_posts
    cell = line["cells"]["BFD|utredning|2027"]
    assert (cell["overfort_inn_ore"], cell["bortfalt_ore"], cell["carry_rule"]) == expected_cell


def test_kan_overfores_is_capped_by_the_same_posts_appropriation_this_year_and_last():
    store, outcomes = core.run_log([
        bevilget("b25", "0-24", "BFD", "utredning", "1000.00", kap=840, post=21, year=2025),
        bevilget("d25", "0-24", "BFD", "utredning", "5000.00", kap=842, post=1, year=2025),
        closing("c25", "0-24", "BFD", 2025),
        bevilget("b26", "0-24", "BFD", "utredning", "100.00", kap=840, post=21),
        bevilget("d26", "0-24", "BFD", "utredning", "100.00", kap=842, post=1),
        closing("c26", "0-24", "BFD", 2026),
    ], catalogue())
    assert all(o.status == "applied" for o in outcomes), [o.reasons for o in outcomes]
    line = store["line:0-24"]
    assert posts_of(line, "BFD", "utredning", 2026) == {"840.21": (100000, 0, "kan_overfores"),
                                                        "842.1": (25000, 475000, "drift_5_prosent")}
    # 840.21: 1 100 unspent, cap 100 + 1 000 (its own 2025 appropriation, not post 01's 5 000): all carries.
    # 842.1: 350 unspent (100 + 250 carried in), at most 5 % of this year's 100.
    assert posts_of(line, "BFD", "utredning", 2027) == {"840.21": (110000, 0, "kan_overfores"),
                                                        "842.1": (500, 34500, "drift_5_prosent")}


def test_spending_without_a_kap_post_in_a_cell_funded_by_several_posts_is_refused_with_the_posts():
    _, outcomes = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "1000.00", kap=840, post=21),
        bevilget("b2", "0-24", "BFD", "utredning", "1000.00", kap=842, post=1),
        utbetalt("u1", "0-24", "BFD", "utredning", "10.00"),
    ], catalogue())
    assert outcomes[-1].status == "rejected"
    assert outcomes[-1].reasons[0] == (
        "BFD/utredning/2026 on line 0-24 is funded by kap 840 post 21, kap 842 post 1: name the kap/post "
        "(data.kap, data.post) this is booked to, since each post carries over or lapses by its own rule at year end")


def test_reallocated_money_keeps_its_post_and_closes_by_that_posts_rule_where_it_went():
    store, outcomes = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "100.00", kap=840, post=21),
        bevilget("b2", "0-24", "BFD", "utredning", "1000.00", kap=842, post=1),
        # 150: all of 840.21's 100 disponibelt (kap/post order), then 50 from 842.1
        omdisponert("o1", "0-24", ("BFD", "utredning"), ("BFD", "utvikling"), "150.00"),
        omdisponert("o2", "0-24", ("BFD", "utredning"), ("BFD", "utvikling"), "50.00", to_line="ung-1"),
        closing("c1", "0-24", "BFD", 2026),
        closing("c2", "ung-1", "FIN", 2026),
    ], catalogue())
    assert all(o.status == "applied" for o in outcomes), [o.reasons for o in outcomes]
    line = store["line:0-24"]
    moved = line["cells"]["BFD|utvikling|2026"]["posts"]
    assert {k: p["omdisponert_ore"] for k, p in moved.items()} == {"840.21": 10000, "842.1": 5000}
    assert posts_of(line, "BFD", "utvikling", 2027) == {"840.21": (10000, 0, "kan_overfores"),
                                                        "842.1": (250, 4750, "drift_5_prosent")}
    other = store["line:ung-1"]["cells"]["BFD|utvikling|2026"]["posts"]
    assert {k: p["omdisponert_ore"] for k, p in other.items()} == {"842.1": 5000}


def test_a_correction_reverses_on_the_posts_of_the_original():
    store, _ = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "100.00", kap=840, post=21),
        bevilget("b2", "0-24", "BFD", "utredning", "1000.00", kap=842, post=1),
        omdisponert("o1", "0-24", ("BFD", "utredning"), ("KD", "utvikling"), "150.00", to_line="ung-1"),
        korrigert("k1", "0-24", "BFD", "o1"),
    ], catalogue())
    for line_id in ("0-24", "ung-1"):
        for cell in store[f"line:{line_id}"]["cells"].values():
            assert all(p["omdisponert_ore"] == 0 for p in cell["posts"].values())


def test_a_cell_stored_before_posts_were_kept_reads_as_its_single_funding_post():
    old_cell = {name: 0 for name in core.AMOUNT_FIELDS} | {
        "bevilget_ore": 100000, "overcommitted": False, "overspent": False, "funding_posts": ["840.21"],
        "overslagsbevilgning": False, "kan_overfores": True, "carry_rule": None}
    store = {"line:0-24": {**core.new_line("0-24"), "cells": {"BFD|utredning|2026": old_cell}}}
    outcome = core.process(store, 0, closing("c1", "0-24", "BFD", 2026), catalogue())
    assert outcome.status == "applied"
    assert posts_of(store["line:0-24"], "BFD", "utredning", 2027) == {"840.21": (100000, 0, "kan_overfores")}


# --- properties ----------------------------------------------------------------------------------------------------

LINES = ("0-24", "ung-1")
PHASES = ("utredning", "utvikling")
amounts = st.integers(min_value=1, max_value=10**6).map(lambda kr: f"{kr}.{kr % 100:02d}")
posts = st.sampled_from(POSTS)


@st.composite
def multi_post_logs(draw):
    """Two lines, two years, cells funded from several posts with different rules; spending names its post or not."""
    events, commitments = [], []
    for i in range(draw(st.integers(min_value=1, max_value=30))):
        ministry, kap, post, _ = draw(posts)
        line, phase, year = draw(st.sampled_from(LINES)), draw(st.sampled_from(PHASES)), draw(st.sampled_from(YEARS))
        named = draw(st.booleans())
        choice = draw(st.sampled_from(["bevilget", "bevilget", "omd", "omd_line", "forpliktet", "utbetalt",
                                       "korrigert", "dup"]))
        eid = f"e{i}"
        if choice == "bevilget":
            events.append(bevilget(eid, line, ministry, phase, draw(amounts), kap=kap, post=post, year=year))
        elif choice in ("omd", "omd_line"):
            other_phase = [p for p in PHASES if p != phase][0]
            to_line = [x for x in LINES if x != line][0] if choice == "omd_line" else None
            events.append(omdisponert(eid, line, (ministry, phase), (ministry, other_phase), draw(amounts),
                                      to_line=to_line, year=year))
        elif choice == "forpliktet":
            commitments.append((line, ministry, phase, f"K{i}", year))
            events.append(forpliktet(eid, line, ministry, phase, f"K{i}", draw(amounts),
                                     kap=kap if named else None, post=post, year=year))
        elif choice == "utbetalt":
            if commitments and draw(st.booleans()):
                line, ministry, phase, cid, year = draw(st.sampled_from(commitments))
                events.append(utbetalt(eid, line, ministry, phase, draw(amounts), cid=cid, year=year))
            else:
                events.append(utbetalt(eid, line, ministry, phase, draw(amounts), kap=kap if named else None,
                                       post=post, year=year))
        elif choice == "korrigert" and events:
            target = draw(st.sampled_from(events))
            if target.kind != "korrigert":
                events.append(korrigert(eid, target.key, target.source_ministry, target.id))
        elif choice == "dup" and events:
            events.append(draw(st.sampled_from(events)))
    # then close both years of both lines, in order (FIN may close any line)
    return events + [closing(f"c{line}{year}", line, "FIN", year) for year in YEARS for line in LINES]


def assert_cells_are_the_sum_of_their_posts(store):
    for line in core.lines_in(store).values():
        for key, cell in line["cells"].items():
            for name in core.AMOUNT_FIELDS:
                assert cell[name] == sum(p[name] for p in cell["posts"].values()), (key, name)


def unspent_per_post(line, year):
    return {(key, post): p["bevilget_ore"] + p["omdisponert_ore"] + p["overfort_inn_ore"] - p["utbetalt_ore"]
            for key, cell in line["cells"].items() if core.split_cell_key(key)[2] == year
            for post, p in cell["posts"].items()}


@settings(max_examples=150, deadline=None)
@given(multi_post_logs())
def test_cell_amounts_are_the_sum_of_their_post_amounts_after_any_mix_of_events(events):
    store, _ = core.run_log(events, catalogue())
    assert_cells_are_the_sum_of_their_posts(store)


@settings(max_examples=150, deadline=None)
@given(multi_post_logs())
def test_carried_plus_lapsed_is_the_unspent_amount_of_every_post_and_every_cell_to_the_ore(events):
    bookings = [e for e in events if e.kind != "arsavslutning"]
    store, _ = core.run_log(bookings, catalogue())
    for offset, year in enumerate(YEARS, start=len(bookings) * 2):
        for line_id in sorted(core.lines_in(store)):
            line = store[f"line:{line_id}"]
            unspent = unspent_per_post(line, year)
            before = {(key, post): (p["overfort_inn_ore"], p["bortfalt_ore"])
                      for key, cell in line["cells"].items() for post, p in cell["posts"].items()}
            outcome = core.process(store, offset, closing(f"c{line_id}{year}", line_id, "FIN", year), catalogue())
            assert outcome.status == "applied", outcome.reasons
            after = store[f"line:{line_id}"]["cells"]
            per_cell: dict[str, int] = {}
            for (key, post), amount in unspent.items():
                ministry, phase, _ = core.split_cell_key(key)
                next_key = core.cell_key(ministry, phase, year + 1)
                moved = after[next_key]["posts"][post]
                old = before.get((next_key, post), (0, 0))
                assert moved["overfort_inn_ore"] - old[0] + moved["bortfalt_ore"] - old[1] == amount
                per_cell[next_key] = per_cell.get(next_key, 0) + amount
            for next_key, amount in per_cell.items():
                old_cell = line["cells"].get(next_key, core.new_cell())
                assert (after[next_key]["overfort_inn_ore"] - old_cell["overfort_inn_ore"]
                        + after[next_key]["bortfalt_ore"] - old_cell["bortfalt_ore"]) == amount
    assert_cells_are_the_sum_of_their_posts(store)


@settings(max_examples=100, deadline=None)
@given(multi_post_logs())
def test_replay_from_the_log_one_store_per_line_gives_the_same_posts(events):
    store, outcomes = core.run_log(events, catalogue())
    # The log as Kafka holds it: what was published, then the cross-line credits the worker sent, as JSON.
    log = [*events, *(send for outcome in outcomes for send in outcome.sends)]
    stores = LineStores()
    for offset, message in enumerate(log):
        parsed = core.parse_message(json.dumps(message.to_wire()))
        core.process(stores.of(parsed.key), offset, parsed, catalogue())
    assert stores.lines() == core.lines_in(store)


def test_a_transfer_with_a_post_split_that_does_not_add_up_is_refused():
    wire = {"specversion": "1.0", "id": "x#to", "source": "urn:no:dep:BFD",
            "type": core.TRANSFER_TYPE, "time": datetime(2026, 3, 1, tzinfo=timezone.utc).isoformat(),
            "data": {"line_id": "ung-1", "ministry": "BFD", "phase": "utredning", "fiscal_year": 2026,
                     "amount_ore": 100, "origin_id": "x", "origin_line_id": "0-24", "by_post": {"840.21": 99}}}
    with pytest.raises(core.ContractError) as raised:
        core.parse_message(json.dumps(wire))
    assert "data.by_post" in str(raised.value.problems)


@settings(max_examples=150, deadline=None)
@given(multi_post_logs(), st.data())
def test_redelivery_after_partial_writes_gives_the_same_posts(events, data):
    """Crash at any write of any message, resume from an earlier committed offset: the same cells and posts."""
    expected, _ = core.run_log(events, catalogue())
    log = list(events)
    crash_at = data.draw(st.integers(min_value=0, max_value=len(log) - 1))
    allowed = data.draw(st.integers(min_value=0, max_value=5))
    committed = data.draw(st.integers(min_value=0, max_value=crash_at))
    store: dict = {}
    offset, crashed = 0, False
    while offset < len(log):
        if offset == crash_at and not crashed:
            crashed, crashing = True, CrashingStore(store, allowed)
            try:
                outcome = core.process(crashing, offset, log[offset], catalogue())
            except Crash:
                store, offset = dict(crashing), committed  # the changelog keeps what was written; Kafka redelivers
                continue
            store = dict(crashing)
        else:
            outcome = core.process(store, offset, log[offset], catalogue())
        if outcome.status in ("applied", "redelivered"):
            log.extend(outcome.sends)  # a redelivery re-sends; the receiver dedups
        offset += 1
    cells = {line_id: line["cells"] for line_id, line in core.lines_in(store).items()}
    assert cells == {line_id: line["cells"] for line_id, line in core.lines_in(expected).items()}
