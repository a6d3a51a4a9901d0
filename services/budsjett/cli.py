"""budsjett's subcommands: `reformspor status`, `export`, `replay` and `catalogue import FILE`.

`status` and `export` read budsjett's HTTP API (GET /v1/lines, /v1/lines/{id},
/v1/lines/{id}/events) and show every figure per line × ministry × phase
(or, with `--posts` / `export posts`, per funding kap/post inside each cell),
with Norwegian column headers, so the rows add up to the line's totals.
`export --year` keeps one fiscal year: its lines' totals, its cells, and the
audit-trail rows that moved its money.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import urllib.parse
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from services.budsjett.tables import (CELL_COLUMNS, EVENT_COLUMNS, FIGURES, LINE_COLUMNS, POST_COLUMNS,
                                     POST_FIGURES, CellRow, PostRow, cell_rows, cell_table, event_rows, line_table,
                                     post_rows, post_table)
from services.shared.dates import parse_moment
from services.shared.http_client import get_json
from services.shared.money import format_ore, format_ore_readable
from services.shared.tabular import Cell, csv_bytes, write_csv, write_xlsx
from services.shared.usererror import UserError

EVENTS_PAGE = 1000


def render_table(columns: tuple[str, ...], rows: list[tuple[str, ...]], numeric: range) -> str:
    """An aligned terminal table; the `numeric` columns right-aligned."""
    table = [columns, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(widths[i]) if i in numeric else v.ljust(widths[i])
                         for i, v in enumerate(row)).rstrip()

    return "\n".join([fmt(table[0]), "  ".join("-" * w for w in widths), *map(fmt, table[1:])])


def render_rows(rows: list[CellRow]) -> str:
    """An aligned terminal table, NOK with Norwegian thousands spacing and decimal comma."""
    return render_table(CELL_COLUMNS, [(r.line_id, r.year_label, r.ministry, r.phase,
                                        *(format_ore_readable(a) for a in r.amounts_ore()), ", ".join(r.flags) or "-")
                                       for r in rows], range(4, 4 + len(FIGURES)))


def render_post_rows(rows: list[PostRow]) -> str:
    return render_table(POST_COLUMNS, [(*r.labels(), *(format_ore_readable(a) for a in r.amounts_ore()),
                                        r.carry_rule or "-") for r in rows], range(6, 6 + len(POST_FIGURES)))


def rows_json(rows: list[CellRow] | list[PostRow]) -> str:
    """JSON rows: øre as integers, *_nok as decimal text beside each."""
    return json.dumps([{**(data := asdict(r)), **{k.removesuffix("_ore") + "_nok": format_ore(v)
                                                  for k, v in data.items() if k.endswith("_ore")}}
                       for r in rows], ensure_ascii=False, indent=2)


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
    """`2026-06-30` → the end of that day in Norway as RFC 3339 UTC; a timestamp with a zone is kept (budsjett's
    ?as_of= follows the same rule: services.shared.dates.parse_moment)."""
    try:
        moment = parse_moment(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
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
    return rows_json(rows)


def status_posts(lines: list[dict[str, Any]], output: str) -> str:
    """`status --posts`: every cell per funding kap/post, with the year's sum rows; output table, csv or json."""
    rows = [row for line in lines for row in post_rows(line)]
    if output == "json":
        return rows_json(rows)
    if output == "csv":
        stream = io.StringIO()
        write_csv(POST_COLUMNS, post_table(rows), stream)
        return stream.getvalue().rstrip("\r\n")
    return (render_post_rows(rows) if rows else "Ingen budsjettlinjer ennå (no budget lines yet).") + "\nBeløp i NOK."


def _status(args: argparse.Namespace, settings_from_args) -> int:
    lines, catalogue = fetch_lines(settings_from_args(args).service_url("budsjett"), args.line, args.as_of, args.year)
    if args.posts:
        print(status_posts(lines, "json" if args.json else "csv" if args.csv else "table"))
        return 0
    rows = [row for line in lines for row in cell_rows(line)]
    if args.json:
        print(status_json(rows))
    elif args.csv:
        write_csv(CELL_COLUMNS, cell_table(rows), sys.stdout)
    else:
        print(render_status({"lines": lines, "catalogue": catalogue}))
    return 0


# --- export -------------------------------------------------------------------------------------------------------

def line_events(base_url: str, line_id: str) -> Iterator[dict[str, Any]]:
    """Every event behind a line: the first page, then each page's `next` link until there is none."""
    url: str | None = f"{base_url}/v1/lines/{urllib.parse.quote(line_id, safe='')}/events"
    params: dict[str, Any] | None = {"limit": EVENTS_PAGE}
    while url is not None:
        page = get_json(url, "budsjett", params=params)
        yield from page.get("events", [])
        url = urllib.parse.urljoin(base_url, page["next"]) if page.get("next") else None
        params = None  # the next link carries its own query


def _moment(rfc3339: str) -> datetime:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))


