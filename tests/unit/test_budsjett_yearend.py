"""Year-end closing: carry-over and lapse by Bevilgningsreglementet § 5 and R-110, and who may close a year."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.budsjett.catalogue import CatalogueItem
from services.budsjett.yearend import (
    CarryRule,
    CellYear,
    Closing,
    ClosingOutcome,
    PostTerms,
    YearStatus,
    booking_refusal,
    carry_cap_ore,
    close_cell,
    decide_closing,
)

MNOK = 100_000_000  # øre in one million kroner


def cell(bevilget=0, omdisponert=0, forpliktet=0, utbetalt=0, previous=0, carried_in=0) -> CellYear:
    return CellYear(bevilget_ore=bevilget, omdisponert_ore=omdisponert, forpliktet_ore=forpliktet,
                    utbetalt_ore=utbetalt, previous_year_appropriation_ore=previous, carried_in_ore=carried_in)


@pytest.mark.parametrize("figures, terms, carried, lapsed, rule", [
    # «kan overføres»: all unspent carries while under the cap (this year's + last year's appropriation) ...
    (cell(bevilget=10 * MNOK, utbetalt=6 * MNOK), PostTerms(70, "kan overføres"), 4 * MNOK, 0,
     CarryRule.KAN_OVERFORES),
    # ... and reallocations count as appropriation; commitments do not reduce what carries
    (cell(bevilget=10 * MNOK, omdisponert=-2 * MNOK, forpliktet=5 * MNOK, utbetalt=6 * MNOK),
     PostTerms(21, "kan overføres, kan nyttes under post 70"), 2 * MNOK, 0, CarryRule.KAN_OVERFORES),
    # ... money carried in and carried again is capped: 1 + 0.5 MNOK may carry of 3 MNOK unspent
    (cell(bevilget=1 * MNOK, previous=MNOK // 2, carried_in=2 * MNOK), PostTerms(45, "kan overføres"),
     MNOK * 3 // 2, MNOK * 3 // 2, CarryRule.KAN_OVERFORES),
    # post 01 with «kan overføres» follows § 5, not the 5 % rule
    (cell(bevilget=10 * MNOK, utbetalt=8 * MNOK), PostTerms(1, "kan overføres"), 2 * MNOK, 0, CarryRule.KAN_OVERFORES),
    # post 01 without it: at most 5 % of the year's appropriation
    (cell(bevilget=10 * MNOK, utbetalt=8 * MNOK), PostTerms(1), MNOK // 2, MNOK * 3 // 2, CarryRule.DRIFT_5_PROSENT),
    (cell(bevilget=10 * MNOK, utbetalt=9_900_000_00), PostTerms(1), 10_000_000, 0, CarryRule.DRIFT_5_PROSENT),
    # 5 % of 333 øre is 16.65 øre: rounded down, never more than 5 %
    (cell(bevilget=333), PostTerms(1), 16, 317, CarryRule.DRIFT_5_PROSENT),
    # carried-in money counts as unspent, but the 5 % is of this year's own appropriation only
    (cell(bevilget=10 * MNOK, utbetalt=10 * MNOK, carried_in=MNOK), PostTerms(1), MNOK // 2, MNOK // 2,
     CarryRule.DRIFT_5_PROSENT),
    # overslagsbevilgning lapses, even if also transferable; so do other posts
    (cell(bevilget=10 * MNOK, utbetalt=4 * MNOK), PostTerms(70, "overslagsbevilgning"), 0, 6 * MNOK,
     CarryRule.OVERSLAGSBEVILGNING),
    (cell(bevilget=10 * MNOK), PostTerms(70, "overslagsbevilgning, kan overføres"), 0, 10 * MNOK,
     CarryRule.OVERSLAGSBEVILGNING),
    (cell(bevilget=10 * MNOK, utbetalt=4 * MNOK), PostTerms(70, "kan nyttes under post 21"), 0, 6 * MNOK,
     CarryRule.BORTFALLER),
    (cell(bevilget=10 * MNOK), PostTerms(21), 0, 10 * MNOK, CarryRule.BORTFALLER),
    # overspent: nothing carries, the overspending stays with the closed year as a negative lapsed figure
    (cell(bevilget=10 * MNOK, utbetalt=12 * MNOK), PostTerms(1, "kan overføres"), 0, -2 * MNOK,
     CarryRule.OVERSKREDET),
    # a negative appropriation (a cut) gives no carry room: the 5 % and the two-year cap are never negative
    (cell(bevilget=-MNOK, carried_in=2 * MNOK), PostTerms(1), 0, MNOK, CarryRule.DRIFT_5_PROSENT),
    (cell(bevilget=-MNOK, previous=MNOK // 2, carried_in=2 * MNOK), PostTerms(70, "kan overføres"), 0, MNOK,
     CarryRule.KAN_OVERFORES),
    # nothing unspent: nothing carries or lapses, under the post's own rule
    (cell(bevilget=5 * MNOK, utbetalt=5 * MNOK), PostTerms(70, "kan overføres"), 0, 0, CarryRule.KAN_OVERFORES),
])
def test_carry_and_lapse_follow_the_posts_rule(figures, terms, carried, lapsed, rule):
    result = close_cell(figures, terms)
    assert (result.carried_ore, result.lapsed_ore, result.rule) == (carried, lapsed, rule)
    assert result.carried_ore + result.lapsed_ore == figures.unspent_ore


def test_commitments_the_carry_does_not_cover_are_reported():
    result = close_cell(cell(bevilget=10 * MNOK, forpliktet=2 * MNOK, utbetalt=8 * MNOK), PostTerms(1))
    assert result.carried_ore == MNOK // 2 and result.uncovered_commitments_ore == MNOK * 3 // 2
    covered = close_cell(cell(bevilget=10 * MNOK, forpliktet=2 * MNOK, utbetalt=7 * MNOK),
                         PostTerms(70, "kan overføres"))
    assert covered.carried_ore == 3 * MNOK and covered.uncovered_commitments_ore == 0


def test_post_terms_come_from_the_catalogue_item():
    item = CatalogueItem(2026, 840, 70, "BFD", 8, stikkord="kan overføres, kan nyttes under post 21")
    terms = PostTerms.of(item)
    assert terms.kan_overfores and not terms.overslagsbevilgning and terms.post == 70


ORE = st.integers(min_value=-5 * 10**13, max_value=5 * 10**13)  # real posts reach 5·10¹¹ NOK
STIKKORD = st.sampled_from(["", "kan overføres", "overslagsbevilgning", "kan nyttes under post 21",
                            "kan overføres, kan nyttes under post 1", "overslagsbevilgning, kan overføres"])


@given(bevilget=ORE, omdisponert=ORE, forpliktet=ORE, utbetalt=ORE, previous=ORE, carried_in=ORE,
       post=st.sampled_from([1, 1, 21, 45, 70, 99]), stikkord=STIKKORD)
def test_carried_plus_lapsed_is_unspent_to_the_ore_and_carried_stays_within_its_cap(
        bevilget, omdisponert, forpliktet, utbetalt, previous, carried_in, post, stikkord):
    figures = cell(bevilget, omdisponert, forpliktet, utbetalt, previous, carried_in)
    result = close_cell(figures, PostTerms(post, stikkord))
    assert result.carried_ore + result.lapsed_ore == figures.unspent_ore
    assert 0 <= result.carried_ore <= result.cap_ore
    assert result.cap_ore == carry_cap_ore(result.rule, figures) >= 0
    assert (result.lapsed_ore < 0) == (result.rule is CarryRule.OVERSKREDET)
    if result.rule is CarryRule.DRIFT_5_PROSENT:
        assert result.carried_ore * 100 <= max(0, figures.appropriation_ore) * 5


# --- closing -----------------------------------------------------------------------------

AFTER_2026 = datetime(2027, 1, 15, 9, 0, tzinfo=timezone.utc)


def closing(closed_by="FIN", event_id="close-0-24-2026", at=AFTER_2026, year=2026) -> Closing:
    return Closing(event_id=event_id, line_id="0-24", fiscal_year=year, closed_by=closed_by, closed_at=at)


SHARED = frozenset({"BFD", "KD", "HOD"})


def test_fin_closes_a_shared_line_and_closing_again_changes_nothing():
    first = decide_closing(YearStatus("0-24", 2026), closing(), SHARED)
    assert first.outcome is ClosingOutcome.CLOSED and first.status.closing == closing()
    again = decide_closing(first.status, closing(), SHARED)
    assert again.outcome is ClosingOutcome.ALREADY_CLOSED and again.status == first.status
    later = closing(event_id="close-again", at=datetime(2027, 2, 1, tzinfo=timezone.utc))
    other_id = decide_closing(first.status, later, SHARED)
    assert other_id.outcome is ClosingOutcome.ALREADY_CLOSED and other_id.status == first.status
    assert "already closed for line 0-24 (closing close-0-24-2026 by FIN at 2027-01-15T09:00:00Z)" in other_id.reason


def test_a_funding_ministry_may_close_only_a_line_it_funds_alone():
    refused = decide_closing(YearStatus("0-24", 2026), closing("BFD"), SHARED)
    assert refused.outcome is ClosingOutcome.REFUSED and not refused.status.closed
    assert refused.reason.startswith("BFD may not close 2026 for line 0-24, which BFD, HOD, KD fund(s) that year")
    alone = decide_closing(YearStatus("0-24", 2026), closing("BFD"), frozenset({"BFD"}))
    assert alone.outcome is ClosingOutcome.CLOSED and alone.status.closing.closed_by == "BFD"
    stranger = decide_closing(alone.status, closing("KD"), frozenset({"BFD"}))
    assert stranger.outcome is ClosingOutcome.REFUSED  # even a closed year is not another ministry's to close


def test_a_year_is_closed_only_after_it_ends_in_norwegian_time():
    last_minute = datetime(2026, 12, 31, 22, 59, tzinfo=timezone.utc)  # 23:59 in Oslo
    early = decide_closing(YearStatus("0-24", 2026), closing(at=last_minute), SHARED)
    assert early.outcome is ClosingOutcome.REFUSED and "runs until 31 December 2026" in early.reason
    midnight_oslo = datetime(2026, 12, 31, 23, 0, tzinfo=timezone.utc)
    assert decide_closing(YearStatus("0-24", 2026), closing(at=midnight_oslo), SHARED).outcome is ClosingOutcome.CLOSED


def test_bookings_to_a_closed_year_are_refused_naming_the_closing():
    assert booking_refusal(YearStatus("0-24", 2026)) is None
    status = decide_closing(YearStatus("0-24", 2026), closing(), SHARED).status
    refusal = booking_refusal(status)
    assert refusal.closing == closing()
    assert refusal.reason == ("fiscal year 2026 of line 0-24 is closed (closing close-0-24-2026 by FIN at "
                              "2027-01-15T09:00:00Z); book in 2027 or later, where the carried amounts are")
    assert booking_refusal(YearStatus("0-24", 2027)) is None  # the next year stays open


def test_closing_inputs_that_are_programming_errors_raise():
    with pytest.raises(ValueError, match="same line and year"):
        decide_closing(YearStatus("0-24", 2025), closing(), SHARED)
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_closing(YearStatus("0-24", 2026), closing(at=datetime(2027, 1, 15)), SHARED)
