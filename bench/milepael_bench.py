"""milepael beside budsjett: many staged reforms evaluated against live totals; its time, CPU and peak RSS.

Each bench line gets the demo reform of `services.milepael.scenario` (stages,
milestones, the budget events that fund them). The clock stops when every
reform is listed by milepael with all its completed milestones; the figure
the issue asks for is milepael's peak resident memory next to budsjett's.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from bench.http_probe import get_json
from bench.procstat import cpu_seconds, peak_rss_mb
from services.shared.contract import parse_event
from services.localstack.processes import wait_until
from services.localstack.stack import LocalStack


def reform_events_for(line_ids: list[str], now: datetime) -> tuple[list[dict], dict[str, int]]:
    """Every line's demo reform; returns the events and, per reform id, its completed milestones."""
    from services.milepael.scenario import demo_events

    events: list[dict] = []
    completed: dict[str, int] = {}
    for line_id in line_ids:
        for event in demo_events(line_id, now):
            event = {**event, "id": f"{event['id']}-{line_id}"}  # the demo's ids are per day, not per line
            events.append(event)
            if event["type"].endswith("reform_registrert.v1"):
                completed.setdefault(event["data"]["reform_id"], 0)
            if event["type"].endswith("milepael_fullfort.v1"):
                completed[event["data"]["reform_id"]] = completed.get(event["data"]["reform_id"], 0) + 1
    return events, completed


def run_milepael(stack: LocalStack, line_ids: list[str], timeout_s: float) -> dict:
    """Start milepael on a stack whose budsjett is running, publish the reforms, wait until all are evaluated."""
    from kafka import KafkaProducer

    settings = stack.settings
    events, completed = reform_events_for(line_ids, datetime.now(timezone.utc).replace(microsecond=0))
    pid = stack.start_service("milepael", timeout_s=180)
    started = time.perf_counter()
    cpu_before = cpu_seconds(pid)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    try:
        for event in events:
            parsed = parse_event(event)
            topic = settings.topics.budget if parsed.is_budget else settings.topics.reform
            producer.send(topic, key=parsed.key.encode(), value=json.dumps(event).encode())
        producer.flush(60)
    finally:
        producer.close()
    base_url = settings.service_url("milepael")

    def all_evaluated() -> bool:
        for reform_id, milestones_done in completed.items():
            reform = get_json(f"{base_url}/v1/reforms/{reform_id}") or {}  # None: not known yet
            done = sum(1 for stage in reform.get("stages", []) for m in stage.get("milestones", [])
                       if m.get("state") == "fullført")
            if done < milestones_done:
                return False
        return True

    wait_until(all_evaluated, timeout_s, f"milepael to evaluate {len(completed)} reforms", interval_s=0.5)
    seconds = time.perf_counter() - started
    result = {
        "reforms": len(completed),
        "events": len(events),
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu_seconds(pid) - cpu_before, 2),
        "peak_rss_mb": round(peak_rss_mb(pid) or 0, 1),
    }
    stack.stop_service("milepael")
    return result
