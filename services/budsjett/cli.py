"""budsjett's subcommands: `reformspor status`, `export`, `replay` and `catalogue import FILE`.

`status` and `export` read budsjett's HTTP API (GET /v1/lines, /v1/lines/{id},
/v1/lines/{id}/events) and show every figure per line × ministry × phase,
with Norwegian column headers, so the rows add up to the line's totals.
"""
from __future__ import annotations

import argparse
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


def render_rows(rows: list[CellRow]) -> str:
    """An aligned terminal table, NOK with Norwegian thousands spacing and decimal comma."""
    table = [CELL_COLUMNS] + [(r.line_id, r.year_label, r.ministry, r.phase,
                               *(format_ore_readable(a) for a in r.amounts_ore()), ", ".join(r.flags) or "-")
                              for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(CELL_COLUMNS))]
    numeric = range(4, 4 + len(FIGURES))

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(widths[i]) if i in numeric else v.ljust(widths[i])
                         for i, v in enumerate(row)).rstrip()

    return "\n".join([fmt(table[0]), "  ".join("-" * w for w in widths), *map(fmt, table[1:])])


def render_status(body: dict) -> str:
    """The status text: every line's cells and sum row, then what the catalogue checks."""
    rows = [row for line in body.get("lines", []) for row in cell_rows(line)]
    text = render_rows(rows) if rows else "Ingen budsjettlinjer ennå (no budget lines yet)."
    catalogue = body.get("catalogue") or {}
    if catalogue:
        text += f"\n\nKatalog: {catalogue.get('checks')}"
        if catalogue.get("fiscal_years"):
            text += f" (budsjettår {', '.join(map(str, catalogue['fiscal_years']))}, {catalogue['items']} poster)"
    return text + "\nBeløp i NOK."


def fiscal_year_argument(text: str) -> int:
    """`--year 2026`: four ASCII digits, a year the contract allows."""
    from services.budsjett.core import FISCAL_YEAR_RULE, parse_fiscal_year

    year = parse_fiscal_year(text)
    if year is None:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not {FISCAL_YEAR_RULE}, e.g. 2026")
    return year


def as_of_timestamp(text: str) -> str:
    """`2026-06-30` → the end of that day in Norway as RFC 3339 UTC; a timestamp with a zone is kept."""
    try:
        moment = datetime.combine(date.fromisoformat(text), clock_time.max, BOOKKEEPING_ZONE)
    except ValueError:
        try:
            moment = _moment(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is neither a date (2026-06-30) nor a timestamp "
                                             "with a time zone (2026-06-30T12:00:00Z)") from None
        if moment.tzinfo is None:
            raise argparse.ArgumentTypeError(f"{text!r} has no time zone: add Z or +01:00, or give a plain date")
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


def _status(args: argparse.Namespace, settings_from_args) -> int:
    lines, catalogue = fetch_lines(settings_from_args(args).service_url("budsjett"), args.line, args.as_of, args.year)
    rows = [row for line in lines for row in cell_rows(line)]
    if args.json:
        print(status_json(rows))
    elif args.csv:
        write_csv(CELL_COLUMNS, cell_table(rows), sys.stdout)
    else:
        print(render_status({"lines": lines, "catalogue": catalogue}))
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


def _export(args: argparse.Namespace, settings_from_args) -> int:
    fmt = args.format or ("xlsx" if args.output and args.output.lower().endswith(".xlsx") else "csv")
    if fmt == "xlsx" and not args.output:
        raise UserError("an xlsx export needs --output FILE.xlsx (a workbook is not written to a terminal)")
    columns, rows = export_table(args.what, settings_from_args(args).service_url("budsjett"), args.line, args.as_of)
    if fmt == "xlsx":
        write_xlsx(columns, rows, Path(args.output), title=args.what)
    elif args.output:
        with open(args.output, "w", encoding="utf-8-sig", newline="") as stream:  # the BOM tells Excel it is UTF-8
            write_csv(columns, rows, stream)
    else:
        write_csv(columns, rows, sys.stdout)
    if args.output:
        print(f"Wrote {len(rows)} rows ({args.what}) to {args.output}", file=sys.stderr)
    return 0


def _catalogue_import(args: argparse.Namespace, settings_from_args) -> int:
    from services.budsjett.catalogue import YearCatalogue, import_catalogue, publish_catalogue
    from services.localstack.stack import require_kafka

    settings = settings_from_args(args)
    path = Path(args.file)
    result = import_catalogue(path, args.year)  # an unreadable file or an unknown year raises one clear line
    require_kafka(settings)
    imported_at = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    topic = publish_catalogue(settings, YearCatalogue(result.fiscal_year, tuple(result.items), path.name, imported_at))
    print(f"Published {len(result.items)} budget items for {result.fiscal_year} from {path.name} to {topic} "
          f"(replacing any earlier {result.fiscal_year} catalogue)")
    for line in result.ministries.report_lines():
        print(f"  {line}")
    if result.skipped:
        print(f"  skipped {len(result.skipped)} rows, e.g. {result.skipped[0]}")
    print("Running budsjett and ingest services follow the topic and check kap/post against it at once.")
    return 0


