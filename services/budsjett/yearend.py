"""Year-end closing (årsavslutning): what a cell carries into the next year, what lapses, and who may close.

Pure functions on typed data; the ledger calls them when it applies a closing
event and before it books anything to a year.

The rules, as a finance officer reads them (DESIGN.md "The budget year"):

- Bevilgningsreglementet § 3: the budget is adopted for the calendar year, so
  an appropriation not spent in its year lapses unless a rule lets it carry.
- Bevilgningsreglementet § 5: Stortinget may give an appropriation the
  stikkord «kan overføres»; its unspent amount carries into the next year, at
  most the year's and the previous year's appropriation together (so money
  cannot pile up by being carried year after year).
- Finansdepartementet's R-110 (fullmakter etter bevilgningsreglementet): an
  operating post (post 01 Driftsutgifter) without «kan overføres» carries its
  unspent amount up to 5 % of the year's appropriation.
- An «overslagsbevilgning» is an estimate of what rules and rights will cost;
  what it does not use is not saved money and lapses. So do all other posts.

"Unspent", as this module reads it: the cell's appropriation for the year
(bevilget + omdisponert) plus what was carried in from the year before, minus
what was paid (utbetalt). Outstanding commitments (forpliktet) do NOT reduce
it: the state accounts are kept on a cash basis (§ 3: expenses belong to the
year they are paid), and outstanding commitments are exactly what a carried
amount pays for next year. The result reports the commitments the carry does
not cover, so finance staff see what next year's own appropriation must meet.

A cell funded from several posts is closed per funding post, since the rule
depends on the post: the ledger keeps each cell's figures per kap/post and calls
`close_cell` once per post (core._closing_effect), each with that post's own
appropriation the year before; the cell's carried and lapsed amounts are the
sums over its posts.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from zoneinfo import ZoneInfo

from services.budsjett.catalogue import CatalogueItem, is_kan_overfores, is_overslagsbevilgning

DRIFT_POST = 1
DRIFT_CARRY_PERCENT = 5
CLOSING_AUTHORITY = "FIN"  # Finansdepartementet settles the carry-over of unspent appropriations
BUDGET_TIME_ZONE = ZoneInfo("Europe/Oslo")  # the budget year is the Norwegian calendar year


class CarryRule(Enum):
    """The rule that decided a cell's carry-over at year end.

    KAN_OVERFORES: Bevilgningsreglementet § 5, stikkord «kan overføres»: the
        unspent amount carries, at most the year's and the previous year's
        appropriation together.
    DRIFT_5_PROSENT: R-110: post 01 without «kan overføres» carries at most
        5 % of the year's appropriation, rounded down to the øre.
    OVERSLAGSBEVILGNING: § 5: an estimate appropriation; the unspent amount lapses.
    BORTFALLER: §§ 3 and 5, the main rule: unspent appropriation lapses at year end.
    OVERSKREDET: the cell was overspent (unspent < 0); nothing carries, and the
        overspending stays with the closed year as a negative lapsed amount.
        Recovering it from next year (R-110 "overskridelse mot innsparing") is a
        decision of its own, not an automatic deduction here.
    """

    KAN_OVERFORES = "kan_overfores"
    DRIFT_5_PROSENT = "drift_5_prosent"
    OVERSLAGSBEVILGNING = "overslagsbevilgning"
    BORTFALLER = "bortfaller"
    OVERSKREDET = "overskredet"


@dataclass(frozen=True)
class PostTerms:
    """What the catalogue says about the post a cell's money came from."""

    post: int
    stikkord: str = ""

    @classmethod
    def of(cls, item: CatalogueItem) -> "PostTerms":
        return cls(post=item.post, stikkord=item.stikkord)

    @property
    def kan_overfores(self) -> bool:
        return is_kan_overfores(self.stikkord)

    @property
    def overslagsbevilgning(self) -> bool:
        return is_overslagsbevilgning(self.stikkord)


@dataclass(frozen=True)
class CellYear:
    """One cell's figures for the fiscal year being closed, in øre."""

    bevilget_ore: int
    omdisponert_ore: int
    forpliktet_ore: int  # outstanding commitments at year end
    utbetalt_ore: int
    previous_year_appropriation_ore: int = 0  # the same cell's bevilget + omdisponert the year before
    carried_in_ore: int = 0  # carried into this year at the previous closing

    @property
    def appropriation_ore(self) -> int:
        """The year's own appropriation: what was granted and reallocated, without what was carried in."""
        return self.bevilget_ore + self.omdisponert_ore

    @property
    def unspent_ore(self) -> int:
        """Appropriation + carried in − paid; commitments do not reduce it (see the module docstring)."""
        return self.appropriation_ore + self.carried_in_ore - self.utbetalt_ore


@dataclass(frozen=True)
class Carry:
    """A cell's year-end result: carried_ore + lapsed_ore == the cell's unspent_ore, to the øre."""

    carried_ore: int  # into the next year, a figure of its own there (not bevilget)
    lapsed_ore: int  # negative only when the rule is OVERSKREDET
    rule: CarryRule
    cap_ore: int  # the most the rule lets carry
    uncovered_commitments_ore: int  # outstanding commitments the carry does not fund


def carry_rule(terms: PostTerms) -> CarryRule:
    """Which rule governs a post's unspent amount (before looking at the figures)."""
    if terms.overslagsbevilgning:
        return CarryRule.OVERSLAGSBEVILGNING  # an estimate: unspent is not saved money, even if transferable
    if terms.kan_overfores:
        return CarryRule.KAN_OVERFORES
    if terms.post == DRIFT_POST:
        return CarryRule.DRIFT_5_PROSENT
    return CarryRule.BORTFALLER


