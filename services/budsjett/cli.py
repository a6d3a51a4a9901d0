"""budsjett's subcommands: `reformspor status`, `export`, `replay` and `catalogue import FILE`.

`status` and `export` read budsjett's HTTP API (GET /v1/lines, /v1/lines/{id},
/v1/lines/{id}/events) and show every figure per line × ministry × phase,
with Norwegian column headers, so the rows add up to the line's totals.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass
from datetime import date, datetime, time as clock_time, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo
from pathlib import Path
from typing import Any, Iterator

import click
from rich.table import Table

from services.shared.clikit import GlobalOptions, HelpGroup, Parsed, console_on, data_table, pass_options, table_text
from services.shared.http_client import get_json
from services.shared.money import format_ore, format_ore_readable
from services.shared.tabular import Cell, write_csv, write_xlsx
from services.shared.usererror import UserError

FIGURES = ("bevilget", "omdisponert", "forpliktet", "utbetalt", "disponibelt")
FLAG_NAMES = {"overcommitted": "overforpliktet", "overspent": "overforbrukt"}
CELL_COLUMNS = ("Linje", "Budsjettår", "Departement", "Fase", "Bevilget", "Omdisponert", "Forpliktet", "Utbetalt",
                "Disponibelt", "Merknader")
SUM_LABEL = "sum"
ALL_PHASES = "(alle)"
ALL_YEARS = "(alle)"
EVENTS_PAGE = 1000
# A plain date means "at the end of that day" where the ministries keep their books.
BOOKKEEPING_ZONE = ZoneInfo("Europe/Oslo")


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


def nok(amount_ore: int) -> Decimal:
    """Øre as an exact NOK Decimal for CSV/xlsx cells (never a float)."""
    return Decimal(format_ore(amount_ore))


def cell_table(rows: list[CellRow]) -> list[tuple[Cell, ...]]:
    return [(r.line_id, r.year_label, r.ministry, r.phase, *(nok(a) for a in r.amounts_ore()), ", ".join(r.flags))
            for r in rows]


def status_table(rows: list[CellRow], terminal: bool = False) -> Table:
    """The rows as a table, NOK with Norwegian thousands spacing and decimal comma (rich draws it)."""
    cells = [(r.line_id, r.year_label, r.ministry, r.phase, *(format_ore_readable(a) for a in r.amounts_ore()),
              ", ".join(r.flags) or "-") for r in rows]
    return data_table(CELL_COLUMNS, cells, right_aligned=range(4, 4 + len(FIGURES)), terminal=terminal)


def status_notes(body: dict) -> str:
    """What follows the table: the catalogue checks and the unit."""
    catalogue = body.get("catalogue") or {}
    text = ""
    if catalogue:
        text += f"\nKatalog: {catalogue.get('checks')}"
        if catalogue.get("fiscal_years"):
            text += f" (budsjettår {', '.join(map(str, catalogue['fiscal_years']))}, {catalogue['items']} poster)"
        text += "\n"
    return text + "Beløp i NOK."


def print_status(body: dict) -> None:
    """A rich table on a terminal; piped, the plain text of render_status."""
    console = console_on()
    rows = [row for line in body.get("lines", []) for row in cell_rows(line)]
    if not console.is_terminal or not rows:
        print(render_status(body))
        return
    console.print(status_table(rows, terminal=True), soft_wrap=False)
    print(status_notes(body))


def render_status(body: dict) -> str:
    """The status as plain text: every line's cells and sum row, then what the catalogue checks."""
    rows = [row for line in body.get("lines", []) for row in cell_rows(line)]
    text = table_text(status_table(rows)) if rows else "Ingen budsjettlinjer ennå (no budget lines yet)."
    return text + "\n" + status_notes(body)


def fiscal_year_argument(text: str) -> int:
    """`--year 2026`: four ASCII digits, a year the contract allows."""
    from services.budsjett.core import FISCAL_YEAR_RULE, parse_fiscal_year

    year = parse_fiscal_year(text)
    if year is None:
        raise ValueError(f"{text[:20]!r} is not {FISCAL_YEAR_RULE}, e.g. 2026")
    return year


