"""Staged reforms (tiltak 1.8): the pure rules, no I/O.

`apply(reform_state, event) -> reform_state` folds validated reform events into
a plain-dict state (JSON-friendly, so a Quix state store can hold it);
`evaluate(stage, facts, today) -> StageVerdict` computes earned value, Earned
Schedule, the cost forecast, tolerance levels and gate criteria for one stage;
`reconcile(state, totals, today, now)` evaluates every stage and decides which
`justering` events to emit (one per change of condition, never repeated).

Methods, named in the code and the API:
- planned value: PV_METHOD "milestone_due_date" — the baseline earns a
  milestone's weight share of BAC on its due date (a step curve), so a stage
  whose milestones are done by their due dates is exactly on plan.
- time: Earned Schedule on that curve (TIME_METHOD). ES is the baseline time
  closest to AT at which planned value equals EV; the textbook C + I rule takes
  the end of a flat step, which would call an on-plan stage ahead of schedule.
  SPI(t) = ES/AT, IEAC(t) = AT + (PD − ES)/PF with PF = SPI(t).
- cost: EAC = BAC/CPI (COST_METHOD), = AC + (BAC − EV) while nothing is earned
  yet (CPI undefined), = BAC before any actual cost.
"""
from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any, Iterable

from services.shared.contract import Event
from services.shared.dates import format_date_nb
from services.shared.money import format_nok, format_ore

PV_METHOD = "milestone_due_date"
TIME_METHOD = "earned_schedule_ieac_t_pf_spi_t"
COST_METHOD = "eac_bac_over_cpi"
COST_METHOD_NOTHING_EARNED = "eac_ac_plus_remaining_bac"
COST_METHOD_NO_ACTUALS = "eac_bac_no_actuals"
COST_METHOD_COMPLETE = "eac_actual_cost_at_completion"

JUSTERING_TYPE = "no.reformspor.reform.justering.v1"
JUSTERING_SOURCE = "urn:no:reformspor:milepael"

STATUSES = ("planlagt", "pågår", "til vurdering", "godkjent", "justering påkrevd", "stoppet")
LEVEL_NAMES = ("ok", "warning", "critical")
MAX_PROCESSED_IDS = 5000  # reforms have few events; bound the idempotency memory anyway


class DomainRejection(ValueError):
    """A well-formed event the reform's state cannot accept (unknown stage, wrong ministry …)."""


# --- small helpers ---------------------------------------------------------------

