"""`reformspor reformer [REFORM_ID]`: the reforms and their stages, from milepael's API."""
from __future__ import annotations

import json
import urllib.parse

import click

from services.shared.clikit import GlobalOptions, pass_options
from services.shared.http_client import get_json


@click.command(short_help="list staged reforms (tiltak 1.8), or show one with its stages, forecasts and adjustments",
               help="Reads GET /v1/reforms[/{id}] from the running milepael service.\n\n"
                    "REFORM_ID, if given, shows that reform in detail.")
@click.argument("reform_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="print the API document as JSON")
@pass_options
def reformer(options: GlobalOptions, reform_id: str | None, as_json: bool) -> int:
    from services.milepael.scenario import summary_lines

    base = options.settings().service_url("milepael")
    if reform_id:
        document = get_json(f"{base}/v1/reforms/{urllib.parse.quote(reform_id, safe='')}", "milepael")
        lines = summary_lines(document)
    else:
        document = get_json(f"{base}/v1/reforms", "milepael")
        lines = [f"{r['reform_id']:<28} {'JUSTERING' if r['adjustment_required'] else 'ok':<10} {r['title']}"
                 for r in document["reforms"]] or ["no reforms registered"]
    print(json.dumps(document, ensure_ascii=False, indent=2) if as_json else "\n".join(lines))
    return 0


def register(cli: click.Group) -> None:
    cli.add_command(reformer)