def as_of_timestamp(text: str) -> str:
    """`2026-06-30` → the end of that day in Norway as RFC 3339 UTC; a timestamp with a zone is kept."""
    try:
        moment = datetime.combine(date.fromisoformat(text), clock_time.max, BOOKKEEPING_ZONE)
    except ValueError:
        try:
            moment = _moment(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither a date (2026-06-30) nor a timestamp "
                                             "with a time zone (2026-06-30T12:00:00Z)") from None
        if moment.tzinfo is None:
            raise ValueError(f"{text!r} has no time zone: add Z or +01:00, or give a plain date")
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def fetch_lines(base_url: str, line_id: str | None = None, as_of: str | None = None,
                fiscal_year: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Line documents with their cells (GET /v1/lines, then /v1/lines/{id} each), and the catalogue status."""
    listing = get_json(f"{base_url}/v1/lines", "budsjett")
    ids = [line["line_id"] for line in listing.get("lines", [])]
    if line_id is not None:
        ids = [line_id]  # an unknown line comes back as budsjett's 404, in one line
    params = {**({"as_of": as_of} if as_of else {}), **({"fiscal_year": fiscal_year} if fiscal_year else {})} or None
    documents = [get_json(f"{base_url}/v1/lines/{urllib.parse.quote(i, safe='')}", "budsjett", params=params)
                 for i in ids]
    return documents, listing.get("catalogue") or {}


def status_json(rows: list[CellRow]) -> str:
    return json.dumps([{**asdict(r), **{f"{f}_nok": format_ore(getattr(r, f"{f}_ore")) for f in FIGURES}}
                       for r in rows], ensure_ascii=False, indent=2)


FISCAL_YEAR = Parsed(fiscal_year_argument, "YYYY")
AS_OF = Parsed(as_of_timestamp, "DATE")


@click.command(short_help="the shared budget lines per line × ministry × phase (from a running budsjett)",
               help="Per line, ministry (departement) and phase (fase): bevilget, omdisponert, forpliktet, utbetalt "
                    "and disponibelt in NOK, with over-commitment/overspending remarks, and a sum row per line that "
                    "the rows add up to. Reads budsjett's GET /v1/lines and /v1/lines/{id}.")
@click.option("--line", metavar="ID", help="only this line id, e.g. 0-24")
@click.option("--year", type=FISCAL_YEAR,
              help="only this fiscal year (budsjettår), e.g. 2026 (default: every year, each on its own rows)")
@click.option("--as-of", type=AS_OF, help="the figures as they stood at the end of DATE (2026-06-30, Norwegian time) "
                                          "or at a timestamp with a zone")
@click.option("--csv", "as_csv", is_flag=True, help="CSV for Excel (';', decimal comma) instead of a table")
@click.option("--json", "as_json", is_flag=True, help="JSON rows (øre as integers, NOK as decimal text)")
@pass_options
def status(options: GlobalOptions, line: str | None, year: int | None, as_of: str | None, as_csv: bool,
           as_json: bool) -> int:
    if as_csv and as_json:
        raise click.UsageError("--csv and --json exclude each other: give one")
    lines, catalogue = fetch_lines(options.settings().service_url("budsjett"), line, as_of, year)
    rows = [row for document in lines for row in cell_rows(document)]
    if as_json:
        print(status_json(rows))
    elif as_csv:
        write_csv(CELL_COLUMNS, cell_table(rows), sys.stdout)
    else:
        print_status({"lines": lines, "catalogue": catalogue})
    return 0


# --- export -------------------------------------------------------------------------------------------------------

LINE_COLUMNS = ("Linje", "Bevilget", "Omdisponert", "Forpliktet", "Utbetalt", "Disponibelt", "Hendelser",
                "Siste hendelse")
EVENT_COLUMNS = ("Linje", "Hendelse", "Type", "Kilde", "Tidspunkt", "Korrigerer", "Korrigert av", "Departement",
                 "Fase", "Bevilget", "Omdisponert", "Forpliktet", "Utbetalt")
EVENT_FIGURES = FIGURES[:-1]  # an event moves these; disponibelt follows from them


def line_events(base_url: str, line_id: str) -> Iterator[dict[str, Any]]:
    """Every event behind a line, page by page (offset/limit; stops at `total` when budsjett gives one)."""
    quoted = urllib.parse.quote(line_id, safe="")
    offset = 0
    while True:
        page = get_json(f"{base_url}/v1/lines/{quoted}/events", "budsjett",
                        params={"limit": EVENTS_PAGE, "offset": offset})
        events = page.get("events", [])
        yield from events
        offset += len(events)
        total = page.get("total")
        if len(events) < EVENTS_PAGE or (total is not None and offset >= total):
            return


def event_rows(line_id: str, event: dict[str, Any]) -> list[tuple[Cell, ...]]:
    """One row per cell the event changed (so the columns add up to the line's totals), one row if none."""
    head = (line_id, event["event_id"], event["kind"], event.get("source_ministry"), event["time"],
            event.get("corrects_id"), event.get("corrected_by"))
    deltas = event.get("deltas") or [{"ministry": None, "phase": None}]
    return [(*head, d["ministry"], d["phase"], *(nok(int(d.get(f"{f}_ore", 0))) for f in EVENT_FIGURES))
            for d in deltas]


def _moment(rfc3339: str) -> datetime:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))


