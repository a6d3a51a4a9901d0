"""The demo's staged reform: three stages on the shared 0–24 line, drifting so an adjustment fires.

"Trinnvis innføring av samordnet innsats for barn og unge i risiko": owned by
BFD, with milestones reported by BFD, KD and HOD, funded by the demo's shared
line, one phase per stage. Stage 1 (utredning) is drifting as the demo runs:
the consultation paper (KD) is overdue and reported late, and utredning money
has been spent well ahead of the value earned, so the forecast leaves both
the time and the cost tolerance and a `justering` event fires.
"""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from services.shared.contract import make_event
from services.shared.money import format_ore_readable

REFORM_TITLE = "Trinnvis innføring av samordnet innsats for barn og unge i risiko"


def reform_id_for(line_id: str) -> str:
    return f"{line_id}-trinnvis"


def demo_events(line_id: str, now: datetime) -> list[dict]:
    """Wire envelopes for the demo reform and the budget events that fund its first stage.

    Dates are whole days relative to `now`; ids are derived from the day, so a
    second run on the same day publishes identical events (counted once).
    """
    today = now.astimezone(timezone.utc).date()
    reform_id = reform_id_for(line_id)
    year = today.year
    counter = iter(range(1, 100))

    def day(offset: int) -> str:
        return (today + timedelta(days=offset)).isoformat()

    def at(offset: int, hour: int = 10) -> datetime:
        # Never after `now`: a ministry reports what has happened.
        moment = datetime.combine(today + timedelta(days=offset), time(hour), tzinfo=timezone.utc)
        return min(moment, now.astimezone(timezone.utc).replace(microsecond=0))

    def event(kind: str, ministry: str, data: dict, when: datetime) -> dict:
        return make_event(kind, ministry, data, f"demo-reform-{today:%Y%m%d}-{next(counter):02d}", when)

    def milestone(mid: str, name: str, weight: int, due: int, responsible: str) -> dict:
        return {"milestone_id": mid, "name": name, "weight": weight, "due": day(due), "required": True,
                "responsible": responsible}

    def tolerances(time_days=(14, 30), cost_pct=(10, 20)) -> dict:
        return {"time_days": {"warning": time_days[0], "critical": time_days[1]},
                "cost_pct": {"warning": cost_pct[0], "critical": cost_pct[1]}}

    stages = [
        {
            "stage_id": "trinn-1-utredning", "name": "Trinn 1: Utredning og kunnskapsgrunnlag",
            "planned_start": day(-100), "planned_finish": day(40), "planned_cost_nok": "3000000.00",
            "milestones": [
                milestone("kunnskapsgrunnlag", "Kunnskapsoppsummering levert", 2, -70, "BFD"),
                milestone("horingsnotat", "Høringsnotat om samordnet tjenestemodell", 3, -15, "KD"),
                milestone("helsefaglig-vurdering", "Helsefaglig vurdering og anbefaling til port 1", 5, 40, "HOD"),
            ],
            "funding": [{"line_id": line_id, "phase": "utredning"}],
            "gate": {"required_milestones": ["kunnskapsgrunnlag", "horingsnotat", "helsefaglig-vurdering"]},
            "tolerances": tolerances(),
        },
        {
            "stage_id": "trinn-2-utvikling", "name": "Trinn 2: Utvikling av tjenestemodell og pilot",
            "planned_start": day(41), "planned_finish": day(220), "planned_cost_nok": "5000000.00",
            "milestones": [
                milestone("pilotkommuner-valgt", "Pilotkommuner valgt", 1, 70, "KD"),
                milestone("samhandlingslosning", "Digital samhandlingsløsning i drift", 3, 180, "HOD"),
                milestone("pilot-evaluert", "Pilot evaluert", 2, 220, "BFD"),
            ],
            "funding": [{"line_id": line_id, "phase": "utvikling"}],
            "gate": {"required_milestones": ["pilot-evaluert"],
                     "kpis": [{"indicator": "andel-pilotkommuner-i-drift", "op": ">=", "threshold": "0.8"}]},
            "tolerances": tolerances(),
        },
        {
            "stage_id": "trinn-3-implementering", "name": "Trinn 3: Nasjonal implementering",
            "planned_start": day(221), "planned_finish": day(400), "planned_cost_nok": "8000000.00",
            "milestones": [
                milestone("forskrift", "Forskrift fastsatt", 2, 260, "BFD"),
                milestone("nasjonal-utrulling", "Alle kommuner i gang", 5, 400, "KD"),
            ],
            "funding": [{"line_id": line_id, "phase": "implementering"}],
            "gate": {"required_milestones": ["forskrift", "nasjonal-utrulling"]},
            "tolerances": tolerances(time_days=(30, 60)),
        },
    ]

    def budget(kind: str, ministry: str, data: dict, offset: int) -> dict:
        return event(kind, ministry, {"line_id": line_id, "ministry": ministry, "fiscal_year": year, **data}, at(offset))

    return [
        # The funding ministries' contributions from their own chapters/items (Gul bok 2024).
        budget("bevilget", "KD", {"phase": "utredning", "amount_nok": "1500000.00", "kap": 226, "post": 21}, -105),
        budget("bevilget", "HOD", {"phase": "implementering", "amount_nok": "2000000.00", "kap": 765, "post": 21}, -105),
        event("reform_registrert", "BFD", {"reform_id": reform_id, "title": REFORM_TITLE, "owner": "BFD",
                                           "stages": stages}, at(-101)),
        event("milepael_startet", "BFD", {"reform_id": reform_id, "stage_id": "trinn-1-utredning",
                                          "milestone_id": "kunnskapsgrunnlag", "ministry": "BFD",
                                          "started_on": day(-100)}, at(-100)),
        event("milepael_fullfort", "BFD", {"reform_id": reform_id, "stage_id": "trinn-1-utredning",
                                           "milestone_id": "kunnskapsgrunnlag", "ministry": "BFD",
                                           "completed_on": day(-72)}, at(-72)),
        event("milepael_startet", "KD", {"reform_id": reform_id, "stage_id": "trinn-1-utredning",
                                         "milestone_id": "horingsnotat", "ministry": "KD", "started_on": day(-60)}, at(-60)),
        # Spending runs ahead of the value earned: the consultation work is paid for but not delivered.
        budget("utbetalt", "KD", {"phase": "utredning", "amount_nok": "1100000.00", "kap": 226, "post": 21,
                                  "description": "Utredningsoppdrag, høringsnotat"}, -20),
        event("milepael_forsinket", "KD", {"reform_id": reform_id, "stage_id": "trinn-1-utredning",
                                           "milestone_id": "horingsnotat", "ministry": "KD", "forecast_date": day(30),
                                           "reason": "Behov for ny runde med kommunesektoren"}, at(-1)),
    ]


