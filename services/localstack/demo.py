"""`reformspor demo`: the whole system on a small, realistic scenario.

A shared line for children and youth at risk (the 0–24 co-operation), funded
by BFD, KD and HOD from their real 2024 chapter/items, with commitments,
payments and a reallocation; one event sent twice (counted once) and one
invalid event (rejected with the reason). A staged reform linked to the line
drifts so that an adjustment fires. Everything goes through the ingest HTTP
API with per-ministry tokens, exactly as a ministry's system would publish.

The scenario's clock is fixed the first time the demo runs on a stack home
(<home>/demo-anchor), so a second run sends the very same events: ingest
answers `duplicate` for each, and the demo says nothing new was published
instead of reporting conflicts for ids whose times moved.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from services.shared.config import Settings
from services.shared.contract import make_event
from services.shared.http_client import get_json
from services.shared.money import format_ore_readable
from services.localstack.processes import wait_until
from services.localstack.stack import LocalStack

DEMO_LINE_ID = "0-24"


def budget_scenario(now: datetime) -> list[dict]:
    """Budget events for the demo line: three ministries' contributions and activity."""
    year = now.year

    def event(n: int, kind: str, ministry: str, data: dict) -> dict:
        return make_event(kind, ministry, {"line_id": DEMO_LINE_ID, **data}, f"demo-{DEMO_LINE_ID}-{n:03d}",
                          now - timedelta(days=60 - n))

    return [
        event(1, "bevilget", "BFD", {"ministry": "BFD", "phase": "utredning", "amount_nok": "2500000.00", "kap": 846, "post": 21, "fiscal_year": year}),
        event(2, "bevilget", "BFD", {"ministry": "BFD", "phase": "implementering", "amount_nok": "6000000.00", "kap": 846, "post": 21, "fiscal_year": year}),
        event(3, "bevilget", "KD", {"ministry": "KD", "phase": "utvikling", "amount_nok": "3000000.00", "kap": 226, "post": 21, "fiscal_year": year}),
        event(4, "bevilget", "HOD", {"ministry": "HOD", "phase": "utvikling", "amount_nok": "1750000.50", "kap": 765, "post": 21, "fiscal_year": year}),
        event(5, "forpliktet", "BFD", {"ministry": "BFD", "phase": "utredning", "commitment_id": "BFD-K-2026-17", "amount_nok": "1200000.00", "fiscal_year": year, "description": "Kunnskapsoppsummering, avtale med forskningsinstitutt"}),
        event(6, "utbetalt", "BFD", {"ministry": "BFD", "phase": "utredning", "commitment_id": "BFD-K-2026-17", "amount_nok": "800000.00", "fiscal_year": year}),
        event(7, "omdisponert", "KD", {"amount_nok": "500000.00", "from": {"ministry": "KD", "phase": "utvikling"}, "to": {"ministry": "KD", "phase": "implementering"}, "fiscal_year": year, "reason": "Pilotkommuner klare tidligere"}),
        event(8, "utbetalt", "HOD", {"ministry": "HOD", "phase": "utvikling", "amount_nok": "300000.25", "fiscal_year": year}),
    ]


def invalid_event(now: datetime) -> dict:
    """Three decimals: the contract refuses amounts finer than one øre."""
    return make_event("utbetalt", "KD", {"line_id": DEMO_LINE_ID, "ministry": "KD", "phase": "utvikling",
                                         "amount_nok": "1000.505", "fiscal_year": now.year}, "demo-invalid-001", now)


def _get_json(url: str) -> dict:
    return get_json(url, "the demo's stack", timeout_s=5)