def carry_cap_ore(rule: CarryRule, cell: CellYear) -> int:
    """The most a rule lets carry; a negative appropriation (a cut) gives a cap of 0, never a negative one."""
    if rule is CarryRule.KAN_OVERFORES:
        return max(0, cell.appropriation_ore + cell.previous_year_appropriation_ore)
    if rule is CarryRule.DRIFT_5_PROSENT:
        # R-110 allows "inntil" (up to) 5 %: rounding down to the øre never carries more than 5 %.
        return max(0, cell.appropriation_ore) * DRIFT_CARRY_PERCENT // 100
    return 0


def close_cell(cell: CellYear, terms: PostTerms) -> Carry:
    """Split a cell's unspent amount into carried and lapsed by the post's rule (Bevilgningsreglementet § 5, R-110)."""
    unspent = cell.unspent_ore
    if unspent < 0:
        rule, cap, carried = CarryRule.OVERSKREDET, 0, 0
    else:
        rule = carry_rule(terms)
        cap = carry_cap_ore(rule, cell)
        carried = min(unspent, cap)
    return Carry(carried_ore=carried, lapsed_ore=unspent - carried, rule=rule, cap_ore=cap,
                 uncovered_commitments_ore=max(0, cell.forpliktet_ore - carried))


# --- the closing event and the year's status ---------------------------------------


@dataclass(frozen=True)
class Closing:
    """An årsavslutning of one line's fiscal year, as published."""

    event_id: str
    line_id: str
    fiscal_year: int
    closed_by: str  # ministry code of the publisher
    closed_at: datetime  # tz-aware

    def describe(self) -> str:
        moment = self.closed_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"closing {self.event_id} by {self.closed_by} at {moment}"


@dataclass(frozen=True)
class YearStatus:
    """Whether a line's fiscal year is open for bookings; the ledger keeps one per line and year."""

    line_id: str
    fiscal_year: int
    closing: Closing | None = None

    @property
    def closed(self) -> bool:
        return self.closing is not None


class ClosingOutcome(Enum):
    CLOSED = "closed"  # this closing closes the year: compute and book the carry now
    ALREADY_CLOSED = "already_closed"  # the year was closed before: nothing changes (idempotent)
    REFUSED = "refused"


@dataclass(frozen=True)
class ClosingDecision:
    outcome: ClosingOutcome
    status: YearStatus  # the year's status after the decision
    reason: str = ""


def year_end(fiscal_year: int) -> datetime:
    """The first moment after the fiscal year: 1 January of the next year, Norwegian time."""
    return datetime(fiscal_year + 1, 1, 1, tzinfo=BUDGET_TIME_ZONE)


def closing_authority_problem(closed_by: str, funding_ministries: frozenset[str], line_id: str,
                              fiscal_year: int) -> str | None:
    """Who may close: FIN always; a ministry only a line it funds alone that year.

    A shared line has no single owner: closing it ends every funding
    ministry's bookings for the year and lapses their money, so one of them
    may not do that for the others. FIN settles the carry-over of unspent
    appropriations in the state accounts and may close any line.
    """
    if closed_by == CLOSING_AUTHORITY or funding_ministries == {closed_by}:
        return None
    funders = ", ".join(sorted(funding_ministries)) or "no ministry"
    return (f"{closed_by} may not close {fiscal_year} for line {line_id}, which {funders} fund(s) that year: "
            f"only {CLOSING_AUTHORITY}, or a ministry for a line it funds alone, may close a year")


def decide_closing(status: YearStatus, request: Closing, funding_ministries: frozenset[str]) -> ClosingDecision:
    """Validate a closing against the year's status; closing a closed year again changes nothing."""
    if (request.line_id, request.fiscal_year) != (status.line_id, status.fiscal_year):
        raise ValueError("the closing and the status must be for the same line and year")
    if request.closed_at.tzinfo is None:
        raise ValueError("closed_at must be timezone-aware")
    problem = closing_authority_problem(request.closed_by, funding_ministries, request.line_id, request.fiscal_year)
    if problem:
        return ClosingDecision(ClosingOutcome.REFUSED, status, problem)
    if status.closing is not None:
        return ClosingDecision(ClosingOutcome.ALREADY_CLOSED, status,
                               f"{status.fiscal_year} was already closed for line {status.line_id} "
                               f"({status.closing.describe()}); nothing changes")
    if request.closed_at < year_end(request.fiscal_year):
        return ClosingDecision(ClosingOutcome.REFUSED, status,
                               f"{request.fiscal_year} runs until 31 December {request.fiscal_year}; a closing "
                               f"dated {request.closed_at.isoformat()} would lapse money that may still be spent")
    return ClosingDecision(ClosingOutcome.CLOSED, YearStatus(status.line_id, status.fiscal_year, request))


@dataclass(frozen=True)
class BookingRefusal:
    reason: str
    closing: Closing


def booking_refusal(status: YearStatus) -> BookingRefusal | None:
    """A booking (any budget event, korrigert too) to a closed year is refused with a reason naming the closing."""
    if status.closing is None:
        return None
    return BookingRefusal(
        reason=(f"fiscal year {status.fiscal_year} of line {status.line_id} is closed ({status.closing.describe()}); "
                f"book in {status.fiscal_year + 1} or later, where the carried amounts are"),
        closing=status.closing)