def _replay(args: argparse.Namespace, settings_from_args) -> int:
    from services.budsjett.replay import replay
    from services.localstack.stack import require_kafka

    settings = settings_from_args(args)
    require_kafka(settings)
    db_url = args.db_url or f"sqlite:///{settings.home / f'budsjett-replay-{int(time.time())}.db'}"
    started = time.perf_counter()
    summary = replay(settings, db_url, progress=lambda text: print(text, file=sys.stderr, flush=True),
                     workers=args.workers)
    seconds = time.perf_counter() - started
    print(render_status({"lines": summary["lines"]}))
    print(f"\nRead model rebuilt in {db_url}: {summary['seen']} messages in {seconds:.1f} s "
          f"({summary['workers']} process{'es' if summary['workers'] > 1 else ''})")
    return 0


def register(subparsers, settings_from_args) -> None:
    status = subparsers.add_parser(
        "status", help="the shared budget lines per line × ministry × phase (from a running budsjett)",
        description="Per line, ministry (departement) and phase (fase): bevilget, omdisponert, forpliktet, utbetalt "
                    "and disponibelt in NOK, with over-commitment/overspending remarks, and a sum row per line that "
                    "the rows add up to. Reads budsjett's GET /v1/lines and /v1/lines/{id}.")
    status.add_argument("--line", help="only this line id, e.g. 0-24")
    status.add_argument("--year", type=fiscal_year_argument, metavar="YYYY",
                        help="only this fiscal year (budsjettår), e.g. 2026 (default: every year, each on its own rows)")
    status.add_argument("--as-of", type=as_of_timestamp, metavar="DATE",
                        help="the figures as they stood at the end of DATE (2026-06-30, Norwegian time) "
                             "or at a timestamp with a zone")
    output = status.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="CSV for Excel (';', decimal comma) instead of a table")
    output.add_argument("--json", action="store_true", help="JSON rows (øre as integers, NOK as decimal text)")
    status.set_defaults(handler=lambda args: _status(args, settings_from_args))

    export = subparsers.add_parser(
        "export", help="export lines, cells or the audit trail (events) as CSV or xlsx, for reconciliation",
        description="lines: totals per line; cells: per line × ministry × phase; events: every event behind each "
                    "line, one row per cell it changed, so each amount column adds up to the line's totals. "
                    "CSV is ';'-separated with decimal commas (Norwegian Excel); xlsx keeps exact amounts.")
    export.add_argument("what", choices=["lines", "cells", "events"], help="which table")
    export.add_argument("--format", choices=["csv", "xlsx"], help="default: from --output's name, else csv")
    export.add_argument("--output", "-o", help="file to write (default: CSV on stdout)")
    export.add_argument("--line", help="only this line id")
    export.add_argument("--as-of", type=as_of_timestamp, metavar="DATE",
                        help="as the books stood at the end of DATE (Norwegian time) or at a timestamp")
    export.set_defaults(handler=lambda args: _export(args, settings_from_args))

    replay = subparsers.add_parser("replay", help="rebuild budsjett's state and read model from the Kafka log",
                                   description="Read the budget topic from offset 0, apply every event with the "
                                               "same rules as the live worker into a fresh read model, and print "
                                               "the final totals. Partitions are replayed in parallel processes.")
    replay.add_argument("--db-url", help="target read model (default: a new SQLite file under --home)")
    replay.add_argument("--workers", type=int, default=None,
                        help="processes, one partition each at a time (default: min(partitions, CPUs); 1 = in-process)")
    replay.set_defaults(handler=lambda args: _replay(args, settings_from_args))

    catalogue = subparsers.add_parser("catalogue", help="the budget catalogue (Gul bok kap/post)",
                                      description="Finansdepartementet's Gul bok items: once imported, a contribution "
                                                  "from a kap/post that does not exist or belongs to another ministry "
                                                  "is rejected with that reason.")
    actions = catalogue.add_subparsers(dest="catalogue_action", metavar="ACTION", required=True)
    importer = actions.add_parser("import", help="import Finansdepartementet's Gul bok data (xlsx or CSV)",
                                  description="Read sheet 'Data' of the Gul bok xlsx (or the same columns as CSV, "
                                              "as Excel saves it: ';' or ',', UTF-8 or Windows-1252) and publish "
                                              "the year's items as one record on the catalogue topic, replacing that "
                                              "year whole; budsjett and ingest follow it. Skipped rows are named by "
                                              "their spreadsheet row number.")
    importer.add_argument("file", help="gul_bok_<year>_datagrunnlag.xlsx or a CSV with the same columns")
    importer.add_argument("--year", type=int, default=None,
                          help="fiscal year of the file (default: the one year its name states; a name that starts "
                               "with a publication date such as 20241002_ needs --year)")
    importer.set_defaults(handler=lambda args: _catalogue_import(args, settings_from_args))