def _d(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def round_half_even(value: Fraction) -> int:
    return round(value)  # Fraction.__round__ rounds half to even


def ratio_float(value: Fraction | None) -> float | None:
    return None if value is None else round(float(value), 4)


# --- apply: events → state --------------------------------------------------------

def _stage_from_plan(plan) -> dict[str, Any]:
    return {
        "stage_id": plan.stage_id,
        "name": plan.name,
        "planned_start": plan.planned_start.isoformat(),
        "planned_finish": plan.planned_finish.isoformat(),
        "planned_cost_ore": plan.planned_cost_ore,
        "funding": [{"line_id": f.line_id, "phase": f.phase} for f in plan.funding],
        "gate": {
            "required_milestones": list(plan.gate.required_milestones),
            "kpis": [{"indicator": k.indicator, "op": k.op, "threshold": k.threshold} for k in plan.gate.kpis],
        },
        "tolerances": {
            "time_days": {"warning": plan.tolerances.time_days.warning, "critical": plan.tolerances.time_days.critical},
            "cost_pct": {"warning": plan.tolerances.cost_pct.warning, "critical": plan.tolerances.cost_pct.critical},
            "cost_ore": (
                {"warning": plan.tolerances.cost_nok.warning_ore, "critical": plan.tolerances.cost_nok.critical_ore}
                if plan.tolerances.cost_nok is not None else None
            ),
        },
        "milestones": [
            {
                "milestone_id": m.milestone_id,
                "name": m.name,
                "weight": m.weight,
                "due": m.due.isoformat(),
                "required": m.required,
                "responsible": m.responsible,
                "state": "planlagt",  # planlagt | pågår | fullført
                "started_on": None,
                "completed_on": None,
                "forecast_date": None,
            }
            for m in plan.milestones
        ],
        "kpis": {},
        "decision": None,
        "baseline_version": 1,
        "alert": {"active": False, "signature": [], "seq": 0, "baseline_version": 1},
    }


def _baseline_record(stage: dict, event: Event, reason: str) -> dict[str, Any]:
    return {
        "stage_id": stage["stage_id"],
        "version": stage["baseline_version"],
        "planned_start": stage["planned_start"],
        "planned_finish": stage["planned_finish"],
        "planned_cost_ore": stage["planned_cost_ore"],
        "milestone_due": {m["milestone_id"]: m["due"] for m in stage["milestones"]},
        "reason": reason,
        "event_id": event.id,
        "recorded_at": event.time.isoformat(),
    }


def _find_stage(state: dict, stage_id: str) -> dict:
    for stage in state["stages"]:
        if stage["stage_id"] == stage_id:
            return stage
    raise DomainRejection(f"reform {state['reform_id']} has no stage {stage_id!r}")


def _find_milestone(stage: dict, milestone_id: str) -> dict:
    for milestone in stage["milestones"]:
        if milestone["milestone_id"] == milestone_id:
            return milestone
    raise DomainRejection(f"stage {stage['stage_id']} has no milestone {milestone_id!r}")


def apply(reform_state: dict | None, event: Event) -> dict:
    """Fold one validated reform event into the reform's state (a new dict; the input is untouched).

    Idempotent: an event id already applied returns the state unchanged, so a
    redelivery after a crash never counts twice.
    """
    if reform_state is not None and event.id in reform_state["processed_ids"]:
        return reform_state
    data = event.data
    if event.kind == "reform_registrert":
        if reform_state is not None:
            raise DomainRejection(f"reform {data.reform_id} is already registered; send plan_justert to re-plan a stage")
        state = {
            "reform_id": data.reform_id,
            "title": data.title,
            "owner": data.owner,
            "registered_at": event.time.isoformat(),
            "as_of": event.time.date().isoformat(),
            "processed_ids": [],
            "stages": [_stage_from_plan(plan) for plan in data.stages],
            "decisions": [],
            "baselines": [],
        }
        for stage in state["stages"]:
            state["baselines"].append(_baseline_record(stage, event, "registrert"))
    else:
        if reform_state is None:
            raise DomainRejection(f"reform {data.reform_id} is not registered (reform_registrert must come first)")
        state = copy.deepcopy(reform_state)
        stage = _find_stage(state, data.stage_id)
        if event.kind in ("milepael_startet", "milepael_fullfort", "milepael_forsinket"):
            milestone = _find_milestone(stage, data.milestone_id)
            if data.ministry != milestone["responsible"]:
                raise DomainRejection(
                    f"milestone {milestone['milestone_id']} is reported by {milestone['responsible']}, not {data.ministry}")
            if event.kind == "milepael_startet":
                if milestone["state"] == "planlagt":
                    milestone["state"] = "pågår"
                milestone["started_on"] = (data.started_on or event.time.date()).isoformat()
            elif event.kind == "milepael_fullfort":
                milestone["state"] = "fullført"
                milestone["completed_on"] = (data.completed_on or event.time.date()).isoformat()
                milestone["forecast_date"] = None
            else:
                if milestone["state"] != "fullført":
                    milestone["forecast_date"] = data.forecast_date.isoformat()
        elif event.kind == "indikator_malt":
            stage["kpis"][data.indicator] = {
                "value": data.value,
                "measured_on": (data.measured_on or event.time.date()).isoformat(),
            }
        elif event.kind == "port_beslutning":
            if data.ministry != state["owner"]:
                raise DomainRejection(f"gate decisions for {state['reform_id']} are made by {state['owner']}, not {data.ministry}")
            stage["decision"] = data.decision
            state["decisions"].append({
                "event_id": event.id,
                "stage_id": stage["stage_id"],
                "decision": data.decision,
                "rationale": data.rationale,
                "ministry": data.ministry,
                "decided_at": event.time.isoformat(),
                "baseline_version": stage["baseline_version"],
            })
        elif event.kind == "plan_justert":
            if data.ministry != state["owner"]:
                raise DomainRejection(f"re-planning {state['reform_id']} is done by {state['owner']}, not {data.ministry}")
            if stage["decision"] == "stopp":
                raise DomainRejection(f"stage {stage['stage_id']} is stopped and cannot be re-planned")
            if data.planned_finish <= date.fromisoformat(stage["planned_start"]):
                raise DomainRejection("planned_finish must be after the stage's planned_start")
            dues = {m.milestone_id: m.due for m in data.milestones}
            for milestone_id in dues:
                _find_milestone(stage, milestone_id)
            stage["planned_finish"] = data.planned_finish.isoformat()
            stage["planned_cost_ore"] = data.planned_cost_ore
            for milestone in stage["milestones"]:
                if milestone["milestone_id"] in dues:
                    milestone["due"] = dues[milestone["milestone_id"]].isoformat()
            stage["baseline_version"] += 1
            # A new baseline answers an adjustment: the gate is open again.
            stage["decision"] = None
            state["baselines"].append(_baseline_record(stage, event, data.reason or "plan_justert"))
        else:
            raise DomainRejection(f"milepael does not handle {event.kind} events")
    state["as_of"] = max(state["as_of"], event.time.date().isoformat())
    state["processed_ids"] = (state["processed_ids"] + [event.id])[-MAX_PROCESSED_IDS:]
    return state


# --- evaluate: one stage ---------------------------------------------------------

@dataclass(frozen=True)
class StageFacts:
    """What the stage's own events do not carry: actual cost from budsjett's totals."""

    actual_cost_ore: int = 0


@dataclass(frozen=True)
class Reason:
    code: str          # time_tolerance | cost_tolerance | milestone_overdue | kpi_threshold | gate_missing
    dimension: str     # time | cost | gate
    level: str         # warning | critical
    message: str       # Norwegian, as finance staff read it ("9 500 000,00 kr", "1. mars 2026")
    message_en: str    # the same in English (what `message` said before)
    subject: str = ""  # milestone or indicator the reason is about

    @property
    def signature(self) -> str:
        return f"{self.code}:{self.subject}:{self.level}"


@dataclass(frozen=True)
class StageVerdict:
    stage_id: str
    status: str
    today: date
    planned_start: date
    planned_finish: date
    bac_ore: int
    pv_ore: int
    ev_ore: int
    ac_ore: int
    eac_ore: int
    cost_variance_ore: int          # EAC − BAC (positive = overrun)
    spi: Fraction | None
    cpi: Fraction | None
    es_days: Fraction
    at_days: int
    pd_days: int
    spi_t: Fraction | None
    forecast_finish: date
    schedule_variance_days: int     # forecast finish − planned finish (positive = late)
    time_level: int                 # 0 ok, 1 warning, 2 critical
    cost_level: int
    reasons: tuple[Reason, ...]
    cost_method: str
    complete: bool
    pv_method: str = PV_METHOD
    time_method: str = TIME_METHOD

    @property
    def adjustment_required(self) -> bool:
        return bool(self.reasons)

    @property
    def signature(self) -> list[str]:
        return sorted(r.signature for r in self.reasons)

    def numbers(self) -> dict[str, Any]:
        """The numbers behind a verdict, JSON-ready (money in øre and NOK)."""
        return {
            "bac_ore": self.bac_ore, "bac_nok": format_ore(self.bac_ore),
            "pv_ore": self.pv_ore, "pv_nok": format_ore(self.pv_ore),
            "ev_ore": self.ev_ore, "ev_nok": format_ore(self.ev_ore),
            "ac_ore": self.ac_ore, "ac_nok": format_ore(self.ac_ore),
            "eac_ore": self.eac_ore, "eac_nok": format_ore(self.eac_ore),
            "cost_variance_ore": self.cost_variance_ore, "cost_variance_nok": format_ore(self.cost_variance_ore),
            "spi": ratio_float(self.spi),
            "cpi": ratio_float(self.cpi),
            "spi_t": ratio_float(self.spi_t),
            "es_days": ratio_float(self.es_days),
            "at_days": self.at_days,
            "pd_days": self.pd_days,
            "planned_finish": self.planned_finish.isoformat(),
            "forecast_finish": self.forecast_finish.isoformat(),
            "schedule_variance_days": self.schedule_variance_days,
            "time_tolerance_level": LEVEL_NAMES[self.time_level],
            "cost_tolerance_level": LEVEL_NAMES[self.cost_level],
            "as_of": self.today.isoformat(),
        }

    def methods(self) -> dict[str, str]:
        return {"planned_value": self.pv_method, "schedule_forecast": self.time_method, "cost_forecast": self.cost_method}


def planned_value_share(day_offsets_weights: list[tuple[int, int]], at_day: int) -> Fraction:
    """Share of the total weight whose due day (days from start) is on or before `at_day`."""
    total = sum(w for _, w in day_offsets_weights)
    return Fraction(sum(w for d, w in day_offsets_weights if d <= at_day), total)


def earned_schedule(day_offsets_weights: list[tuple[int, int]], ev_share: Fraction, at_days: int, pd_days: int) -> Fraction:
    """ES on the milestone step baseline: the baseline time closest to AT where PV equals EV.

    t_lo is when the plan first reached EV, t_hi when it first went past it
    (PD if never); ES = clamp(AT, t_lo, t_hi).
    """
    total = sum(w for _, w in day_offsets_weights)
    points = sorted(day_offsets_weights)
    cumulative = Fraction(0)
    t_lo: int | None = 0 if ev_share == 0 else None
    t_hi: int | None = None
    days = sorted({d for d, _ in points})
    for day in days:
        cumulative += Fraction(sum(w for d, w in points if d == day), total)
        if t_lo is None and cumulative >= ev_share:
            t_lo = day
        if cumulative > ev_share:
            t_hi = day
            break
    t_lo = pd_days if t_lo is None else t_lo
    t_hi = pd_days if t_hi is None else t_hi
    return Fraction(min(max(at_days, t_lo), t_hi))


def _level(variance: int, warning: int, critical: int) -> int:
    if variance > critical:
        return 2
    if variance > warning:
        return 1
    return 0


def _kpi_passes(value: Decimal, op: str, threshold: Decimal) -> bool:
    return {">=": value >= threshold, "<=": value <= threshold, ">": value > threshold, "<": value < threshold}[op]


# --- reasons: Norwegian for finance staff, the English beside it ---------------------------------

KPI_OPS_NB = {">=": "minst", "<=": "høyst", ">": "over", "<": "under"}

GATE_DECIDED_TO_ADJUST = Reason(
    "gate_decision", "gate", "critical",
    "porten besluttet justering (juster): venter på ny basisplan (plan_justert)",
    "the gate decided to adjust (juster): waiting for a new baseline (plan_justert)")


def _days_nb(days: int) -> str:
    return f"{days} dag" if abs(days) == 1 else f"{days} dager"


def _decimal_nb(text: str) -> str:
    """A KPI value or threshold ("0.62") with the decimal comma ("0,62")."""
    return text.replace(".", ",")


def time_reason(level: str, forecast_finish: date, planned_finish: date, variance_days: int,
                tolerance: dict) -> Reason:
    warning, critical = tolerance["warning"], tolerance["critical"]
    return Reason(
        "time_tolerance", "time", level,
        f"prognosert ferdigdato {format_date_nb(forecast_finish)} er {_days_nb(variance_days)} etter planlagt "
        f"ferdigdato {format_date_nb(planned_finish)} (toleranse: varsel {warning}, kritisk {critical} dager)",
        f"forecast finish {forecast_finish.isoformat()} is {variance_days} days after planned finish "
        f"{planned_finish.isoformat()} (tolerance: warning {warning}, critical {critical} days)")


def cost_reason(level: str, eac_ore: int, variance_ore: int, bac_ore: int, tolerances: dict) -> Reason:
    pct = tolerances["cost_pct"]
    nok = tolerances.get("cost_ore")
    tolerance_nb = f"varsel {pct['warning']} %, kritisk {pct['critical']} %"
    tolerance_en = f"warning {pct['warning']} %, critical {pct['critical']} %"
    if nok:
        tolerance_nb += f"; varsel {format_nok(nok['warning'])}, kritisk {format_nok(nok['critical'])}"
        tolerance_en += f"; warning {format_ore(nok['warning'])} NOK, critical {format_ore(nok['critical'])} NOK"
    return Reason(
        "cost_tolerance", "cost", level,
        f"prognosert kostnad ved ferdigstillelse {format_nok(eac_ore)} er {format_nok(variance_ore)} over "
        f"planlagt {format_nok(bac_ore)} (toleranse: {tolerance_nb})",
        f"forecast cost at completion {format_ore(eac_ore)} NOK is {format_ore(variance_ore)} NOK over "
        f"the planned {format_ore(bac_ore)} NOK (tolerance: {tolerance_en})")


def milestone_reasons(required: list[dict], today: date, at_gate: bool) -> list[Reason]:
    """A required milestone not done: overdue once its due date has passed, missing at the gate."""
    reasons = []
    for m in required:
        if m["state"] == "fullført":
            continue
        due = date.fromisoformat(m["due"])
        if due < today:
            reasons.append(Reason(
                "milestone_overdue", "gate", "critical",
                f"påkrevd milepæl {m['milestone_id']} ({m['name']}) skulle vært fullført {format_date_nb(due)} "
                f"og er ikke fullført",
                f"required milestone {m['milestone_id']} ({m['name']}) was due {due.isoformat()} and is not done",
                m["milestone_id"]))
        elif at_gate:
            reasons.append(Reason(
                "gate_missing", "gate", "critical",
                f"påkrevd milepæl {m['milestone_id']} er ikke fullført ved porten",
                f"required milestone {m['milestone_id']} is not done at the gate", m["milestone_id"]))
    return reasons


def kpi_reasons(criteria: list[dict], measured: dict[str, dict]) -> list[Reason]:
    """Gate criteria on indicators: each must be measured and pass its threshold."""
    reasons = []
    for kpi in criteria:
        name, value = kpi["indicator"], measured.get(kpi["indicator"], {}).get("value")
        if value is None:
            reasons.append(Reason("kpi_threshold", "gate", "critical",
                                  f"indikator {name} er ikke målt ved porten",
                                  f"indicator {name} has not been measured at the gate", name))
        elif not _kpi_passes(Decimal(value), kpi["op"], Decimal(kpi["threshold"])):
            reasons.append(Reason(
                "kpi_threshold", "gate", "critical",
                f"indikator {name} = {_decimal_nb(value)}, porten krever {KPI_OPS_NB[kpi['op']]} "
                f"{_decimal_nb(kpi['threshold'])}",
                f"indicator {name} = {value}, gate requires {kpi['op']} {kpi['threshold']}", name))
    return reasons


def evaluate(stage: dict, facts: StageFacts, today: date) -> StageVerdict:
    """Earned value, Earned Schedule, cost forecast, tolerances and gate criteria for one stage."""
    start = date.fromisoformat(stage["planned_start"])
    finish = date.fromisoformat(stage["planned_finish"])
    bac = stage["planned_cost_ore"]
    pd_days = (finish - start).days
    milestones = stage["milestones"]
    total_weight = sum(m["weight"] for m in milestones)
    offsets = [(min(max((date.fromisoformat(m["due"]) - start).days, 0), pd_days), m["weight"]) for m in milestones]
    done = [m for m in milestones if m["state"] == "fullført"]
    complete = len(done) == len(milestones)
    ev_share = Fraction(sum(m["weight"] for m in done), total_weight)
    ev = round_half_even(bac * ev_share)
    ac = facts.actual_cost_ore

    if complete:
        actual_finish = max(date.fromisoformat(m["completed_on"]) for m in done)
        at_days = max((actual_finish - start).days, 1)
        es = Fraction(pd_days)
        forecast_finish = actual_finish
    else:
        at_days = max((today - start).days, 0)
        es = earned_schedule(offsets, ev_share, at_days, pd_days)
        if at_days == 0 or es == 0:
            # Not started, or nothing earned yet against a plan that expected
            # something: IEAC(t) is undefined; fall back to the plan, pushed by
            # what ministries report and by today.
            ieac_days = Fraction(pd_days) if at_days == 0 else None
        else:
            ieac_days = at_days + (pd_days - es) / (es / at_days)
        candidates = [today if today > finish else finish]
        if ieac_days is not None:
            candidates.append(start + timedelta(days=round_half_even(ieac_days)))
        candidates += [date.fromisoformat(m["forecast_date"]) for m in milestones
                       if m["state"] != "fullført" and m["forecast_date"]]
        # An open milestone cannot finish before today, nor the stage before its last open milestone.
        forecast_finish = max(candidates)
        if ieac_days is None:
            forecast_finish = max(forecast_finish, today + timedelta(days=pd_days - int(es)))
    spi_t = (es / at_days) if at_days > 0 else None

    pv = bac if complete else round_half_even(bac * planned_value_share(offsets, at_days))
    spi = Fraction(ev, pv) if pv > 0 else None
    cpi = Fraction(ev, ac) if ac > 0 else None
    if complete:
        eac, cost_method = ac, COST_METHOD_COMPLETE
    elif ac == 0:
        eac, cost_method = bac, COST_METHOD_NO_ACTUALS
    elif ev == 0:
        eac, cost_method = ac + bac, COST_METHOD_NOTHING_EARNED
    else:
        eac, cost_method = round_half_even(bac / cpi), COST_METHOD
    cost_variance = eac - bac
    schedule_variance_days = (forecast_finish - finish).days

    tol = stage["tolerances"]
    time_level = _level(schedule_variance_days, tol["time_days"]["warning"], tol["time_days"]["critical"])
    # Percent tolerance compared exactly: variance/BAC > pct/100 ⇔ 100·variance > pct·BAC.
    cost_level = _level(100 * cost_variance, tol["cost_pct"]["warning"] * bac, tol["cost_pct"]["critical"] * bac)
    if tol.get("cost_ore"):
        cost_level = max(cost_level, _level(cost_variance, tol["cost_ore"]["warning"], tol["cost_ore"]["critical"]))

    reasons: list[Reason] = []
    if time_level:
        reasons.append(time_reason(LEVEL_NAMES[time_level], forecast_finish, finish, schedule_variance_days,
                                   tol["time_days"]))
    if cost_level:
        reasons.append(cost_reason(LEVEL_NAMES[cost_level], eac, cost_variance, bac, tol))
    required = set(stage["gate"]["required_milestones"]) | {m["milestone_id"] for m in milestones if m["required"]}
    at_gate = complete or today > finish  # the gate is at the end of the planned finish day
    reasons += milestone_reasons([m for m in milestones if m["milestone_id"] in required], today, at_gate)
    if at_gate:
        reasons += kpi_reasons(stage["gate"]["kpis"], stage["kpis"])

    decision = stage["decision"]
    if decision in ("stopp", "videre"):
        # The gate has decided: the stage is closed and no longer raises adjustments.
        reasons = []
    elif decision == "juster":
        reasons.append(GATE_DECIDED_TO_ADJUST)
    if decision == "stopp":
        status = "stoppet"
    elif decision == "videre":
        status = "godkjent"
    elif decision == "juster" or reasons:
        status = "justering påkrevd"
    elif complete:
        status = "til vurdering"
    elif today >= start or any(m["state"] != "planlagt" for m in milestones):
        status = "pågår"
    else:
        status = "planlagt"

    return StageVerdict(
        stage_id=stage["stage_id"], status=status, today=today, planned_start=start, planned_finish=finish,
        bac_ore=bac, pv_ore=pv, ev_ore=ev, ac_ore=ac, eac_ore=eac, cost_variance_ore=cost_variance,
        spi=spi, cpi=cpi, es_days=es, at_days=at_days, pd_days=pd_days, spi_t=spi_t,
        forecast_finish=forecast_finish, schedule_variance_days=schedule_variance_days,
        time_level=time_level, cost_level=cost_level, reasons=tuple(reasons), cost_method=cost_method,
        complete=complete,
    )


# --- facts from budsjett's totals -----------------------------------------------------

_ORE_TEXT = re.compile(r"-?[0-9]{1,20}")


def totals_summary(message: dict) -> dict[str, Any]:
    """Reduce one totals message (budsjett, key line_id) to what milepael needs: utbetalt per phase."""
    if not isinstance(message, dict) or not isinstance(message.get("line_id"), str):
        raise ValueError("totals message needs a line_id")
    cells = message.get("cells")
    if not isinstance(cells, list):
        raise ValueError("totals message needs a cells list")
    by_phase: dict[str, int] = {}
    for cell in cells:
        if not isinstance(cell, dict) or not isinstance(cell.get("phase"), str):
            raise ValueError("every cell needs a phase")
        value = cell.get("utbetalt_ore", 0)
        # A string must be ASCII digits: int() would also read other scripts' digits, "1_000" and " 7\n".
        if isinstance(value, str) and _ORE_TEXT.fullmatch(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("utbetalt_ore must be an integer number of øre (ASCII digits 0-9)")
        by_phase[cell["phase"]] = by_phase.get(cell["phase"], 0) + value
    return {"line_id": message["line_id"], "updated_at": message.get("updated_at"), "utbetalt_ore_by_phase": by_phase}


def stage_facts(stage: dict, totals: dict[str, dict]) -> StageFacts:
    """Actual cost = utbetalt on the stage's funding (line, phase) cells."""
    actual = 0
    for funding in stage["funding"]:
        summary = totals.get(funding["line_id"])
        if summary:
            actual += summary["utbetalt_ore_by_phase"].get(funding["phase"], 0)
    return StageFacts(actual_cost_ore=actual)


def funded_lines(state: dict) -> set[str]:
    return {f["line_id"] for stage in state["stages"] for f in stage["funding"]}


# --- reconcile: every stage, and the justering events to emit --------------------------

def justering_id(reform_id: str, stage_id: str, seq: int, state_name: str, signature: Iterable[str]) -> str:
    """Deterministic: a replay of the same history produces the same id (consumers dedupe by id)."""
    text = "|".join([reform_id, stage_id, str(seq), state_name, *signature])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _justering_event(state: dict, stage: dict, verdict: StageVerdict, seq: int, state_name: str,
                     signature: list[str], reasons: list[dict], now: datetime) -> dict[str, Any]:
    levels = [r["level"] for r in reasons]
    return {
        "specversion": "1.0",
        "id": justering_id(state["reform_id"], stage["stage_id"], seq, state_name, signature),
        "source": JUSTERING_SOURCE,
        "type": JUSTERING_TYPE,
        "time": now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "subject": f"{state['reform_id']}/{stage['stage_id']}",
        "datacontenttype": "application/json",
        "data": {
            "reform_id": state["reform_id"],
            "stage_id": stage["stage_id"],
            "state": state_name,  # "required" | "cleared"
            "level": ("critical" if "critical" in levels else "warning") if levels else None,
            "baseline_version": stage["baseline_version"],
            "reasons": reasons,
            "numbers": verdict.numbers(),
            "methods": verdict.methods(),
        },
    }


def cleared_reason(new_baseline_version: int | None, decision: str | None) -> Reason:
    """Why an active justering ends: a new baseline, the gate closed the stage, or back inside tolerance."""
    if new_baseline_version is not None:
        return Reason("cleared", "", "", f"planlagt på nytt: basisplan versjon {new_baseline_version}",
                      f"re-planned: baseline version {new_baseline_version}")
    if decision in ("stopp", "videre"):
        return Reason("cleared", "", "", "trinnet er avsluttet ved porten", "stage closed at the gate")
    return Reason("cleared", "", "", "tilbake innenfor toleransen", "back inside tolerance")


def reconcile(reform_state: dict, totals: dict[str, dict], today: date, now: datetime
              ) -> tuple[dict, list[dict], dict[str, StageVerdict]]:
    """Evaluate every stage; return the new state, the justering events to emit and the verdicts.

    One `required` event per change of condition (reasons and levels, per
    baseline version); one `cleared` event when the stage is back inside its
    tolerances, re-planned or closed by the gate. An unchanged condition emits nothing.
    """
    state = copy.deepcopy(reform_state)
    as_of = max(date.fromisoformat(state["as_of"]), today)
    state["as_of"] = as_of.isoformat()
    events: list[dict] = []
    verdicts: dict[str, StageVerdict] = {}
    for stage in state["stages"]:
        verdict = evaluate(stage, stage_facts(stage, totals), as_of)
        verdicts[stage["stage_id"]] = verdict
        alert = stage["alert"]
        signature = verdict.signature
        version = stage["baseline_version"]
        if alert["active"] and (alert["baseline_version"] != version or not signature):
            reason = cleared_reason(version if alert["baseline_version"] != version else None, stage["decision"])
            alert["seq"] += 1
            events.append(_justering_event(state, stage, verdict, alert["seq"], "cleared", alert["signature"],
                                           [asdict(reason)], now))
            alert.update(active=False, signature=[], baseline_version=version)
        if signature and (not alert["active"] or alert["signature"] != signature):
            alert["seq"] += 1
            events.append(_justering_event(state, stage, verdict, alert["seq"], "required", signature,
                                           [asdict(r) for r in verdict.reasons], now))
            alert.update(active=True, signature=signature, baseline_version=version)
    return state, events, verdicts


def reform_view(state: dict, verdicts: dict[str, StageVerdict], adjustments: list[dict] | None = None) -> dict[str, Any]:
    """The API document for one reform (also what the read model stores)."""
    stages = []
    for stage in state["stages"]:
        verdict = verdicts[stage["stage_id"]]
        tol = stage["tolerances"]
        stages.append({
            "stage_id": stage["stage_id"],
            "name": stage["name"],
            "status": verdict.status,
            "planned_start": stage["planned_start"],
            "planned_finish": stage["planned_finish"],
            "baseline_version": stage["baseline_version"],
            "decision": stage["decision"],
            "funding": stage["funding"],
            **verdict.numbers(),
            "methods": verdict.methods(),
            "tolerances": {
                "time_days": tol["time_days"],
                "cost_pct": tol["cost_pct"],
                "cost_nok": ({k: format_ore(v) for k, v in tol["cost_ore"].items()} if tol.get("cost_ore") else None),
            },
            "adjustment_required": verdict.adjustment_required,
            "adjustment": {
                "required": verdict.adjustment_required,
                "reasons": [asdict(r) for r in verdict.reasons],
            },
            "milestones": [
                {k: m[k] for k in ("milestone_id", "name", "weight", "due", "required", "responsible", "state",
                                   "started_on", "completed_on", "forecast_date")}
                for m in stage["milestones"]
            ],
            "kpis": stage["kpis"],
            "gate": stage["gate"],
        })
    return {
        "reform_id": state["reform_id"],
        "title": state["title"],
        "owner": state["owner"],
        "registered_at": state["registered_at"],
        "as_of": state["as_of"],
        "adjustment_required": any(s["adjustment"]["required"] for s in stages),
        "stages": stages,
        "decisions": state["decisions"],
        "baselines": state["baselines"],
        "adjustments": adjustments or [],
    }
