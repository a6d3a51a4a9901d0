"""The ledger's pure core: totals to the øre, exactly once, through partial writes."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from services.budsjett import core
from services.budsjett.catalogue import Catalogue, CatalogueItem
from services.milepael.core import totals_summary
from services.shared.contract import ContractError, make_event, parse_event

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
MINISTRIES = ("BFD", "KD", "HOD")
PHASES = ("utredning", "utvikling", "implementering")
LINES = ("0-24", "ung-1")


def ev(kind, ministry, data, event_id, minutes=0):
    return parse_event(make_event(kind, ministry, data, event_id, T0 + timedelta(minutes=minutes)))


def bevilget(event_id, line, ministry, phase, nok, kap=840, post=70, minutes=0, year=2026):
    return ev("bevilget", ministry, {"line_id": line, "ministry": ministry, "phase": phase, "amount_nok": nok,
                                     "kap": kap, "post": post, "fiscal_year": year}, event_id, minutes)


def omdisponert(event_id, line, from_, to, nok, to_line=None, year=2026):
    to_side = {"ministry": to[0], "phase": to[1], **({"line_id": to_line} if to_line else {})}
    return ev("omdisponert", from_[0], {"line_id": line, "amount_nok": nok, "from": {"ministry": from_[0], "phase": from_[1]},
                                        "to": to_side, "fiscal_year": year}, event_id)


def forpliktet(event_id, line, ministry, phase, cid, nok, year=2026):
    return ev("forpliktet", ministry, {"line_id": line, "ministry": ministry, "phase": phase, "commitment_id": cid,
                                       "amount_nok": nok, "fiscal_year": year}, event_id)


def frigitt(event_id, line, ministry, phase, cid, nok, year=2026):
    return ev("forpliktelse_frigitt", ministry, {"line_id": line, "ministry": ministry, "phase": phase,
                                                 "commitment_id": cid, "amount_nok": nok, "fiscal_year": year}, event_id)


def utbetalt(event_id, line, ministry, phase, nok, cid=None, kap=None, post=None, year=2026):
    data = {"line_id": line, "ministry": ministry, "phase": phase, "amount_nok": nok, "fiscal_year": year}
    if cid:
        data["commitment_id"] = cid
    if kap:
        data.update(kap=kap, post=post)
    return ev("utbetalt", ministry, data, event_id)


def korrigert(event_id, line, ministry, corrects):
    return ev("korrigert", ministry, {"line_id": line, "corrects_id": corrects, "reason": "feilføring"}, event_id)


def totals(store):
    return {line_id: core.line_totals(line)["cells"] for line_id, line in core.lines_in(store).items()}


def grand_total(store, year=None):
    all_cells = [cell for cells in totals(store).values() for cell in cells if year in (None, cell["fiscal_year"])]
    return core.sum_amounts(all_cells)


# --- examples -----------------------------------------------------------------------

def test_payment_against_commitment_reduces_available_only_by_uncovered_part():
    store, _ = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "1000.00"),
        forpliktet("f1", "0-24", "BFD", "utredning", "K1", "600.00"),
        utbetalt("u1", "0-24", "BFD", "utredning", "700.00", cid="K1"),
    ])
    cell, = core.line_totals(store["line:0-24"])["cells"]
    assert cell["forpliktet_ore"] == 0  # the 600 commitment is fully drawn down
    assert cell["utbetalt_ore"] == 70000
    assert cell["disponibelt_ore"] == 100000 - 70000


def test_duplicate_id_is_applied_once_and_conflict_is_detected():
    first = bevilget("b1", "0-24", "BFD", "utredning", "1000.00")
    changed = bevilget("b1", "0-24", "BFD", "utredning", "2000.00")
    store, outcomes = core.run_log([first, first, changed])
    assert [o.status for o in outcomes] == ["applied", "duplicate", "conflict"]
    assert "already used for different content" in outcomes[2].reasons[0]
    assert grand_total(store)["bevilget_ore"] == 100000


def test_duplicate_is_told_by_content_not_by_how_it_was_written_and_older_id_records_still_count():
    first = bevilget("b1", "0-24", "BFD", "utredning", "1000.00")
    same_written_otherwise = bevilget("b1", "0-24", "BFD", "utredning", "1000")
    changed = bevilget("b1", "0-24", "BFD", "utredning", "1000.01")
    store, outcomes = core.run_log([first, same_written_otherwise, changed])
    assert [o.status for o in outcomes] == ["applied", "duplicate", "conflict"]
    # An id record written before records kept a digest (the SHA-256 of the canonical wire form).
    older = {key: value for key, value in store["id:b1"].items() if key != "digest"}
    store["id:b1"] = {**older, "hash": first.content_hash}
    assert core.process(store, 5, same_written_otherwise).status == "duplicate"
    assert core.process(store, 6, changed).status == "conflict"
    assert grand_total(store)["bevilget_ore"] == 100000


def test_correction_of_unknown_id_is_rejected_with_reason():
    _, outcomes = core.run_log([korrigert("k1", "0-24", "BFD", "nope")])
    assert outcomes[0].status == "rejected"
    assert "corrects_id nope is unknown" in outcomes[0].reasons[0]


def test_correction_only_once_and_only_by_original_ministry():
    store, outcomes = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "1000.00"),
        korrigert("k-kd", "0-24", "KD", "b1"),
        korrigert("k1", "0-24", "BFD", "b1"),
        korrigert("k2", "0-24", "BFD", "b1"),
    ])
    assert [o.status for o in outcomes] == ["applied", "rejected", "applied", "rejected"]
    assert "only that ministry may correct it" in outcomes[1].reasons[0]
    assert "already corrected by k1" in outcomes[3].reasons[0]
    assert grand_total(store)["bevilget_ore"] == 0


def test_overcommitment_is_recorded_and_flagged_not_refused():
    store, outcomes = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "100.00"),
        forpliktet("f1", "0-24", "BFD", "utredning", "K1", "150.00"),
        frigitt("r1", "0-24", "BFD", "utredning", "K1", "60.00"),
    ])
    assert [o.status for o in outcomes] == ["applied", "applied", "applied"]
    assert outcomes[1].flags[0]["flag"] == "overcommitted" and outcomes[1].flags[0]["raised"] is True
    assert outcomes[2].flags[0]["raised"] is False  # back within the appropriation
    assert core.line_totals(store["line:0-24"])["cells"][0]["forpliktet_ore"] == 9000


def test_cross_line_reallocation_moves_money_and_its_correction_moves_it_back():
    store, outcomes = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "1000.00"),
        omdisponert("o1", "0-24", ("BFD", "utredning"), ("BFD", "utvikling"), "400.00", to_line="ung-1"),
    ])
    assert outcomes[1].sends[0].id == "o1#to"
    assert core.line_totals(store["line:ung-1"])["totals"]["disponibelt_ore"] == 40000
    assert core.line_totals(store["line:0-24"])["totals"]["disponibelt_ore"] == 60000
    store2, _ = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "1000.00"),
        omdisponert("o1", "0-24", ("BFD", "utredning"), ("BFD", "utvikling"), "400.00", to_line="ung-1"),
        korrigert("k1", "0-24", "BFD", "o1"),
    ])
    assert core.line_totals(store2["line:ung-1"])["totals"]["omdisponert_ore"] == 0
    assert core.line_totals(store2["line:0-24"])["totals"]["disponibelt_ore"] == 100000


def test_redelivered_cross_line_reallocation_resends_the_credit_which_the_receiver_dedups():
    store: dict = {}
    source = omdisponert("o1", "0-24", ("BFD", "utredning"), ("BFD", "utvikling"), "400.00", to_line="ung-1")
    first = core.process(store, 0, source)
    core.process(store, 1, first.sends[0])
    again = core.process(store, 0, source)  # redelivery of the same offset
    assert again.status == "redelivered" and again.sends == first.sends
    assert core.process(store, 2, again.sends[0]).status == "duplicate"
    assert core.line_totals(store["line:ung-1"])["totals"]["omdisponert_ore"] == 40000


def _catalogue():
    return Catalogue([
        CatalogueItem(2026, 840, 21, "BFD", 8, stikkord="kan nyttes under post 70",
                      usable_under=frozenset({(840, 70)})),
        CatalogueItem(2026, 840, 70, "BFD", 8, stikkord="kan nyttes under post 21", usable_under=frozenset({(840, 21)})),
        CatalogueItem(2026, 842, 1, "BFD", 8),
        CatalogueItem(2026, 228, 70, "KD", 2, stikkord="overslagsbevilgning", overslagsbevilgning=True),
    ])


def test_catalogue_rejects_unknown_post_and_other_ministrys_post():
    _, outcomes = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "1.00", kap=840, post=99),
        bevilget("b2", "0-24", "BFD", "utredning", "1.00", kap=228, post=70),
        bevilget("b3", "0-24", "BFD", "utredning", "1.00", kap=840, post=70),
    ], _catalogue())
    assert [o.status for o in outcomes] == ["rejected", "rejected", "applied"]
    assert "does not exist in the 2026 budget catalogue" in outcomes[0].reasons[0]
    assert "belongs to KD, not BFD" in outcomes[1].reasons[0]


def test_pooled_posts_may_fund_each_other_but_not_others():
    _, outcomes = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "100.00", kap=840, post=70),
        utbetalt("u1", "0-24", "BFD", "utredning", "10.00", kap=840, post=21),  # kan nyttes under
        utbetalt("u2", "0-24", "BFD", "utredning", "10.00", kap=842, post=1),  # not pooled
    ], _catalogue())
    assert [o.status for o in outcomes] == ["applied", "applied", "rejected"]
    assert "does not fund BFD/utredning" in outcomes[2].reasons[0]


def test_overslagsbevilgning_may_be_exceeded_without_overspending_flag():
    store, outcomes = core.run_log([
        bevilget("b1", "0-24", "KD", "utredning", "100.00", kap=228, post=70),
        utbetalt("u1", "0-24", "KD", "utredning", "150.00"),
    ], _catalogue())
    assert [f["flag"] for f in outcomes[1].flags] == ["overcommitted"]
    assert store["line:0-24"]["cells"]["KD|utredning|2026"]["overspent"] is False


def test_no_catalogue_skips_the_check():
    _, outcomes = core.run_log([bevilget("b1", "0-24", "BFD", "utredning", "1.00", kap=9999, post=99)], Catalogue())
    assert outcomes[0].status == "applied"


# --- the budget year ------------------------------------------------------------------

def test_two_years_on_one_line_are_separate_cells_that_never_add_up():
    store, outcomes = core.run_log([
        bevilget("b26", "0-24", "BFD", "utredning", "1250000.00", year=2026),
        bevilget("b27", "0-24", "BFD", "utredning", "3000000.00", year=2027),
        utbetalt("u25", "0-24", "BFD", "utredning", "100.00", year=2025),
    ])
    assert [o.status for o in outcomes] == ["applied"] * 3
    cells = {c["fiscal_year"]: c for c in core.line_totals(store["line:0-24"])["cells"]}
    assert cells[2026]["bevilget_ore"] == 125000000 and cells[2026]["disponibelt_ore"] == 125000000
    assert cells[2027]["bevilget_ore"] == 300000000 and cells[2027]["utbetalt_ore"] == 0
    # A 2025 payment draws from no later year's pool: 2025 is overspent on its own.
    assert cells[2025]["disponibelt_ore"] == -10000 and store["line:0-24"]["cells"]["BFD|utredning|2025"]["overspent"]
    by_year = core.line_totals(store["line:0-24"])["by_fiscal_year"]
    assert by_year["2026"]["bevilget_ore"] == 125000000 and by_year["2027"]["bevilget_ore"] == 300000000
    assert [f["fiscal_year"] for f in outcomes[2].flags] == [2025, 2025]


def test_rollups_per_ministry_phase_and_year():
    store, _ = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "100.00", year=2026),
        bevilget("b2", "0-24", "KD", "utredning", "10.00", year=2027),
        bevilget("b3", "0-24", "BFD", "utvikling", "1.00", year=2027),
    ])
    groups = core.rollups(core.line_cells(store["line:0-24"]))
    assert {k: v["bevilget_ore"] for k, v in groups["by_fiscal_year"].items()} == {"2026": 10000, "2027": 1100}
    assert {k: v["bevilget_ore"] for k, v in groups["by_ministry"].items()} == {"BFD": 10100, "KD": 1000}
    assert [c["fiscal_year"] for c in core.line_cells(store["line:0-24"], 2027)] == [2027, 2027]


def test_a_correction_reverses_in_the_year_of_the_original():
    store, outcomes = core.run_log([
        bevilget("b26", "0-24", "BFD", "utredning", "500.00", year=2026),
        bevilget("b27", "0-24", "BFD", "utredning", "700.00", year=2027),
        korrigert("k1", "0-24", "BFD", "b26"),
    ])
    assert outcomes[2].status == "applied"
    assert grand_total(store, 2026)["bevilget_ore"] == 0
    assert grand_total(store, 2027)["bevilget_ore"] == 70000


def test_a_commitment_is_drawn_only_in_its_own_year():
    _, outcomes = core.run_log([
        forpliktet("f1", "0-24", "BFD", "utredning", "K1", "600.00", year=2026),
        utbetalt("u1", "0-24", "BFD", "utredning", "600.00", cid="K1", year=2027),
        frigitt("r1", "0-24", "BFD", "utredning", "K1", "1.00", year=2027),
    ])
    assert [o.status for o in outcomes] == ["applied", "rejected", "rejected"]
    assert "belongs to BFD/utredning/2026, not BFD/utredning/2027" in outcomes[1].reasons[0]


def test_a_cross_line_reallocation_credits_the_same_year_on_the_other_line():
    store, outcomes = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "1000.00", year=2027),
        omdisponert("o1", "0-24", ("BFD", "utredning"), ("KD", "utvikling"), "400.00", to_line="ung-1", year=2027),
    ])
    transfer = outcomes[1].sends[0]
    assert transfer.fiscal_year == 2027
    assert core.parse_message(core.dumps_compact(transfer.to_wire())) == transfer
    cell, = core.line_totals(store["line:ung-1"])["cells"]
    assert (cell["fiscal_year"], cell["omdisponert_ore"]) == (2027, 40000)


def test_a_transfer_without_a_fiscal_year_is_refused_with_the_reason():
    wire = core.Transfer(id="o1#to", line_id="ung-1", ministry="KD", phase="utvikling", fiscal_year=2026,
                         amount_ore=1, origin_id="o1", origin_line_id="0-24", source_ministry="BFD",
                         time=T0).to_wire()
    del wire["data"]["fiscal_year"]
    with pytest.raises(ContractError) as error:
        core.parse_message(core.dumps_compact(wire))
    assert "data.fiscal_year" in str(error.value.problems[0])


def test_a_reallocation_may_not_cross_fiscal_years():
    document = make_event("omdisponert", "BFD", {
        "line_id": "0-24", "amount_nok": "10.00", "fiscal_year": 2026,
        "from": {"ministry": "BFD", "phase": "utredning"},
        "to": {"ministry": "BFD", "phase": "utvikling", "fiscal_year": 2027}}, "o1", T0)
    with pytest.raises(ContractError) as error:
        core.parse_message(core.dumps_compact(document))
    assert "omdisponert may not cross fiscal years" in str(error.value)
    document["data"]["to"]["fiscal_year"] = 2026  # naming the event's own year is fine
    assert core.parse_message(core.dumps_compact(document)).data.to.fiscal_year == 2026


def test_milepael_sums_a_stages_cost_over_every_year_of_the_totals_message():
    store, _ = core.run_log([
        utbetalt("u26", "0-24", "BFD", "utvikling", "100.00", year=2026),
        utbetalt("u27", "0-24", "KD", "utvikling", "50.00", year=2027),
    ])
    message = json.loads(core.dumps_compact(core.line_totals(store["line:0-24"])))
    assert totals_summary(message)["utbetalt_ore_by_phase"] == {"utvikling": 15000}


# --- year-end closing (årsavslutning) -------------------------------------------------

def closing(event_id, line, ministry, year, moment=None):
    moment = moment or datetime(year + 1, 1, 15, 12, 0, tzinfo=timezone.utc)
    return parse_event(make_event("arsavslutning", ministry, {"line_id": line, "fiscal_year": year}, event_id, moment))


def _year_end_catalogue():
    return Catalogue([
        CatalogueItem(2026, 840, 21, "BFD", 8, stikkord="kan overføres", kan_overfores=True),
        CatalogueItem(2026, 842, 1, "BFD", 8),
        CatalogueItem(2026, 840, 70, "BFD", 8),
        CatalogueItem(2026, 228, 70, "KD", 2, stikkord="overslagsbevilgning", overslagsbevilgning=True),
    ])


def test_closing_carries_or_lapses_each_cell_by_its_posts_rule_into_the_next_year():
    store, outcomes = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "1000.00", kap=840, post=21),  # kan overføres
        utbetalt("u1", "0-24", "BFD", "utredning", "400.00"),
        bevilget("b2", "0-24", "BFD", "utvikling", "1000.00", kap=842, post=1),  # drift: at most 5 %
        bevilget("b3", "0-24", "KD", "implementering", "1000.00", kap=228, post=70),  # overslagsbevilgning
        bevilget("b4", "0-24", "BFD", "implementering", "1000.00", kap=840, post=70),  # the main rule
        closing("c-bfd", "0-24", "BFD", 2026),  # BFD does not fund the line alone
        closing("c-fin", "0-24", "FIN", 2026),
    ], _year_end_catalogue())
    assert [o.status for o in outcomes[-2:]] == ["rejected", "applied"]
    assert "BFD may not close 2026 for line 0-24, which BFD, KD fund(s) that year" in outcomes[-2].reasons[0]
    line = store["line:0-24"]
    figures = {(c["ministry"], c["phase"]): (c["overfort_inn_ore"], c["bortfalt_ore"], c["bevilget_ore"])
               for c in core.line_cells(line, 2027)}
    assert figures == {("BFD", "utredning"): (60000, 0, 0), ("BFD", "utvikling"): (5000, 95000, 0),
                       ("KD", "implementering"): (0, 100000, 0), ("BFD", "implementering"): (0, 100000, 0)}
    rules = {key: cell["carry_rule"] for key, cell in line["cells"].items() if key.endswith("|2027")}
    assert rules == {"BFD|utredning|2027": "kan_overfores", "BFD|utvikling|2027": "drift_5_prosent",
                     "KD|implementering|2027": "overslagsbevilgning", "BFD|implementering|2027": "bortfaller"}
    assert {c["ministry"] + c["phase"]: c["disponibelt_ore"] for c in core.line_cells(line, 2027)}["BFDutredning"] == 60000
    assert line["closed_years"] == {"2026": {"event_id": "c-fin", "closed_by": "FIN",
                                             "closed_at": "2027-01-15T12:00:00.000000Z"}}


def test_a_closed_year_refuses_bookings_and_corrections_and_a_second_closing_changes_nothing():
    store, outcomes = core.run_log([
        bevilget("b1", "0-24", "BFD", "utredning", "1000.00", kap=840, post=21),
        closing("c-early", "0-24", "BFD", 2026, moment=datetime(2026, 12, 31, 12, 0, tzinfo=timezone.utc)),
        closing("c1", "0-24", "BFD", 2026),  # BFD funds the line alone
        utbetalt("u-late", "0-24", "BFD", "utredning", "1.00"),
        korrigert("k1", "0-24", "BFD", "b1"),
        korrigert("k2", "0-24", "BFD", "c1"),
        closing("c2", "0-24", "FIN", 2026),
        utbetalt("u-2027", "0-24", "BFD", "utredning", "1.00", year=2027),
    ], _year_end_catalogue())
    statuses = [o.status for o in outcomes]
    assert statuses == ["applied", "rejected", "applied", "rejected", "rejected", "rejected", "applied", "applied"]
    assert "would lapse money that may still be spent" in outcomes[1].reasons[0]
    for refused in (outcomes[3], outcomes[4]):
        assert refused.reasons[0].startswith("fiscal year 2026 of line 0-24 is closed (closing c1 by BFD at ")
    assert "cannot be corrected" in outcomes[5].reasons[0]
    assert outcomes[6].effect == []  # already closed: idempotent
    cell, = core.line_cells(store["line:0-24"], 2027)
    assert (cell["overfort_inn_ore"], cell["utbetalt_ore"], cell["disponibelt_ore"]) == (100000, 100, 99900)


# --- properties ------------------------------------------------------------------------

amounts = st.integers(min_value=1, max_value=10**6).map(lambda kr: f"{kr}.{kr % 100:02d}")
cells = st.tuples(st.sampled_from(MINISTRIES), st.sampled_from(PHASES))
YEARS = (2026, 2027)
years = st.sampled_from(YEARS)


@st.composite
def event_logs(draw, max_size=25):
    """Random, valid budget activity across two lines, including repeats and corrections."""
    events = [bevilget("e-first", draw(st.sampled_from(LINES)), *draw(cells), draw(amounts), year=draw(years))]
    commitments: list[tuple[str, str, str, str, int]] = []
    for i in range(draw(st.integers(min_value=1, max_value=max_size))):
        line = draw(st.sampled_from(LINES))
        ministry, phase = draw(cells)
        year = draw(years)
        choice = draw(st.sampled_from(["bevilget", "omd", "omd_line", "forpliktet", "utbetalt", "korrigert", "dup"]))
        eid = f"e{i}"
        if choice == "bevilget":
            events.append(bevilget(eid, line, ministry, phase, draw(amounts), year=year))
        elif choice in ("omd", "omd_line"):
            to = draw(cells.filter(lambda c: c != (ministry, phase))) if choice == "omd" else draw(cells)
            other = [x for x in LINES if x != line][0] if choice == "omd_line" else None
            events.append(omdisponert(eid, line, (ministry, phase), to, draw(amounts), to_line=other, year=year))
        elif choice == "forpliktet":
            cid = f"K{i}"
            commitments.append((line, ministry, phase, cid, year))
            events.append(forpliktet(eid, line, ministry, phase, cid, draw(amounts), year=year))
        elif choice == "utbetalt":
            use = commitments and draw(st.booleans())
            if use:
                line, ministry, phase, cid, year = draw(st.sampled_from(commitments))
                events.append(utbetalt(eid, line, ministry, phase, draw(amounts), cid=cid, year=year))
            else:
                events.append(utbetalt(eid, line, ministry, phase, draw(amounts), year=year))
        elif choice == "korrigert" and events:
            target = draw(st.sampled_from(events))
            if target.kind != "korrigert":
                events.append(korrigert(eid, target.key, target.source_ministry, target.id))
        elif choice == "dup" and events:
            events.append(draw(st.sampled_from(events)))
    return events


@settings(max_examples=150, deadline=None)
@given(event_logs())
def test_money_is_conserved_by_every_reallocation(events):
    store, _ = core.run_log(events)
    for year in YEARS:  # within each year: no reallocation moves money into or out of a year
        total = grand_total(store, year)
        assert total["omdisponert_ore"] == 0
        granted = sum(e.data.amount_ore for e in {e.id: e for e in events}.values()
                      if e.kind == "bevilget" and e.data.fiscal_year == year
                      and store[f"id:{e.id}"]["corrected_by"] is None)
        assert total["bevilget_ore"] == granted


def nonzero(store):
    found = {line: [c for c in cells if any(c[f] for f in core.TOTAL_FIELDS)] for line, cells in totals(store).items()}
    return {line: cells for line, cells in found.items() if cells}


@settings(max_examples=150, deadline=None)
@given(event_logs(), amounts, st.data())
def test_a_correction_restores_the_prior_totals(events, nok, data):
    store, outcomes = core.run_log(events)
    # A new event followed by its correction leaves every total as it was.
    extra = bevilget("x-new", "0-24", "BFD", "utredning", nok)
    store_a, _ = core.run_log(events + [extra, korrigert("x-fix", "0-24", "BFD", "x-new")])
    assert nonzero(store_a) == nonzero(store)
    # Correcting an older event removes exactly its recorded effect, once.
    candidates = [o.event_id for o in outcomes if o.status == "applied" and o.kind in ("bevilget", "omdisponert")
                  and store[f"id:{o.event_id}"]["corrected_by"] is None]
    if not candidates:
        return
    chosen = data.draw(st.sampled_from(candidates))
    original = next(e for e in events if e.id == chosen)
    store_b, outcomes_b = core.run_log(events + [korrigert("x-fix", original.key, original.source_ministry, original.id)])
    assert next(o for o in outcomes_b if o.event_id == "x-fix").status == "applied"
    year = original.data.fiscal_year
    removed = sum(e[-1] for e in store[f"id:{original.id}"]["effect"] if e[0] == "cell" and e[4] == "bevilget_ore")
    # It reverses in the year of the original, and only there.
    assert grand_total(store_b, year)["bevilget_ore"] == grand_total(store, year)["bevilget_ore"] - removed
    other = next(y for y in YEARS if y != year)
    assert grand_total(store_b, other) == grand_total(store, other)
    assert grand_total(store_b)["omdisponert_ore"] == 0


@settings(max_examples=100, deadline=None)
@given(event_logs())
def test_replay_equals_live(events):
    store_live, _ = core.run_log(events)
    store_replay, _ = core.run_log(list(events))
    assert totals(store_live) == totals(store_replay)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LINES), cells, amounts, st.booleans(), years), min_size=1, max_size=15),
       st.randoms())
def test_independent_events_commute(specs, rnd):
    events = [
        bevilget(f"e{i}", line, m, p, nok, year=y) if is_grant else utbetalt(f"e{i}", line, m, p, nok, year=y)
        for i, (line, (m, p), nok, is_grant, y) in enumerate(specs)
    ]
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert totals(core.run_log(events)[0]) == totals(core.run_log(shuffled)[0])


class Crash(Exception):
    pass


class CrashingStore(dict):
    """A store where only the first `allowed` writes land, like a changelog cut by kill -9."""

    def __init__(self, base, allowed):
        super().__init__(copy.deepcopy(base))
        self.allowed = allowed

    def __setitem__(self, key, value):
        if self.allowed <= 0:
            raise Crash()
        self.allowed -= 1
        super().__setitem__(key, copy.deepcopy(value))


@settings(max_examples=200, deadline=None)
@given(event_logs(max_size=15), st.data())
def test_redelivery_after_partial_writes_gives_the_same_state(events, data):
    """Crash at any write of any message, resume from an earlier committed offset: same state."""
    expected, _ = core.run_log(events)
    log = list(events)
    crash_at = data.draw(st.integers(min_value=0, max_value=len(log) - 1))
    allowed = data.draw(st.integers(min_value=0, max_value=5))
    committed = data.draw(st.integers(min_value=0, max_value=crash_at))
    store: dict = {}
    offset = 0
    crashed = False
    while offset < len(log):
        if offset == crash_at and not crashed:
            crashing = CrashingStore(store, allowed)
            try:
                outcome = core.process(crashing, offset, log[offset])
            except Crash:
                crashed = True
                store = dict(crashing)  # what reached the changelog survives the restart
                offset = committed  # Kafka redelivers from the last committed offset
                continue
            store = dict(crashing)
            crashed = True
        else:
            outcome = core.process(store, offset, log[offset])
        if outcome.status in ("applied", "redelivered"):
            for send in outcome.sends:
                log.append(send)  # redelivery re-sends; the receiver dedups
        offset += 1
    assert totals(store) == totals(expected)


def test_every_partial_write_of_every_message_in_a_mixed_log_recovers_exactly():
    events = [
        bevilget("b1", "0-24", "BFD", "utredning", "1000.00"),
        forpliktet("f1", "0-24", "BFD", "utredning", "K1", "600.00"),
        utbetalt("u1", "0-24", "BFD", "utredning", "700.00", cid="K1"),
        omdisponert("o1", "0-24", ("BFD", "utredning"), ("KD", "utvikling"), "50.00", to_line="ung-1"),
        korrigert("k1", "0-24", "BFD", "f1"),
        frigitt("r1", "0-24", "BFD", "utredning", "K1", "1.00"),
    ]
    expected, _ = core.run_log(events)
    for crash_at in range(len(events)):
        for allowed in range(6):
            store: dict = {}
            log = list(events)
            offset = 0
            while offset < len(log):
                if offset == crash_at:
                    crashing = CrashingStore(store, allowed)
                    try:
                        core.process(crashing, offset, log[offset])
                    except Crash:
                        pass
                    store = dict(crashing)  # sends of the crashed attempt are lost; redelivery follows
                outcome = core.process(store, offset, log[offset])
                if outcome.status in ("applied", "redelivered"):
                    log.extend(outcome.sends)
                offset += 1
            assert totals(store) == totals(expected), (crash_at, allowed)


def _run_through(store_for, events):
    """run_log's loop (sends appended to the log) with the store the worker and replay use."""
    raw: dict = {}
    store = store_for(raw)
    log, outcomes = list(events), []
    for offset, message in enumerate(log):
        outcome = core.process(store, offset, message)
        outcomes.append((outcome.status, outcome.reasons, [s.id for s in outcome.sends], outcome.flags))
        if outcome.status == "applied":
            log.extend(outcome.sends)
    return raw, outcomes


