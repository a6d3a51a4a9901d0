"""budsjett's tables for people: lines, cells and the audit trail as rows with Norwegian column names.

One source for `reformspor status` / `export` (CSV, xlsx, terminal) and for budsjett's HTTP lists as
CSV (`?format=csv`), so a file from either has the same columns and adds up the same way. Pure: documents
in the HTTP API's shape in, rows out; amounts as exact Decimal NOK.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.shared.money import ore_to_decimal
from services.shared.tabular import Cell

FIGURES = ("bevilget", "omdisponert", "forpliktet", "utbetalt", "disponibelt")
FLAG_NAMES = {"overcommitted": "overforpliktet", "overspent": "overforbrukt"}
CELL_COLUMNS = ("Linje", "Budsjettår", "Departement", "Fase", "Bevilget", "Omdisponert", "Forpliktet", "Utbetalt",
                "Disponibelt", "Merknader")
SUM_LABEL = "sum"
ALL_PHASES = "(alle)"
ALL_YEARS = "(alle)"


@dataclass(frozen=True)
class CellRow:
    """One line × ministry × phase × fiscal year (or the line's sum row for a year), amounts in øre."""

    line_id: str
    ministry: str
    phase: str
    bevilget_ore: int
    omdisponert_ore: int
    forpliktet_ore: int
    utbetalt_ore: int
    disponibelt_ore: int
    flags: tuple[str, ...] = ()
    fiscal_year: int | None = None  # None: every year together (a summary without cells)

    @property
    def year_label(self) -> str:
        return ALL_YEARS if self.fiscal_year is None else str(self.fiscal_year)

    def amounts_ore(self) -> tuple[int, ...]:
        return tuple(getattr(self, f"{figure}_ore") for figure in FIGURES)


def _cell_row(line_id: str, ministry: str, phase: str, amounts: dict[str, Any], flags: tuple[str, ...],
              fiscal_year: int | None) -> CellRow:
    return CellRow(line_id, ministry, phase, *(int(amounts[f"{figure}_ore"]) for figure in FIGURES), flags=flags,
                   fiscal_year=fiscal_year)


def sum_rows(line: dict[str, Any]) -> list[CellRow]:
    """A sum row per fiscal year (nothing adds one year's money to another's); one for a one-year document."""
    if "fiscal_year" in line:
        return [_cell_row(line["line_id"], SUM_LABEL, "", line["totals"], (), line["fiscal_year"])]
    by_year = line.get("by_fiscal_year")
    if not by_year:  # a summary without years
        return [_cell_row(line["line_id"], SUM_LABEL, "", line["totals"], (), None)]
    return [_cell_row(line["line_id"], SUM_LABEL, "", amounts, (), int(year)) for year, amounts in sorted(by_year.items())]


def cell_rows(line: dict[str, Any], with_sum: bool = True) -> list[CellRow]:
    """A line document (GET /v1/lines/{id}, or replay's summary with only by_ministry) as rows + its sum rows."""
    flags: dict[tuple[str, str, int | None], list[str]] = {}
    for flag in line.get("flags", []):
        key = (flag["ministry"], flag.get("phase", ALL_PHASES), flag.get("fiscal_year"))
        flags.setdefault(key, []).append(FLAG_NAMES.get(flag["flag"], flag["flag"]))
    cells = line.get("cells")
    if cells is None:  # replay's summary: per ministry only, every year together
        cells = [{"ministry": m, "phase": ALL_PHASES, **amounts} for m, amounts in line.get("by_ministry", {}).items()]
    rows = [_cell_row(line["line_id"], c["ministry"], c["phase"], c,
                      tuple(sorted(flags.get((c["ministry"], c["phase"], c.get("fiscal_year")), ()))),
                      c.get("fiscal_year"))
            for c in sorted(cells, key=lambda c: (c.get("fiscal_year") or 0, c["ministry"], c["phase"]))]
    if with_sum:
        rows += sum_rows(line)
    return rows


def cell_table(rows: list[CellRow]) -> list[tuple[Cell, ...]]:
    return [(r.line_id, r.year_label, r.ministry, r.phase, *(ore_to_decimal(a) for a in r.amounts_ore()),
             ", ".join(r.flags)) for r in rows]


LINE_COLUMNS = ("Linje", "Bevilget", "Omdisponert", "Forpliktet", "Utbetalt", "Disponibelt", "Hendelser",
                "Siste hendelse")
EVENT_COLUMNS = ("Linje", "Hendelse", "Type", "Kilde", "Tidspunkt", "Korrigerer", "Korrigert av", "Departement",
                 "Fase", "Budsjettår", "Kap/post", "Bevilget", "Omdisponert", "Forpliktet", "Utbetalt",
                 "Overført inn", "Bortfalt")
# an event moves these; disponibelt follows from them
EVENT_FIGURES = ("bevilget", "omdisponert", "forpliktet", "utbetalt", "overfort_inn", "bortfalt")
NO_POST_LABEL = "-"  # kap 0 post 0: money booked under no kap/post


def event_rows(line_id: str, event: dict[str, Any], fiscal_year: int | None = None) -> list[tuple[Cell, ...]]:
    """One row per cell (and kap/post) the event changed, so the columns add up to the line's totals; one row
    if none. With `fiscal_year`, only what it moved in that year (a closing moves money into the next year):
    no rows for an event that neither belongs to the year nor moved its money."""
    head = (line_id, event["event_id"], event["kind"], event.get("source_ministry"), event["time"],
            event.get("corrects_id"), event.get("corrected_by"))
    deltas = event.get("deltas") or []
    if fiscal_year is not None:
        deltas = [d for d in deltas if d.get("fiscal_year") == fiscal_year]
        if not deltas and event.get("fiscal_year") != fiscal_year:
            return []
    deltas = deltas or [{"ministry": None, "phase": None}]
    return [(*head, d["ministry"], d["phase"], d.get("fiscal_year"), post_label(d.get("kap"), d.get("post")),
             *(ore_to_decimal(int(d.get(f"{f}_ore", 0))) for f in EVENT_FIGURES)) for d in deltas]


def post_label(kap: int | None, post: int | None) -> str | None:
    """"840.70" as finance staff write kap/post; None when the row names none."""
    if kap is None or post is None:
        return None
    return NO_POST_LABEL if kap == 0 else f"{kap}.{post:02d}"


def line_table(lines: list[dict[str, Any]]) -> list[tuple[Cell, ...]]:
    """LINE_COLUMNS rows: one per line summary (GET /v1/lines) or line document, its totals over every year."""
    return [(line["line_id"], *(ore_to_decimal(line["totals"][f"{f}_ore"]) for f in FIGURES),
             line.get("events_applied"), line.get("last_event_time")) for line in lines]


# --- per kap/post ---------------------------------------------------------------------------------------------------

POST_FIGURES = ("bevilget", "omdisponert", "overfort_inn", "bortfalt", "forpliktet", "utbetalt", "disponibelt")
POST_COLUMNS = ("Linje", "Budsjettår", "Departement", "Fase", "Kap", "Post", "Bevilget", "Omdisponert",
                "Overført inn", "Bortfalt", "Forpliktet", "Utbetalt", "Disponibelt", "Regel")


@dataclass(frozen=True)
class PostRow:
    """One funding kap/post inside a cell (or a year's sum row, kap and post None), amounts in øre."""

    line_id: str
    fiscal_year: int | None
    ministry: str
    phase: str
    kap: int | None
    post: int | None
    bevilget_ore: int
    omdisponert_ore: int
    overfort_inn_ore: int
    bortfalt_ore: int
    forpliktet_ore: int
    utbetalt_ore: int
    disponibelt_ore: int
    carry_rule: str | None = None

    def amounts_ore(self) -> tuple[int, ...]:
        return tuple(getattr(self, f"{figure}_ore") for figure in POST_FIGURES)

    def labels(self) -> tuple[str, str, str, str, str, str]:
        year = ALL_YEARS if self.fiscal_year is None else str(self.fiscal_year)
        kap, post = ("", "") if self.kap is None else (
            (NO_POST_LABEL, NO_POST_LABEL) if self.kap == 0 else (str(self.kap), f"{self.post:02d}"))
        return self.line_id, year, self.ministry, self.phase, kap, post


def _post_row(line_id: str, fiscal_year: int | None, ministry: str, phase: str, amounts: dict[str, Any],
              kap: int | None = None, post: int | None = None) -> PostRow:
    return PostRow(line_id, fiscal_year, ministry, phase, kap, post,
                   *(int(amounts.get(f"{figure}_ore", 0)) for figure in POST_FIGURES),
                   carry_rule=amounts.get("carry_rule"))


def post_rows(line: dict[str, Any], with_sum: bool = True) -> list[PostRow]:
    """A line document's cells split per funding kap/post (each cell's `posts`), then a sum row per fiscal year
    (the year's totals, which the rows above it add up to)."""
    rows = [_post_row(line["line_id"], cell["fiscal_year"], cell["ministry"], cell["phase"], post, post["kap"],
                      post["post"])
            for cell in sorted(line.get("cells", []), key=lambda c: (c["fiscal_year"], c["ministry"], c["phase"]))
            for post in cell.get("posts", [])]
    if with_sum:
        by_year = {line["fiscal_year"]: line["totals"]} if "fiscal_year" in line else \
            {int(year): amounts for year, amounts in line.get("by_fiscal_year", {}).items()}
        rows += [_post_row(line["line_id"], year, SUM_LABEL, "", amounts) for year, amounts in sorted(by_year.items())]
    return rows


def post_table(rows: list[PostRow]) -> list[tuple[Cell, ...]]:
    return [(*r.labels(), *(ore_to_decimal(a) for a in r.amounts_ore()), r.carry_rule or "") for r in rows]