def _ratio(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def summary_lines(reform_json: dict) -> list[str]:
    """A short human summary of GET /v1/reforms/{id}: per stage status, SPI/CPI, forecast vs plan, why."""
    lines = [f"{reform_json['title']} ({reform_json['reform_id']}, eier {reform_json['owner']}, per {reform_json['as_of']})"]
    for stage in reform_json["stages"]:
        variance = stage["schedule_variance_days"]
        lines.append(
            f"{stage['name']}: {stage['status']}  SPI {_ratio(stage['spi'])}  SPI(t) {_ratio(stage['spi_t'])}  "
            f"CPI {_ratio(stage['cpi'])}")
        lines.append(
            f"    slutt: prognose {stage['forecast_finish']} mot plan {stage['planned_finish']} "
            f"({'+' if variance > 0 else ''}{variance} d);  kostnad: prognose {format_ore_readable(stage['eac_ore'])} "
            f"mot plan {format_ore_readable(stage['bac_ore'])} NOK (brukt {format_ore_readable(stage['ac_ore'])}, "
            f"opptjent {format_ore_readable(stage['ev_ore'])})")
        for reason in stage["adjustment"]["reasons"]:
            lines.append(f"    justering ({reason['level']}): {reason['message']}")
    lines.append(f"Metoder: {', '.join(f'{k}={v}' for k, v in reform_json['stages'][0]['methods'].items())}"
                 if reform_json["stages"] else "")
    return [line for line in lines if line]
