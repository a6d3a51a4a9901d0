"""The walking skeleton, end to end on a real broker:

ministry publishes over HTTP → ingest validates → Kafka → budsjett totals →
HTTP API and /metrics; a duplicate counts once, an invalid event is refused
with its reason and lands in the dead-letter topic.
"""
from __future__ import annotations

import json
import re
import urllib.request
from collections import defaultdict
from datetime import datetime, timezone

import pytest
from kafka import KafkaConsumer

from services.shared.kafka_security import ADMIN, kafka_python_options
from services.shared.contract import parse_event
from services.localstack.demo import DEMO_LINE_ID, budget_scenario, invalid_event
from services.localstack.processes import wait_until
from services.shared.streaming import DEAD_LETTER_REASON_HEADER

pytestmark = pytest.mark.integration
AMOUNTS = ("bevilget_ore", "omdisponert_ore", "forpliktet_ore", "utbetalt_ore", "disponibelt_ore")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def _expected_cells(events: list[dict]) -> dict[tuple[str, str], dict[str, int]]:
    """An independent oracle for the scenario's event kinds, written out longhand."""
    cells: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    commitments: dict[str, int] = {}
    for wire in events:
        event = parse_event(wire)
        data = event.data
        if event.kind == "bevilget":
            cells[data.ministry, data.phase]["bevilget_ore"] += data.amount_ore
        elif event.kind == "omdisponert":
            cells[data.from_.ministry, data.from_.phase]["omdisponert_ore"] -= data.amount_ore
            cells[data.to.ministry, data.to.phase]["omdisponert_ore"] += data.amount_ore
        elif event.kind == "forpliktet":
            cells[data.ministry, data.phase]["forpliktet_ore"] += data.amount_ore
            commitments[data.commitment_id] = data.amount_ore
        elif event.kind == "utbetalt":
            cells[data.ministry, data.phase]["utbetalt_ore"] += data.amount_ore
            if data.commitment_id:
                drawn = min(commitments[data.commitment_id], data.amount_ore)
                commitments[data.commitment_id] -= drawn
                cells[data.ministry, data.phase]["forpliktet_ore"] -= drawn
    for cell in cells.values():
        cell["disponibelt_ore"] = (cell["bevilget_ore"] + cell["omdisponert_ore"]
                                   - cell["forpliktet_ore"] - cell["utbetalt_ore"])
    return cells


def test_publish_validate_kafka_totals_http_and_metrics(stack, settings):
    from services.ingest.client import IngestClient
    from services.ingest.tokens import issue_token

    stack.start_service("ingest")
    stack.start_service("budsjett")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    events = budget_scenario(now)
    bad = invalid_event(now)

    results = {}
    for ministry in ("BFD", "KD", "HOD"):
        client = IngestClient(settings.service_url("ingest"), issue_token(settings, ministry))
        mine = [e for e in events if e["source"].endswith(":" + ministry)]
        if ministry == "BFD":
            mine.append(dict(mine[0]))  # a publisher retry of the same event
        if ministry == "KD":
            mine.append(bad)
        for result in client.publish(mine):
            results.setdefault(result["id"], []).append(result)

    assert [r["status"] for r in results[events[0]["id"]]] == ["accepted", "duplicate"]
    assert [r["status"] for r in results[bad["id"]]] == ["rejected"]
    assert any("more than two decimals" in r["reason"] for r in results[bad["id"]][0]["reasons"])

    expected = _expected_cells(events)
    line_url = f"{settings.service_url('budsjett')}/v1/lines/{DEMO_LINE_ID}"

    def totals_match():
        line = json.loads(_get(line_url))
        got = {(c["ministry"], c["phase"]): {k: c[k] for k in AMOUNTS} for c in line["cells"]}
        return got == {key: {k: value[k] for k in AMOUNTS} for key, value in expected.items()}

    wait_until(totals_match, 60, "budsjett totals to equal the oracle")
    metrics = _get(f"{settings.service_url('budsjett')}/metrics").decode()
    bfd_utredning = expected["BFD", "utredning"]["bevilget_ore"]
    pattern = (r'reformspor_budsjett_bevilget_ore\{[^}]*line="0-24"[^}]*ministry="BFD"[^}]*phase="utredning"[^}]*\}'
               r" ([0-9.e+]+)")
    match = re.search(pattern, metrics)
    assert match and float(match.group(1)) == bfd_utredning

    consumer = KafkaConsumer(settings.topics.dead_letter, **kafka_python_options(settings, ADMIN),
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    try:
        dead = [m for m in consumer if bad["id"].encode() in m.value]
    finally:
        consumer.close()
    assert dead, "the invalid event must be in the dead-letter topic"
    reason = dict(dead[0].headers)[DEAD_LETTER_REASON_HEADER].decode()
    assert "more than two decimals" in reason
