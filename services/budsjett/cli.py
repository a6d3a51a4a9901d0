"""budsjett's subcommands: `reformspor status`, `export`, `replay` and `catalogue import FILE`.

`status` and `export` read budsjett's HTTP API (GET /v1/lines, /v1/lines/{id},
/v1/lines/{id}/events) and show every figure per line × ministry × phase
(or, with `--posts` / `export posts`, per funding kap/post inside each cell),
with Norwegian column headers, so the rows add up to the line's totals.
`export --year` keeps one fiscal year: its lines' totals, its cells, and the
audit-trail rows that moved its money.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.parse
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import click
from rich.table import Table

from services.budsjett.tables import (CELL_COLUMNS, EVENT_COLUMNS, FIGURES, LINE_COLUMNS, POST_COLUMNS,
                                     POST_FIGURES, CellRow, PostRow, cell_rows, cell_table, event_rows, line_table,
                                     post_rows, post_table)
from services.shared.clikit import GlobalOptions, HelpGroup, Parsed, console_on, data_table, pass_options, table_text
from services.shared.dates import parse_moment
from services.shared.http_client import get_json
from services.shared.money import format_ore, format_ore_readable
from services.shared.tabular import Cell, csv_bytes, write_csv, write_xlsx
from services.shared.usererror import UserError

EVENTS_PAGE = 1000

def status_table(rows: list[CellRow], terminal: bool = False) -> Table:
    """The rows as a table, NOK with Norwegian thousands spacing and decimal comma (rich draws it)."""
    cells = [(r.line_id, r.year_label, r.ministry, r.phase, *(format_ore_readable(a) for a in r.amounts_ore()),
              ", ".join(r.flags) or "-") for r in rows]
    return data_table(CELL_COLUMNS, cells, right_aligned=range(4, 4 + len(FIGURES)), terminal=terminal)


def posts_table(rows: list[PostRow], terminal: bool = False) -> Table:
    """Per funding kap/post, the year-end rule last (rich draws it)."""
    cells = [(*r.labels(), *(format_ore_readable(a) for a in r.amounts_ore()), r.carry_rule or "-") for r in rows]
    return data_table(POST_COLUMNS, cells, right_aligned=range(6, 6 + len(POST_FIGURES)), terminal=terminal)


def rows_json(rows: list[CellRow] | list[PostRow]) -> str:
    """JSON rows: øre as integers, *_nok as decimal text beside each."""
    return json.dumps([{**(data := asdict(r)), **{k.removesuffix("_ore") + "_nok": format_ore(v)
                                                  for k, v in data.items() if k.endswith("_ore")}}
                       for r in rows], ensure_ascii=False, indent=2)


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
    """`2026-06-30` → the end of that day in Norway as RFC 3339 UTC; a timestamp with a zone is kept (budsjett's
    ?as_of= follows the same rule: services.shared.dates.parse_moment). ValueError says what is allowed."""
    return parse_moment(text).astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


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


def print_posts(lines: list[dict[str, Any]], as_csv: bool, as_json: bool) -> None:
    """`status --posts`: every cell per funding kap/post, with the year's sum rows they add up to."""
    rows = [row for line in lines for row in post_rows(line)]
    if as_json:
        print(rows_json(rows))
    elif as_csv:
        write_csv(POST_COLUMNS, post_table(rows), sys.stdout)
    elif not rows:
        print("Ingen budsjettlinjer ennå (no budget lines yet).\nBeløp i NOK.")
    else:
        console = console_on()
        if console.is_terminal:
            console.print(posts_table(rows, terminal=True), soft_wrap=False)
        else:
            print(table_text(posts_table(rows)))
        print("Beløp i NOK.")


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
@click.option("--posts", is_flag=True, help="one row per funding kap/post inside each cell (with overført inn, "
                                            "bortfalt and the year-end rule), and the year's sum rows they add up to")