def _at_or_before(event: dict[str, Any], as_of: str | None) -> bool:
    """The same cut as budsjett's ?as_of: an event counts when its own time is at or before the moment."""
    return as_of is None or _moment(event["time"]) <= _moment(as_of)


def export_table(what: str, base_url: str, line_id: str | None,
                 as_of: str | None = None) -> tuple[tuple[str, ...], list[tuple[Cell, ...]]]:
    lines, _ = fetch_lines(base_url, line_id, as_of)
    if what == "lines":
        return LINE_COLUMNS, [(line["line_id"], *(nok(line["totals"][f"{f}_ore"]) for f in FIGURES),
                               line.get("events_applied"), line.get("last_event_time")) for line in lines]
    if what == "cells":
        return CELL_COLUMNS, cell_table([row for line in lines for row in cell_rows(line, with_sum=False)])
    return EVENT_COLUMNS, [row for line in lines for event in line_events(base_url, line["line_id"])
                           if _at_or_before(event, as_of) for row in event_rows(line["line_id"], event)]


@click.command(short_help="export lines, cells or the audit trail (events) as CSV or xlsx, for reconciliation",
               help="lines: totals per line; cells: per line × ministry × phase; events: every event behind each "
                    "line, one row per cell it changed, so each amount column adds up to the line's totals. "
                    "CSV is ';'-separated with decimal commas (Norwegian Excel); xlsx keeps exact amounts.\n\n"
                    "WHAT is the table: lines, cells or events.")
@click.argument("what", type=click.Choice(["lines", "cells", "events"]))
@click.option("--format", "file_format", type=click.Choice(["csv", "xlsx"]),
              help="default: from --output's name, else csv")
@click.option("--output", "-o", metavar="FILE", help="file to write (default: CSV on stdout)")
@click.option("--line", metavar="ID", help="only this line id")
@click.option("--as-of", type=AS_OF, help="as the books stood at the end of DATE (Norwegian time) or at a timestamp")
@pass_options
def export(options: GlobalOptions, what: str, file_format: str | None, output: str | None, line: str | None,
           as_of: str | None) -> int:
    fmt = file_format or ("xlsx" if output and output.lower().endswith(".xlsx") else "csv")
    if fmt == "xlsx" and not output:
        raise UserError("an xlsx export needs --output FILE.xlsx (a workbook is not written to a terminal)")
    columns, rows = export_table(what, options.settings().service_url("budsjett"), line, as_of)
    if fmt == "xlsx":
        write_xlsx(columns, rows, Path(output), title=what)
    elif output:
        with open(output, "w", encoding="utf-8-sig", newline="") as stream:  # the BOM tells Excel it is UTF-8
            write_csv(columns, rows, stream)
    else:
        write_csv(columns, rows, sys.stdout)
    if output:
        print(f"Wrote {len(rows)} rows ({what}) to {output}", file=sys.stderr)
    return 0


