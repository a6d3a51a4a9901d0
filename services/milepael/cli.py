"""`reformspor reformer [REFORM_ID]`: the reforms and their stages, from milepael's API."""
from __future__ import annotations

import json
import urllib.parse

from services.shared.http_client import get_json


def register(subparsers, settings_from_args) -> None:
    parser = subparsers.add_parser(
        "reformer", help="list staged reforms (tiltak 1.8), or show one with its stages, forecasts and adjustments",
        description="Reads GET /v1/reforms[/{id}] from the running milepael service.")
    parser.add_argument("reform_id", nargs="?", help="show this reform in detail")
    parser.add_argument("--json", action="store_true", help="print the API document as JSON")

    def handler(args) -> int:
        from services.milepael.scenario import summary_lines

        base = settings_from_args(args).service_url("milepael")
        if args.reform_id:
            document = get_json(f"{base}/v1/reforms/{urllib.parse.quote(args.reform_id, safe='')}", "milepael")
            lines = summary_lines(document)
        else:
            document = get_json(f"{base}/v1/reforms", "milepael")
            lines = [f"{r['reform_id']:<28} {'JUSTERING' if r['adjustment_required'] else 'ok':<10} {r['title']}"
                     for r in document["reforms"]] or ["no reforms registered"]
        print(json.dumps(document, ensure_ascii=False, indent=2) if args.json else "\n".join(lines))
        return 0

    parser.set_defaults(handler=handler)
