"""`reformspor status --posts`, `export posts` and `export --year`, against budsjett's own documents: a fake
budsjett serving `http.line_document` of a real ledger and the audit trail of a real (SQLite) read model."""
from __future__ import annotations

import json
import urllib.parse
from decimal import Decimal

import pytest

from services.budsjett import cli as budsjett_cli
from services.budsjett import core
from services.budsjett.http import line_document
from services.budsjett.readmodel import ReadModel
from services.cli import main
from services.shared.money import format_ore, format_ore_readable
from services.shared.tabular import read_table
from tests.unit.test_budsjett_core import bevilget, closing, forpliktet, omdisponert, utbetalt
from tests.unit.test_budsjett_perpost import catalogue
from tests.support.json_server import JsonServer

EVENTS = [
    bevilget("b25", "0-24", "BFD", "utredning", "1000.00", kap=840, post=21, year=2025),
    bevilget("d25", "0-24", "BFD", "utredning", "2000.00", kap=842, post=1, year=2025),
    utbetalt("u25", "0-24", "BFD", "utredning", "300.00", kap=842, post=1, year=2025),
    bevilget("k25", "ung-1", "KD", "utvikling", "400.00", kap=226, post=21, year=2025),  # a line with 2025 money only
    closing("c25", "0-24", "FIN", 2025),
    bevilget("b26", "0-24", "BFD", "utredning", "500.00", kap=840, post=21),
    bevilget("k26", "0-24", "KD", "utvikling", "700.00", kap=226, post=21),
    forpliktet("f26", "0-24", "KD", "utvikling", "K1", "100.00"),
    omdisponert("o26", "0-24", ("BFD", "utredning"), ("BFD", "utvikling"), "1200.00"),
    utbetalt("u26", "0-24", "BFD", "utvikling", "50.25", kap=840, post=21),
]
FIGURES = ("Bevilget", "Omdisponert", "Forpliktet", "Utbetalt")
POST_FIGURES = {"Bevilget": "bevilget_ore", "Omdisponert": "omdisponert_ore", "Overført inn": "overfort_inn_ore",
                "Bortfalt": "bortfalt_ore", "Forpliktet": "forpliktet_ore", "Utbetalt": "utbetalt_ore",
                "Disponibelt": "disponibelt_ore"}


class Ledger:
    """GET /v1/lines, /v1/lines/{id}[?fiscal_year=] and /v1/lines/{id}/events as budsjett builds them."""

    def __init__(self, store: dict, model: ReadModel):
        self.lines = core.lines_in(store)
        self.model = model
        self.paths: list[str] = []  # what the stand-in server was asked for (set when it serves)

    def route(self, path: str, query: dict[str, str]) -> dict | None:
        line_id = urllib.parse.unquote(path.removeprefix("/v1/lines/").removesuffix("/events"))
        if path == "/v1/lines":
            return {"lines": [{"line_id": i} for i in sorted(self.lines)], "catalogue": {}}
        if path.endswith("/events") and line_id in self.lines:
            return {"events": self.model.events(line_id, int(query["limit"]), int(query.get("offset", 0)))}
        if line_id in self.lines:
            year = int(query["fiscal_year"]) if "fiscal_year" in query else None
            return line_document(self.lines[line_id], fiscal_year=year)
        return None


@pytest.fixture
def ledger(monkeypatch, tmp_path):
    store: dict = {}
    model = ReadModel(f"sqlite:///{tmp_path / 'budsjett.db'}")
    log = list(EVENTS)
    batch = model.new_batch()
    for offset, message in enumerate(log):  # cross-line credits appended as the worker sends them
        outcome = core.process(store, offset, message, catalogue())
        assert outcome.status == "applied", outcome.reasons
        batch.add(outcome, message, 0, offset)
        log.extend(outcome.sends)
    model.write(batch)
    ledger = Ledger(store, model)
    try:
        with JsonServer(ledger.route) as server:
            monkeypatch.setenv("REFORMSPOR_BUDSJETT_PORT", str(server.port))
            monkeypatch.setenv("REFORMSPOR_HOME", str(tmp_path / "home"))
            ledger.paths = server.paths
            yield ledger
    finally:
        model.close()


