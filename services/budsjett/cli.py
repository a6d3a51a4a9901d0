"""budsjett's subcommands: `reformspor status`, `reformspor replay`, `reformspor catalogue import FILE`."""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from services.shared.money import format_ore_readable


def _status(args: argparse.Namespace, settings_from_args) -> int:
    settings = settings_from_args(args)
    url = f"{settings.service_url('budsjett')}/v1/lines"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError) as error:
        print(f"budsjett is not reachable at {settings.service_url('budsjett')} ({error}).\n"
              f"Start it with `reformspor up` (or `reformspor budsjett`).", file=sys.stderr)
        return 2
    print(render_status(body))
    return 0


def render_status(body: dict) -> str:
    """A readable terminal table: per line and ministry, amounts in NOK with thousands separators."""
    headers = ("line", "ministry", "bevilget", "forpliktet", "utbetalt", "disponibelt", "flags")
    rows = []
    for line in body.get("lines", []):
        flags_by_ministry: dict[str, set] = {}
        for flag in line.get("flags", []):
            flags_by_ministry.setdefault(flag["ministry"], set()).add(flag["flag"])
        for ministry, amounts in line["by_ministry"].items():
            rows.append((line["line_id"], ministry,
                         *(format_ore_readable(amounts[f"{n}_ore"]) for n in ("bevilget", "forpliktet", "utbetalt",
                                                                              "disponibelt")),
                         ", ".join(sorted(flags_by_ministry.get(ministry, ()))) or "-"))
        totals = line["totals"]
        rows.append((line["line_id"], "TOTAL",
                     *(format_ore_readable(totals[f"{n}_ore"]) for n in ("bevilget", "forpliktet", "utbetalt",
                                                                         "disponibelt")), ""))
    if not rows:
        text = "No budget lines yet."
    else:
        widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
        numeric = {2, 3, 4, 5}

        def fmt(row):
            return "  ".join(str(v).rjust(widths[i]) if i in numeric else str(v).ljust(widths[i])
                             for i, v in enumerate(row)).rstrip()

        text = "\n".join([fmt(headers), "  ".join("-" * w for w in widths), *map(fmt, rows)])
    catalogue = body.get("catalogue") or {}
    if catalogue:
        text += f"\n\nCatalogue: {catalogue.get('checks')}"
        if catalogue.get("fiscal_years"):
            text += f" (fiscal years {', '.join(map(str, catalogue['fiscal_years']))}, {catalogue['items']} items)"
    return text + "\nAmounts in NOK."


def _catalogue_import(args: argparse.Namespace, settings_from_args) -> int:
    from services.budsjett.catalogue import parse_rows, read_rows
    from services.budsjett.readmodel import ReadModel

    settings = settings_from_args(args)
    path = Path(args.file)
    if not path.exists():
        print(f"no such file: {path}", file=sys.stderr)
        return 2
    try:
        result = parse_rows(read_rows(path), args.year)
    except ValueError as error:
        print(f"cannot import {path}: {error}", file=sys.stderr)
        return 2
    model = ReadModel(args.db_url or settings.db_url("budsjett"))
    try:
        count = model.replace_catalogue(args.year, result.items)
    finally:
        model.close()
    unmapped = sorted({i.fdep_nr for i in result.items if i.ministry is None})
    print(f"Imported {count} budget items for {args.year} from {path.name} into {model.url}")
    if unmapped:
        print(f"  fdep_nr without a ministry in the registry for {args.year}: {', '.join(map(str, unmapped))}")
    if result.skipped:
        print(f"  skipped {len(result.skipped)} rows, e.g. {result.skipped[0]}")
    print("A running budsjett picks the catalogue up within 10 s.")
    return 0


def _replay(args: argparse.Namespace, settings_from_args) -> int:
    from services.budsjett.replay import replay

    settings = settings_from_args(args)
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
    status = subparsers.add_parser("status", help="print the budget lines as a table (from a running budsjett)",
                                   description="Per line and ministry: bevilget, forpliktet, utbetalt and "
                                               "disponibelt in NOK, with over-commitment/overspending flags.")
    status.set_defaults(handler=lambda args: _status(args, settings_from_args))

    replay = subparsers.add_parser("replay", help="rebuild budsjett's state and read model from the Kafka log",
                                   description="Read the budget topic from offset 0, apply every event with the "
                                               "same rules as the live worker into a fresh read model, and print "
                                               "the final totals. Partitions are replayed in parallel processes.")
    replay.add_argument("--db-url", help="target read model (default: a new SQLite file under --home)")
    replay.add_argument("--workers", type=int, default=None,
                        help="processes, one partition each at a time (default: min(partitions, CPUs); 1 = in-process)")
    replay.set_defaults(handler=lambda args: _replay(args, settings_from_args))

    catalogue = subparsers.add_parser("catalogue", help="the budget catalogue (Gul bok kap/post)")
    actions = catalogue.add_subparsers(dest="catalogue_action", metavar="ACTION", required=True)
    importer = actions.add_parser("import", help="import Finansdepartementet's Gul bok data (xlsx or CSV)",
                                  description="Read sheet 'Data' of the Gul bok xlsx (or the same columns as CSV) "
                                              "and store the items in budsjett's read model.")
    importer.add_argument("file", help="gul_bok_<year>_datagrunnlag.xlsx or a CSV with the same columns")
    importer.add_argument("--year", type=int, default=2024, help="fiscal year of the file (default 2024)")
    importer.add_argument("--db-url", help="read model URL (default: budsjett's configured database)")
    importer.set_defaults(handler=lambda args: _catalogue_import(args, settings_from_args))