@settings(max_examples=150, deadline=None)
@given(event_logs())
def test_the_compact_store_decides_exactly_as_a_plain_one_and_keeps_records_as_text(events):
    plain, plain_outcomes = _run_through(lambda raw: raw, events)
    compact, compact_outcomes = _run_through(core.CompactStore, events)
    assert compact_outcomes == plain_outcomes
    assert totals(compact) == totals(plain)
    assert core.lines_in(compact) == core.lines_in(plain)
    assert all(isinstance(value, str) for key, value in compact.items() if not key.startswith("line:"))


def test_the_compact_store_reads_records_an_older_worker_wrote_as_objects():
    events = [bevilget("b1", "0-24", "BFD", "utredning", "100.00"), korrigert("k1", "0-24", "BFD", "b1")]
    old, _ = core.run_log(events[:1])  # plain dict records, as changelogs before CompactStore hold
    store = core.CompactStore(old)
    outcome = core.process(store, 1, events[1])
    assert outcome.status == "applied"
    assert core.sum_amounts(totals(old)["0-24"])["bevilget_ore"] == 0  # the correction found the original


@settings(max_examples=100, deadline=None)
@given(event_logs())
def test_closing_splits_every_cells_unspent_amount_into_carried_and_lapsed_to_the_ore(events):
    store, _ = core.run_log(events)
    for offset, line_id in enumerate(sorted(core.lines_in(store)), start=10_000):
        line = store[f"line:{line_id}"]
        unspent = {(c["ministry"], c["phase"]): c["bevilget_ore"] + c["omdisponert_ore"] + c["overfort_inn_ore"]
                   - c["utbetalt_ore"] for c in core.line_cells(line, 2026)}
        before_2027 = {(c["ministry"], c["phase"]): c for c in core.line_cells(line, 2027)}
        outcome = core.process(store, offset, closing(f"c-{line_id}", line_id, "FIN", 2026))
        assert outcome.status == "applied"
        after = {(c["ministry"], c["phase"]): c for c in core.line_cells(store[f"line:{line_id}"], 2027)}
        for key, amount in unspent.items():
            old = before_2027.get(key, {"overfort_inn_ore": 0, "bortfalt_ore": 0})
            moved = (after[key]["overfort_inn_ore"] - old["overfort_inn_ore"]) + (after[key]["bortfalt_ore"] - old["bortfalt_ore"])
            assert moved == amount
            assert after[key]["bevilget_ore"] == before_2027.get(key, {"bevilget_ore": 0})["bevilget_ore"]


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9))])))
def test_event_times_are_written_as_utc_rfc3339_that_read_back_to_the_same_moment_and_sort_as_time(moment):
    text = core.rfc3339(moment)
    # Audit trail, last_event_time and the read model compare these as text: fixed width, Z, microseconds.
    assert len(text) == 27 and text.endswith("Z") and text[10] == "T"
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == moment
    later = moment + timedelta(microseconds=1)
    assert core.rfc3339(later) > text