def _at_or_before(event: dict[str, Any], as_of: str | None) -> bool:
    """The same cut as budsjett's ?as_of: an event counts when its own time is at or before the moment."""
    return as_of is None or _moment(event["time"]) <= _moment(as_of)


def export_table(what: str, base_url: str, line_id: str | None, as_of: str | None = None,
                 fiscal_year: int | None = None) -> tuple[tuple[str, ...], list[tuple[Cell, ...]]]:
    """The rows of one export table; with `fiscal_year`, that year's figures only (lines without money in the
    year are left out), so every amount column adds up to the year's totals."""
    lines, _ = fetch_lines(base_url, line_id, as_of, fiscal_year)
    if fiscal_year is not None:
        lines = [line for line in lines if line.get("cells")]
    if what == "lines":
        return LINE_COLUMNS, line_table(lines)
    if what == "cells":
        return CELL_COLUMNS, cell_table([row for line in lines for row in cell_rows(line, with_sum=False)])
    if what == "posts":
        return POST_COLUMNS, post_table([row for line in lines for row in post_rows(line, with_sum=False)])
    return EVENT_COLUMNS, [row for line in lines for event in line_events(base_url, line["line_id"])
                           if _at_or_before(event, as_of)
                           for row in event_rows(line["line_id"], event, fiscal_year)]


def _export(args: argparse.Namespace, settings_from_args) -> int:
    fmt = args.format or ("xlsx" if args.output and args.output.lower().endswith(".xlsx") else "csv")
    if fmt == "xlsx" and not args.output:
        raise UserError("an xlsx export needs --output FILE.xlsx (a workbook is not written to a terminal)")
    columns, rows = export_table(args.what, settings_from_args(args).service_url("budsjett"), args.line, args.as_of,
                                 args.year)
    if fmt == "xlsx":
        write_xlsx(columns, rows, Path(args.output), title=args.what)
    elif args.output:
        Path(args.output).write_bytes(csv_bytes(columns, rows))
    else:
        write_csv(columns, rows, sys.stdout)
    if args.output:
        print(f"Wrote {len(rows)} rows ({args.what}) to {args.output}", file=sys.stderr)
    return 0


def _catalogue_import(args: argparse.Namespace, settings_from_args) -> int:
    from services.budsjett.catalogue import import_catalogue
    from services.budsjett.readmodel import ReadModel

    settings = settings_from_args(args)
    path = Path(args.file)
    result = import_catalogue(path, args.year)  # an unreadable file or an unknown year raises one clear line
    model = ReadModel(args.db_url or settings.db_url("budsjett"))
    try:
        count = model.replace_catalogue(result.fiscal_year, result.items)
    finally:
        model.close()
    print(f"Imported {count} budget items for {result.fiscal_year} from {path.name} into {model.url}")
    for line in result.ministries.report_lines():
        print(f"  {line}")
    if result.skipped:
        print(f"  skipped {len(result.skipped)} rows, e.g. {result.skipped[0]}")
    print("A running budsjett picks the catalogue up within 10 s.")
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
    status.add_argument("--posts", action="store_true",
                        help="one row per funding kap/post inside each cell (with overført inn, bortfalt and the "
                             "year-end rule), and the year's sum rows they add up to")
    status.set_defaults(handler=lambda args: _status(args, settings_from_args))

    export = subparsers.add_parser(
        "export", help="export lines, cells or the audit trail (events) as CSV or xlsx, for reconciliation",
        description="lines: totals per line; cells: per line × ministry × phase; posts: per funding kap/post inside "
                    "each cell; events: every event behind each line, one row per cell and kap/post it changed, so "
                    "each amount column adds up to the line's totals. CSV is ';'-separated with decimal commas "
                    "(Norwegian Excel); xlsx keeps exact amounts.")
    export.add_argument("what", choices=["lines", "cells", "posts", "events"], help="which table")
    export.add_argument("--format", choices=["csv", "xlsx"], help="default: from --output's name, else csv")
    export.add_argument("--output", "-o", help="file to write (default: CSV on stdout)")
    export.add_argument("--line", help="only this line id")
    export.add_argument("--as-of", type=as_of_timestamp, metavar="DATE",
                        help="as the books stood at the end of DATE (Norwegian time) or at a timestamp")
    export.add_argument("--year", type=fiscal_year_argument, metavar="YYYY",
                        help="only this fiscal year (budsjettår): its lines' totals, cells and posts, and the events "
                             "that moved its money (default: every year)")
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
                                              "as Excel saves it: ';' or ',', UTF-8 or Windows-1252) and store the "
                                              "items in budsjett's read model. Skipped rows are named by their "
                                              "spreadsheet row number.")
    importer.add_argument("file", help="gul_bok_<year>_datagrunnlag.xlsx or a CSV with the same columns")
    importer.add_argument("--year", type=int, default=None,
                          help="fiscal year of the file (default: the one year its name states; a name that starts "
                               "with a publication date such as 20241002_ needs --year)")
    importer.add_argument("--db-url", help="read model URL (default: budsjett's configured database)")
    importer.set_defaults(handler=lambda args: _catalogue_import(args, settings_from_args))
