"""Valid example events of every kind (for docs, tests and fuzzing)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from services.shared.contract import make_event

SAMPLE_TIME = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


def sample_data(kind: str, ministry: str = "BFD", line_id: str = "0-24", reform_id: str = "R-1") -> dict[str, Any]:
    milestone = {"reform_id": reform_id, "stage_id": "trinn-1", "milestone_id": "m1", "ministry": ministry}
    return {
        "bevilget": {"line_id": line_id, "ministry": ministry, "phase": "utredning", "amount_nok": "1250000.00",
                     "kap": 840, "post": 70, "fiscal_year": 2026},
        "omdisponert": {"line_id": line_id, "amount_nok": "1000.00", "fiscal_year": 2026,
                        "from": {"ministry": ministry, "phase": "utredning"},
                        "to": {"ministry": ministry, "phase": "utvikling"}},
        "forpliktet": {"line_id": line_id, "ministry": ministry, "phase": "utredning", "commitment_id": "c1",
                       "amount_nok": "500.50", "fiscal_year": 2026},
        "forpliktelse_frigitt": {"line_id": line_id, "ministry": ministry, "phase": "utredning",
                                 "commitment_id": "c1", "amount_nok": "100", "fiscal_year": 2026},
        "utbetalt": {"line_id": line_id, "ministry": ministry, "phase": "utredning", "amount_nok": 250,
                     "fiscal_year": 2026},
        "korrigert": {"line_id": line_id, "corrects_id": "e-0", "reason": "wrong post"},
        "arsavslutning": {"line_id": line_id, "fiscal_year": 2026, "reason": "årsoppgjør"},
        "reform_registrert": {
            "reform_id": reform_id, "title": "Tidlig innsats", "owner": ministry,
            "stages": [{
                "stage_id": "trinn-1", "name": "Pilot", "planned_start": "2026-01-01", "planned_finish": "2026-12-31",
                "planned_cost_nok": "2000000.00",
                "milestones": [{"milestone_id": "m1", "name": "Utredning ferdig", "weight": 10, "due": "2026-06-01",
                                "responsible": ministry}],
                "gate": {"required_milestones": ["m1"], "kpis": [{"indicator": "deltakere", "op": ">=", "threshold": "100"}]},
                "tolerances": {"time_days": {"warning": 14, "critical": 30}, "cost_pct": {"warning": 5, "critical": 10}},
            }],
        },
        "milepael_startet": dict(milestone),
        "milepael_fullfort": {**milestone, "completed_on": "2026-05-30"},
        "milepael_forsinket": {**milestone, "forecast_date": "2026-07-01", "reason": "anbud"},
        "indikator_malt": {"reform_id": reform_id, "stage_id": "trinn-1", "indicator": "deltakere", "value": "120",
                           "ministry": ministry},
        "port_beslutning": {"reform_id": reform_id, "stage_id": "trinn-1", "decision": "videre", "ministry": ministry},
        "plan_justert": {"reform_id": reform_id, "stage_id": "trinn-1", "planned_finish": "2027-03-31",
                         "planned_cost_nok": "2100000.00", "ministry": ministry},
    }[kind]


def sample_event(kind: str = "bevilget", ministry: str = "BFD", event_id: str = "e-1", **data_overrides: Any) -> dict[str, Any]:
    data = {**sample_data(kind, ministry), **data_overrides}
    return make_event(kind, ministry, data, event_id, SAMPLE_TIME)


def sample_internal_credit(ministry: str = "BFD", event_id: str = "t-1", line_id: str = "0-24") -> dict[str, Any]:
    """budsjett's cross-line credit as budsjett writes it: an internal type no publisher may send."""
    from services.budsjett.core import Transfer

    return Transfer(id=event_id, line_id=line_id, ministry=ministry, phase="utredning", fiscal_year=2026,
                    amount_ore=99_999_900,
                    origin_id="e-0", origin_line_id="0-25", source_ministry=ministry, time=SAMPLE_TIME).to_wire()
