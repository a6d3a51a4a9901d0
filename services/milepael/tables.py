"""milepael's table for people: the reforms' stages as rows with Norwegian column names.

Served as CSV by GET /v1/reforms and /v1/reforms/{id} (?format=csv), in the same form as budsjett's lists
and `reformspor export`. Pure: reform documents (GET /v1/reforms/{id}) in, rows out.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.shared.money import ore_to_decimal
from services.shared.tabular import Cell

STAGE_COLUMNS = ("Reform", "Tittel", "Eier", "Vurdert per", "Trinn", "Navn", "Status", "Grunnlag (versjon)",
                 "Planlagt start", "Planlagt slutt", "Prognose slutt", "Tidsavvik (dager)",
                 "Budsjett ved fullføring", "Planlagt verdi", "Opptjent verdi", "Faktisk kostnad", "Prognose kostnad",
                 "SPI(t)", "CPI", "Tidstoleranse", "Kostnadstoleranse", "Justering påkrevd")
# The tolerance levels as the dashboards show them.
LEVELS_NB = {"ok": "innenfor", "warning": "varsel", "critical": "kritisk"}
MONEY_FIELDS = ("bac_ore", "pv_ore", "ev_ore", "ac_ore", "eac_ore")


def _ratio(value: float | None) -> Decimal | None:
    """SPI/CPI as an exact decimal (a decimal comma in the CSV), three places."""
    return None if value is None else round(Decimal(str(value)), 3)


def _level(name: str) -> str:
    return LEVELS_NB.get(name, name)


def stage_table(reforms: list[dict[str, Any]]) -> list[tuple[Cell, ...]]:
    """STAGE_COLUMNS rows: one per stage of each reform document."""
    return [(r["reform_id"], r["title"], r["owner"], r["as_of"], s["stage_id"], s["name"], s["status"],
             s["baseline_version"], s["planned_start"], s["planned_finish"], s["forecast_finish"],
             s["schedule_variance_days"], *(ore_to_decimal(s[name]) for name in MONEY_FIELDS), _ratio(s["spi_t"]),
             _ratio(s["cpi"]), _level(s["time_tolerance_level"]), _level(s["cost_tolerance_level"]),
             "ja" if s["adjustment_required"] else "nei")
            for r in reforms for s in r["stages"]]
