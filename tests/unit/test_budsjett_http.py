"""budsjett's HTTP lists as a finance user meets them: CSV that adds up, Accept, as_of as a date, paging.

The real LedgerRoutes on the real ServiceHttp application (problem+json boundary), served on a loopback
port, over a SQLite read model filled by the ledger core.
"""
from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from services.budsjett import core
from services.budsjett.catalogue import CatalogueHolder
from services.budsjett.cli import export_table
from services.budsjett.http import LedgerRoutes
from services.budsjett.readmodel import ReadModel
from services.budsjett.tables import CELL_COLUMNS, EVENT_COLUMNS, LINE_COLUMNS
from services.shared.config import Settings
from tests.support.http_app import get, serving, service_app
from tests.unit.test_budsjett_core import T0, bevilget, ev, forpliktet, omdisponert, utbetalt

FIGURES = ("Bevilget", "Omdisponert", "Forpliktet", "Utbetalt", "Disponibelt")
NEXT_DAY_MINUTES = 24 * 60  # T0 is 2026-03-01 10:00Z; this is 2026-03-02


def write(model: ReadModel, events: list) -> None:
    """Apply the events with the ledger core and write what they changed, as the worker's sink does."""
    store: dict = {}
    log = list(events)
    batch = model.new_batch()
    for offset, message in enumerate(log):
        outcome = core.process(store, offset, message)
        batch.add(outcome, message, 0, offset)
        log.extend(outcome.sends)
    model.write(batch)


def ledger_events() -> list:
    return [
        bevilget("b1", "0-24", "BFD", "utredning", "1250000.50"),
        bevilget("b2", "0-24", "KD", "utvikling", "800000.00", minutes=5),
        forpliktet("f1", "0-24", "KD", "utvikling", "K1", "300000.00"),
        utbetalt("u1", "0-24", "KD", "utvikling", "100000.25", cid="K1"),
        omdisponert("o1", "0-24", ("BFD", "utredning"), ("HOD", "utredning"), "1000.00"),
        bevilget("b3", "0-24", "BFD", "utredning", "2000000.00", year=2027),
        bevilget("b4", "ung-1", "HOD", "implementering", "400000.00"),
        bevilget("late", "0-24", "BFD", "utredning", "999.99", minutes=NEXT_DAY_MINUTES),
        bevilget("late-line", "sen-9", "JD", "utredning", "5.00", minutes=NEXT_DAY_MINUTES),
    ]


@pytest.fixture
def budsjett(tmp_path):
    """(base URL, read model) of a budsjett HTTP server over a filled read model."""
    model = ReadModel(f"sqlite:///{tmp_path / 'budsjett.db'}")
    write(model, ledger_events())
    app = service_app("budsjett", Settings(home=tmp_path))
    LedgerRoutes(model, CatalogueHolder(Settings(home=tmp_path), "budsjett"), SimpleNamespace(pending_rows=0)).register(app)
    try:
        with serving(app) as base_url:
            yield base_url, model
    finally:
        model.close()


def ore(text: str) -> int:
    """A CSV amount as Norwegian Excel reads it (decimal comma) in øre."""
    return int(Decimal(text.replace(",", ".")) * 100)


def test_lines_as_csv_add_up_to_the_json_totals_and_download_as_a_file(budsjett):
    base_url, _ = budsjett
    document = get(f"{base_url}/v1/lines").json()
    for url, accept in ((f"{base_url}/v1/lines?format=csv", None), (f"{base_url}/v1/lines", "text/csv")):
        reply = get(url, accept)
        assert reply.status == 200 and reply.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert reply.headers["Content-Disposition"] == 'attachment; filename="budsjettlinjer.csv"'
        assert b"\r\n" in reply.body and reply.headers["Vary"] == "Accept"
        rows = reply.csv_rows()
        assert tuple(rows[0]) == LINE_COLUMNS
        assert [row["Linje"] for row in rows] == [line["line_id"] for line in document["lines"]]
        for row, line in zip(rows, document["lines"]):
            for figure in FIGURES:
                assert ore(row[figure]) == line["totals"][f"{figure.lower()}_ore"], (line["line_id"], figure)
    assert "0-24;4051000,49;" in get(f"{base_url}/v1/lines?format=csv").body.decode("utf-8-sig")  # decimal comma


