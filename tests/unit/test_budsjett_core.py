"""The ledger's pure core: totals to the øre, exactly once, through partial writes."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from services.budsjett import core
from services.budsjett.catalogue import Catalogue, CatalogueItem
from services.shared.contract import make_event, parse_event

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
MINISTRIES = ("BFD", "KD", "HOD")
PHASES = ("utredning", "utvikling", "implementering")
LINES = ("0-24", "ung-1")


def ev(kind, ministry, data, event_id, minutes=0):
    return parse_event(make_event(kind, ministry, data, event_id, T0 + timedelta(minutes=minutes)))


def bevilget(event_id, line, ministry, phase, nok, kap=840, post=70, minutes=0):
    return ev("bevilget", ministry, {"line_id": line, "ministry": ministry, "phase": phase, "amount_nok": nok,
                                     "kap": kap, "post": post, "fiscal_year": 2026}, event_id, minutes)


def omdisponert(event_id, line, from_, to, nok, to_line=None):
    to_side = {"ministry": to[0], "phase": to[1], **({"line_id": to_line} if to_line else {})}
    return ev("omdisponert", from_[0], {"line_id": line, "amount_nok": nok, "from": {"ministry": from_[0], "phase": from_[1]},
                                        "to": to_side, "fiscal_year": 2026}, event_id)


def forpliktet(event_id, line, ministry, phase, cid, nok):
    return ev("forpliktet", ministry, {"line_id": line, "ministry": ministry, "phase": phase, "commitment_id": cid,
                                       "amount_nok": nok, "fiscal_year": 2026}, event_id)


def frigitt(event_id, line, ministry, phase, cid, nok):
    return ev("forpliktelse_frigitt", ministry, {"line_id": line, "ministry": ministry, "phase": phase,
                                                 "commitment_id": cid, "amount_nok": nok, "fiscal_year": 2026}, event_id)


def utbetalt(event_id, line, ministry, phase, nok, cid=None, kap=None, post=None):
    data = {"line_id": line, "ministry": ministry, "phase": phase, "amount_nok": nok, "fiscal_year": 2026}
    if cid:
        data["commitment_id"] = cid
    if kap:
        data.update(kap=kap, post=post)
    return ev("utbetalt", ministry, data, event_id)


def korrigert(event_id, line, ministry, corrects):
    return ev("korrigert", ministry, {"line_id": line, "corrects_id": corrects, "reason": "feilføring"}, event_id)


def totals(store):
    return {line_id: core.line_totals(line)["cells"] for line_id, line in core.lines_in(store).items()}


def grand_total(store):
    all_cells = [cell for cells in totals(store).values() for cell in cells]
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
    assert store["line:0-24"]["cells"]["KD|utredning"]["overspent"] is False


def test_no_catalogue_skips_the_check():
    _, outcomes = core.run_log([bevilget("b1", "0-24", "BFD", "utredning", "1.00", kap=9999, post=99)], Catalogue())
    assert outcomes[0].status == "applied"


# --- properties ------------------------------------------------------------------------

amounts = st.integers(min_value=1, max_value=10**6).map(lambda kr: f"{kr}.{kr % 100:02d}")
cells = st.tuples(st.sampled_from(MINISTRIES), st.sampled_from(PHASES))


@st.composite
def event_logs(draw, max_size=25):
    """Random, valid budget activity across two lines, including repeats and corrections."""
    events = [bevilget("e-first", draw(st.sampled_from(LINES)), *draw(cells), draw(amounts))]
    commitments: list[tuple[str, str, str, str]] = []
    for i in range(draw(st.integers(min_value=1, max_value=max_size))):
        line = draw(st.sampled_from(LINES))
        ministry, phase = draw(cells)
        choice = draw(st.sampled_from(["bevilget", "omd", "omd_line", "forpliktet", "utbetalt", "korrigert", "dup"]))
        eid = f"e{i}"
        if choice == "bevilget":
            events.append(bevilget(eid, line, ministry, phase, draw(amounts)))
        elif choice in ("omd", "omd_line"):
            to = draw(cells.filter(lambda c: c != (ministry, phase))) if choice == "omd" else draw(cells)
            other = [x for x in LINES if x != line][0] if choice == "omd_line" else None
            events.append(omdisponert(eid, line, (ministry, phase), to, draw(amounts), to_line=other))
        elif choice == "forpliktet":
            cid = f"K{i}"
            commitments.append((line, ministry, phase, cid))
            events.append(forpliktet(eid, line, ministry, phase, cid, draw(amounts)))
        elif choice == "utbetalt":
            use = commitments and draw(st.booleans())
            if use:
                line, ministry, phase, cid = draw(st.sampled_from(commitments))
                events.append(utbetalt(eid, line, ministry, phase, draw(amounts), cid=cid))
            else:
                events.append(utbetalt(eid, line, ministry, phase, draw(amounts)))
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
    total = grand_total(store)
    assert total["omdisponert_ore"] == 0
    assert total["bevilget_ore"] + total["omdisponert_ore"] == total["bevilget_ore"]


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
    removed = sum(e[-1] for e in store[f"id:{original.id}"]["effect"] if e[0] == "cell" and e[3] == "bevilget_ore")
    assert grand_total(store_b)["bevilget_ore"] == grand_total(store)["bevilget_ore"] - removed
    assert grand_total(store_b)["omdisponert_ore"] == 0


@settings(max_examples=100, deadline=None)
@given(event_logs())
def test_replay_equals_live(events):
    store_live, _ = core.run_log(events)
    store_replay, _ = core.run_log(list(events))
    assert totals(store_live) == totals(store_replay)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LINES), cells, amounts, st.booleans()), min_size=1, max_size=15), st.randoms())
def test_independent_events_commute(specs, rnd):
    events = [
        bevilget(f"e{i}", line, m, p, nok) if is_grant else utbetalt(f"e{i}", line, m, p, nok)
        for i, (line, (m, p), nok, is_grant) in enumerate(specs)
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