def _ore(value) -> int:
    return int(Decimal(str(value).replace(",", ".")) * 100)


def _year_totals(ledger: Ledger, year: int) -> dict[str, int]:
    cells = [cell for line in ledger.lines.values() for cell in core.line_cells(line, year)]
    return core.sum_amounts(cells)


def test_export_posts_columns_add_up_to_each_years_totals(ledger, tmp_path):
    path = tmp_path / "poster.xlsx"
    assert main(["export", "posts", "-o", str(path)]) == 0
    table = read_table(path)
    assert table.columns == budsjett_cli.POST_COLUMNS
    for year in (2025, 2026):
        rows = [r.values for r in table.records if str(r.values["Budsjettår"]) == str(year)]
        for column, field in POST_FIGURES.items():
            assert sum(_ore(r[column]) for r in rows) == _year_totals(ledger, year)[field], (year, column)
    carried = {(r.values["Kap"], r.values["Post"]): (r.values["Overført inn"], r.values["Regel"])
               for r in table.records if str(r.values["Budsjettår"]) == "2026" and r.values["Fase"] == "utredning"}
    # 2025's closing, per post: «kan overføres» carried its 1 000 kr, post 01 its 5 % of 2 000 kr
    assert {k: (_ore(v), rule) for k, (v, rule) in carried.items()} == {
        ("840", "21"): (100000, "kan_overfores"), ("842", "01"): (10000, "drift_5_prosent")}


def test_status_posts_rows_add_up_to_the_sum_rows_of_the_line(ledger, capsys):
    assert main(["status", "--line", "0-24", "--posts", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["kap"], r["post"]) for r in rows if r["ministry"] != "sum"} == {(840, 21), (842, 1), (226, 21)}
    for year in (2025, 2026):
        post_rows = [r for r in rows if r["fiscal_year"] == year and r["ministry"] != "sum"]
        sum_row, = [r for r in rows if r["fiscal_year"] == year and r["ministry"] == "sum"]
        for field in POST_FIGURES.values():
            assert sum(r[field] for r in post_rows) == sum_row[field], (year, field)
        assert sum_row["bevilget_nok"] == format_ore(sum_row["bevilget_ore"])
    assert main(["status", "--line", "0-24", "--posts"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:6] == ["Linje", "Budsjettår", "Departement", "Fase", "Kap", "Post"]
    assert "drift_5_prosent" in table and format_ore_readable(100000) in table


@pytest.mark.parametrize("what", ["lines", "cells", "posts", "events"])
def test_export_year_keeps_only_that_fiscal_years_money_and_adds_up_to_its_totals(ledger, tmp_path, what):
    path = tmp_path / f"{what}-2026.csv"
    assert main(["export", what, "--year", "2026", "-o", str(path)]) == 0
    table = read_table(path)
    totals = _year_totals(ledger, 2026)
    for figure in FIGURES:
        assert sum(_ore(r.values[figure]) for r in table.records) == totals[f"{figure.lower()}_ore"], figure
    assert "ung-1" not in {r.values["Linje"] for r in table.records}  # its money is all in 2025
    if what in ("cells", "posts"):
        assert {str(r.values["Budsjettår"]) for r in table.records} == {"2026"}
    if what == "events":
        events = {r.values["Hendelse"] for r in table.records}
        # 2026's own events, and 2025's closing for what it carried into 2026; no 2025 booking
        assert events == {"b26", "k26", "f26", "o26", "u26", "c25"}
        carried = sum(_ore(r.values["Overført inn"]) for r in table.records)
        assert carried == totals["overfort_inn_ore"] == 110000
    assert all("fiscal_year=2026" in p for p in ledger.paths if p.startswith("/v1/lines/") and "/events" not in p)


def test_export_year_is_checked_like_status_year(ledger, capsys):
    assert main(["export", "cells", "--year", "26"]) == 2
    assert "'26' is not a fiscal year" in capsys.readouterr().err