def test_a_lines_cells_as_csv_add_up_to_its_totals_per_year(budsjett):
    base_url, _ = budsjett
    for query, name in (("", "linje-0-24-celler"), ("&fiscal_year=2027", "linje-0-24-celler-2027")):
        line = get(f"{base_url}/v1/lines/0-24?{query}").json()
        reply = get(f"{base_url}/v1/lines/0-24?format=csv{query}")
        assert reply.headers["Content-Disposition"] == f'attachment; filename="{name}.csv"'
        rows = reply.csv_rows()
        assert tuple(rows[0]) == CELL_COLUMNS and len(rows) == len(line["cells"])
        for figure in FIGURES:
            assert sum(ore(r[figure]) for r in rows) == line["totals"][f"{figure.lower()}_ore"], (query, figure)
    assert {r["Budsjettår"] for r in get(f"{base_url}/v1/lines/0-24?format=csv&fiscal_year=2027").csv_rows()} == {"2027"}


@pytest.mark.parametrize("accept, expected", [
    (None, "application/json"),
    ("application/json", "application/json"),
    ("*/*", "application/json"),
    ("text/*", "text/csv"),
    ("text/csv", "text/csv"),
    ("text/csv;q=0.5, application/json;q=0.9", "application/json"),
    ("application/json;q=0.4, text/csv", "text/csv"),
    ("text/csv;q=0, */*", "application/json"),
    ("TEXT/CSV; charset=utf-8", "text/csv"),
])
def test_accept_chooses_json_or_csv(budsjett, accept, expected):
    base_url, _ = budsjett
    for path in ("/v1/lines", "/v1/lines/0-24", "/v1/lines/0-24/events"):
        reply = get(base_url + path, accept)
        assert reply.status == 200 and reply.headers["Content-Type"].split(";")[0] == expected, (path, accept)


def test_an_accept_nothing_matches_is_406_and_a_bad_format_400_as_problem_json(budsjett):
    base_url, _ = budsjett
    reply = get(f"{base_url}/v1/lines/0-24", "image/png, application/xml")
    assert reply.status == 406 and reply.headers["Content-Type"].startswith("application/problem+json")
    assert "application/json or text/csv" in reply.json()["detail"]
    reply = get(f"{base_url}/v1/lines?format=xlsx")
    assert reply.status == 400 and reply.json()["title"] == "Invalid format"
    # ?format= wins over Accept: a link pasted into Excel or a browser cannot set headers
    assert get(f"{base_url}/v1/lines?format=csv", "application/json").headers["Content-Type"].startswith("text/csv")
    assert get(f"{base_url}/v1/lines?format=json", "text/csv").headers["Content-Type"] == "application/json"


def test_as_of_a_plain_date_is_the_end_of_that_day_in_norway_on_lines_and_a_line(budsjett):
    base_url, _ = budsjett
    now = get(f"{base_url}/v1/lines").json()
    then = get(f"{base_url}/v1/lines?as_of=2026-03-01").json()
    # 2026-03-01 ends at 23:00Z (CET): the next day's events and the line only they made are left out
    assert then["as_of"] == "2026-03-01T22:59:59.999999Z"
    assert [line["line_id"] for line in now["lines"]] == ["0-24", "sen-9", "ung-1"]
    assert [line["line_id"] for line in then["lines"]] == ["0-24", "ung-1"]
    assert then == get(f"{base_url}/v1/lines?as_of=2026-03-01T23:59:59.999999%2B01:00").json()
    bevilget_then = then["lines"][0]["totals"]["bevilget_ore"]
    assert (then["lines"][0]["events_applied"], now["lines"][0]["events_applied"]) == (6, 7)
    assert then["lines"][0]["last_event_time"] == "2026-03-01T10:05:00.000000Z"
    assert now["lines"][0]["totals"]["bevilget_ore"] - bevilget_then == 99999
    line = get(f"{base_url}/v1/lines/0-24?as_of=2026-03-01").json()
    assert line["totals"] == then["lines"][0]["totals"] and line["as_of"] == then["as_of"]
    rows = get(f"{base_url}/v1/lines?as_of=2026-03-01&format=csv")
    assert rows.headers["Content-Disposition"] == 'attachment; filename="budsjettlinjer-per-2026-03-01.csv"'
    assert ore(rows.csv_rows()[0]["Bevilget"]) == bevilget_then