@click.group(cls=HelpGroup, short_help="the budget catalogue (Gul bok kap/post)",
             help="Finansdepartementet's Gul bok items: once imported, a contribution from a kap/post that does not "
                  "exist or belongs to another ministry is rejected with that reason.")
def catalogue() -> None:
    pass


@catalogue.command("import", short_help="import Finansdepartementet's Gul bok data (xlsx or CSV)",
                   help="Read sheet 'Data' of the Gul bok xlsx (or the same columns as CSV, as Excel saves it: ';' or "
                        "',', UTF-8 or Windows-1252) and store the items in budsjett's read model. Skipped rows are "
                        "named by their spreadsheet row number.\n\nFILE is gul_bok_<year>_datagrunnlag.xlsx or a "
                        "CSV with the same columns.")
@click.argument("file")
@click.option("--year", type=int, default=None, metavar="YYYY",
              help="fiscal year of the file (default: the one year its name states; a name that starts with a "
                   "publication date such as 20241002_ needs --year)")
@click.option("--db-url", metavar="URL", help="read model URL (default: budsjett's configured database)")
@pass_options
def catalogue_import(options: GlobalOptions, file: str, year: int | None, db_url: str | None) -> int:
    from services.budsjett.catalogue import import_catalogue
    from services.budsjett.readmodel import ReadModel

    settings = options.settings()
    path = Path(file)
    result = import_catalogue(path, year)  # an unreadable file or an unknown year raises one clear line
    model = ReadModel(db_url or settings.db_url("budsjett"))
    try:
        count = model.replace_catalogue(result.fiscal_year, result.items)
    finally:
        model.close()
    print(f"Imported {count} budget items for {result.fiscal_year} from {path.name} into {model.url}")
    for report_line in result.ministries.report_lines():
        print(f"  {report_line}")
    if result.skipped:
        print(f"  skipped {len(result.skipped)} rows, e.g. {result.skipped[0]}")
    print("A running budsjett picks the catalogue up within 10 s.")
    return 0


@click.command(short_help="rebuild budsjett's state and read model from the Kafka log",
               help="Read the budget topic from offset 0, apply every event with the same rules as the live worker "
                    "into a fresh read model, and print the final totals. Partitions are replayed in parallel "
                    "processes.")
@click.option("--db-url", metavar="URL", help="target read model (default: a new SQLite file under --home)")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="processes, one partition each at a time (default: min(partitions, CPUs); 1 = in-process)")
@pass_options
def replay(options: GlobalOptions, db_url: str | None, workers: int | None) -> int:
    from services.budsjett.replay import replay as replay_log
    from services.localstack.stack import require_kafka

    settings = options.settings()
    require_kafka(settings)
    db_url = db_url or f"sqlite:///{settings.home / f'budsjett-replay-{int(time.time())}.db'}"
    started = time.perf_counter()
    summary = replay_log(settings, db_url, progress=lambda text: print(text, file=sys.stderr, flush=True),
                         workers=workers)
    seconds = time.perf_counter() - started
    print_status({"lines": summary["lines"]})
    print(f"\nRead model rebuilt in {db_url}: {summary['seen']} messages in {seconds:.1f} s "
          f"({summary['workers']} process{'es' if summary['workers'] > 1 else ''})")
    return 0


def register(cli: click.Group) -> None:
    for command in (status, export, replay, catalogue):
        cli.add_command(command)