@pass_options
def status(options: GlobalOptions, line: str | None, year: int | None, as_of: str | None, as_csv: bool,
           as_json: bool, posts: bool) -> int:
    if as_csv and as_json:
        raise click.UsageError("--csv and --json exclude each other: give one")
    lines, catalogue = fetch_lines(options.settings().service_url("budsjett"), line, as_of, year)
    if posts:
        print_posts(lines, as_csv, as_json)
        return 0
    rows = [row for document in lines for row in cell_rows(document)]
    if as_json:
        print(status_json(rows))
    elif as_csv:
        write_csv(CELL_COLUMNS, cell_table(rows), sys.stdout)
    else:
        print_status({"lines": lines, "catalogue": catalogue})
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


@click.command(short_help="export lines, cells or the audit trail (events) as CSV or xlsx, for reconciliation",
               help="lines: totals per line; cells: per line × ministry × phase; posts: per funding kap/post inside "
                    "each cell; events: every event behind each line, one row per cell and kap/post it changed, so "
                    "each amount column adds up to the line's totals. CSV is ';'-separated with decimal commas "
                    "(Norwegian Excel); xlsx keeps exact amounts.\n\n"
                    "WHAT is the table: lines, cells, posts or events.")
@click.argument("what", type=click.Choice(["lines", "cells", "posts", "events"]))
@click.option("--format", "file_format", type=click.Choice(["csv", "xlsx"]),
              help="default: from --output's name, else csv")
@click.option("--output", "-o", metavar="FILE", help="file to write (default: CSV on stdout)")
@click.option("--line", metavar="ID", help="only this line id")
@click.option("--as-of", type=AS_OF, help="as the books stood at the end of DATE (Norwegian time) or at a timestamp")
@click.option("--year", type=FISCAL_YEAR, help="only this fiscal year (budsjettår): its lines' totals, cells and "
                                               "posts, and the events that moved its money (default: every year)")
@pass_options
def export(options: GlobalOptions, what: str, file_format: str | None, output: str | None, line: str | None,
           as_of: str | None, year: int | None) -> int:
    fmt = file_format or ("xlsx" if output and output.lower().endswith(".xlsx") else "csv")
    if fmt == "xlsx" and not output:
        raise UserError("an xlsx export needs --output FILE.xlsx (a workbook is not written to a terminal)")
    columns, rows = export_table(what, options.settings().service_url("budsjett"), line, as_of, year)
    if fmt == "xlsx":
        write_xlsx(columns, rows, Path(output), title=what)
    elif output:
        Path(output).write_bytes(csv_bytes(columns, rows))
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
                        "',', UTF-8 or Windows-1252) and publish the year's items as one record on the catalogue "
                        "topic, replacing that year whole; budsjett and ingest follow it. Skipped rows are named by "
                        "their spreadsheet row number.\n\nFILE is gul_bok_<year>_datagrunnlag.xlsx or a CSV with the "
                        "same columns.")
@click.argument("file")
@click.option("--year", type=int, default=None, metavar="YYYY",
              help="fiscal year of the file (default: the one year its name states; a name that starts with a "
                   "publication date such as 20241002_ needs --year)")
@pass_options
def catalogue_import(options: GlobalOptions, file: str, year: int | None) -> int:
    from services.budsjett.catalogue import YearCatalogue, import_catalogue, publish_catalogue
    from services.localstack.stack import require_kafka

    settings = options.settings()
    path = Path(file)
    result = import_catalogue(path, year)  # an unreadable file or an unknown year raises one clear line
    require_kafka(settings)
    imported_at = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    topic = publish_catalogue(settings, YearCatalogue(result.fiscal_year, tuple(result.items), path.name, imported_at))
    print(f"Published {len(result.items)} budget items for {result.fiscal_year} from {path.name} to {topic} "
          f"(replacing any earlier {result.fiscal_year} catalogue)")
    for report_line in result.ministries.report_lines():
        print(f"  {report_line}")
    if result.skipped:
        print(f"  skipped {len(result.skipped)} rows, e.g. {result.skipped[0]}")
    print("Running budsjett and ingest services follow the topic and check kap/post against it at once.")
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