def scenario_anchor(home: Path, now: datetime) -> datetime:
    """The scenario's "now": fixed at the first run on this home, so re-runs publish identical events."""
    path = home / "demo-anchor"
    try:
        return datetime.fromisoformat(path.read_text().strip())
    except (OSError, ValueError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(now.isoformat() + "\n")
        return now


def outcome_line(outcome_counts: dict[str, int], expected_duplicates: int) -> str:
    """The publish summary; on a re-run (only duplicates and the planned rejection) say so plainly."""
    counts = ", ".join(f"{count} {status}" for status, count in sorted(outcome_counts.items()))
    if not outcome_counts.get("accepted") and not outcome_counts.get("conflict") \
            and outcome_counts.get("duplicate", 0) > expected_duplicates:
        return f"  already published on this stack: nothing new was sent ({counts})"
    return f"  {counts}"


def run_demo(settings: Settings, keep_running: bool = True) -> int:
    from services.ingest.client import IngestClient
    from services.ingest.tokens import issue_token

    stack = LocalStack(settings)
    stack.up()
    now = scenario_anchor(settings.home, datetime.now(timezone.utc).replace(microsecond=0))

    events = budget_scenario(now)
    try:
        from services.milepael.scenario import demo_events, summary_lines
    except ImportError:  # the reform part is optional in a partial checkout
        demo_events, summary_lines = None, None
    reform_events = demo_events(DEMO_LINE_ID, now) if demo_events else []
    events = events + reform_events
    duplicate = dict(events[0])  # a publisher retry: same id, same content
    publish_plan = events + [duplicate, invalid_event(now)]

    by_ministry: dict[str, list[dict]] = defaultdict(list)
    for event in publish_plan:
        by_ministry[event["source"].rsplit(":", 1)[1]].append(event)

    print(f"\nPublishing {len(publish_plan)} events through ingest ({settings.service_url('ingest')}) "
          f"for {', '.join(sorted(by_ministry))} …")
    outcome_counts: dict[str, int] = defaultdict(int)
    rejected = []
    for ministry, ministry_events in sorted(by_ministry.items()):
        with IngestClient(settings.service_url("ingest"), issue_token(settings, ministry, name="demo"),
                          on_retry=lambda line: print(f"  {line}", flush=True)) as client:
            for result in client.publish(ministry_events):
                outcome_counts[result["status"]] += 1
                if result["status"] in ("rejected", "conflict"):
                    rejected.append(result)
    print(outcome_line(outcome_counts, expected_duplicates=1))
    for result in rejected:
        reasons = "; ".join(f"{r['path']}: {r['reason']}" for r in result.get("reasons", []))
        print(f"  {result['status']} {result['id']}: {reasons}")

    accepted_budget = sum(1 for e in events if e["type"].startswith("no.reformspor.budsjett."))
    line_url = f"{settings.service_url('budsjett')}/v1/lines/{DEMO_LINE_ID}"
    print("Waiting for budsjett to apply every accepted budget event …")
    wait_until(lambda: len(_get_json(line_url + "/events").get("events", [])) >= accepted_budget, 60,
               f"{accepted_budget} events behind line {DEMO_LINE_ID}")
    print_line_summary(_get_json(line_url))

    if reform_events and summary_lines:
        print("\nReform (tiltak 1.8):")
        reforms_url = f"{settings.service_url('milepael')}/v1/reforms"
        reform_id = next(e["data"]["reform_id"] for e in reform_events if e["type"].endswith("reform_registrert.v1"))

        completed = sum(1 for e in reform_events if e["type"].endswith("milepael_fullfort.v1"))
        line_cells = _get_json(line_url)["cells"]

        def settled_with_adjustment():
            # The summary is printed only once milepael has seen every milestone and the
            # spending budsjett reports for each stage's funding, and has raised the adjustment.
            reform = _get_json(f"{reforms_url}/{reform_id}")
            stages = reform.get("stages", [])
            done = sum(1 for s in stages for m in s["milestones"] if m["state"] == "fullført")
            costs_joined = all(
                s.get("ac_ore") == sum(c["utbetalt_ore"] for c in line_cells
                                                for f in s["funding"]
                                                if f["line_id"] == DEMO_LINE_ID and f["phase"] == c["phase"])
                for s in stages)
            adjusted = any(s.get("adjustment_required") for s in stages)
            return reform if done == completed and costs_joined and adjusted else None

        reform = wait_until(settled_with_adjustment, 60, "milepael to evaluate the reform with every milestone and cost")
        for line in summary_lines(reform):
            print(f"  {line}")

    if keep_running:
        print("\nThe stack is still running: try `reformspor status`, "
              f"{line_url}, {settings.service_url('budsjett')}/metrics.")
        print("Stop it with: make down   (or .venv/bin/reformspor down)")
    else:
        stack.down()
    return 0


def print_line_summary(line: dict) -> None:
    """Totals per ministry and phase, in NOK with Norwegian formatting."""
    print(f"\nShared budget line {line['line_id']} (tiltak 1.7), NOK:")
    columns = ("bevilget", "omdisponert", "forpliktet", "utbetalt", "disponibelt")
    header = f"  {'departement':<12}{'fase':<16}" + "".join(f"{c:>18}" for c in columns)
    print(header)
    print("  " + "-" * (len(header) - 2))
    for cell in sorted(line["cells"], key=lambda c: (c["ministry"], c["phase"])):
        print(f"  {cell['ministry']:<12}{cell['phase']:<16}"
              + "".join(f"{format_ore_readable(cell[c + '_ore']):>18}" for c in columns))
    totals = line["totals"]
    print("  " + "-" * (len(header) - 2))
    print(f"  {'sum':<28}" + "".join(f"{format_ore_readable(totals[c + '_ore']):>18}" for c in columns))