@pytest.mark.parametrize("as_of, says", [
    ("30.06.2026", "neither a date (2026-06-30) nor a timestamp"),
    ("2026-06-30T12:00:00", "has no time zone"),
    ("2026-06-30T12:00:00 02:00", "write it as %2B"),  # what an unencoded '+' arrives as
])
def test_a_bad_as_of_is_400_saying_what_is_allowed(budsjett, as_of, says):
    base_url, _ = budsjett
    for path in ("/v1/lines", "/v1/lines/0-24"):
        reply = get(f"{base_url}{path}?as_of={as_of.replace(' ', '%20')}")
        assert reply.status == 400 and reply.headers["Content-Type"].startswith("application/problem+json")
        assert reply.json()["title"] == "Invalid as_of" and says in reply.json()["detail"]


def test_the_audit_trail_pages_with_total_and_next_link_until_the_last_page(budsjett):
    base_url, _ = budsjett
    url, seen, pages = f"{base_url}/v1/lines/0-24/events?limit=3", [], []
    while url:
        reply = get(url)
        page = reply.json()
        pages.append(page)
        seen += [e["event_id"] for e in page["events"]]
        assert page["total"] == 7 and page["limit"] == 3
        if page["next"]:
            assert reply.headers["Link"] == f'<{page["next"]}>; rel="next"'
            url = base_url + page["next"]
        else:
            assert "Link" not in reply.headers
            url = None
    assert [p["offset"] for p in pages] == [0, 3, 6] and len(pages[-1]["events"]) == 1
    assert sorted(seen) == ["b1", "b2", "b3", "f1", "late", "o1", "u1"]  # each once
    assert seen[-1] == "late"  # oldest first


def test_a_page_of_the_audit_trail_as_csv_keeps_the_link_and_adds_up(budsjett):
    base_url, _ = budsjett
    reply = get(f"{base_url}/v1/lines/0-24/events?limit=4", "text/csv")
    assert reply.headers["Content-Disposition"] == 'attachment; filename="linje-0-24-hendelser-1-4.csv"'
    assert reply.headers["Link"] == '</v1/lines/0-24/events?limit=4&offset=4>; rel="next"'
    whole = get(f"{base_url}/v1/lines/0-24/events?format=csv").csv_rows()
    assert tuple(whole[0]) == EVENT_COLUMNS
    totals = get(f"{base_url}/v1/lines/0-24").json()["totals"]
    for figure in FIGURES[:-1]:
        assert sum(ore(r[figure]) for r in whole) == totals[f"{figure.lower()}_ore"], figure


@pytest.mark.parametrize("query", ["limit=0", "limit=10001", "offset=-1", "limit=abc", "offset=1.5", "limit="])
def test_bad_paging_is_400_problem_json(budsjett, query):
    base_url, _ = budsjett
    reply = get(f"{base_url}/v1/lines/0-24/events?{query}")
    assert reply.status == 400 and reply.headers["Content-Type"].startswith("application/problem+json")
    assert reply.json()["title"] == "Invalid paging" and re.match(r"(limit|offset) must be", reply.json()["detail"])


def test_an_unknown_line_is_404_on_every_view(budsjett):
    base_url, _ = budsjett
    for path in ("/v1/lines/nope", "/v1/lines/nope/events", "/v1/lines/nope?format=csv"):
        assert get(base_url + path).status == 404, path


def test_export_of_a_trail_longer_than_a_page_follows_next_and_adds_up(tmp_path):
    """More than 1 000 events (budsjett's default page): the CLI's export gets every one."""
    model = ReadModel(f"sqlite:///{tmp_path / 'budsjett.db'}")
    count = 2345
    write(model, [bevilget(f"b{i}", "lang-1", "BFD", "utredning", f"{i}.01", minutes=i) for i in range(count)])
    app = service_app("budsjett", Settings(home=tmp_path))
    LedgerRoutes(model, CatalogueHolder(Settings(home=tmp_path), "budsjett"), SimpleNamespace(pending_rows=0)).register(app)
    try:
        with serving(app) as base_url:
            columns, rows = export_table("events", base_url, "lang-1")
            totals = get(f"{base_url}/v1/lines/lang-1").json()["totals"]
    finally:
        model.close()
    assert len(rows) == count and len({row[1] for row in rows}) == count
    bevilget_column = columns.index("Bevilget")
    assert sum(int(row[bevilget_column] * 100) for row in rows) == totals["bevilget_ore"]
