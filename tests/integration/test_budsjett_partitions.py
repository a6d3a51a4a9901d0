"""Batched consumption keeps every line's state co-partitioned with the line's events.

The worker processes events in batches that span partitions; Faust writes a
table key's changelog entry to the partition of the *current event*. If that
context were wrong, a line's state would be restored on another partition's
worker after a rebalance (or lost to the wrong partition's compaction).
"""
from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaConsumer, TopicPartition

from services.shared.kafka_security import ADMIN, kafka_python_options
from services.shared.contract import make_event
from services.localstack.processes import wait_until
from tests.integration.test_budsjett_service import publish

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=timezone.utc)
LINES = [f"linje-{i}" for i in range(12)]


def read_all(settings, topic: str) -> list:
    """Every record of a topic, from the beginning to the current end."""
    consumer = KafkaConsumer(**kafka_python_options(settings, ADMIN), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records = []
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def test_changelog_entries_land_on_the_source_events_partition(stack, settings):
    events = []
    for i in range(240):
        line = LINES[i % len(LINES)]
        events.append(make_event("bevilget", "BFD", {
            "line_id": line, "ministry": "BFD", "phase": "utredning", "amount_nok": f"{1000 + i}.00",
            "kap": 840, "post": 70, "fiscal_year": 2026}, f"b{i}", T0 + timedelta(seconds=i)))
    # Cross-line reallocations: the credit is a derived event on the target line's partition.
    for i in range(12):
        source, target = LINES[i], LINES[(i + 5) % len(LINES)]
        events.append(make_event("omdisponert", "BFD", {
            "line_id": source, "amount_nok": "10.00", "fiscal_year": 2026,
            "from": {"ministry": "BFD", "phase": "utredning"},
            "to": {"ministry": "BFD", "phase": "utredning", "line_id": target}}, f"o{i}", T0 + timedelta(hours=1)))
    publish(settings, events)  # all published before the worker starts: its batches span partitions
    stack.start_service("budsjett")
    expected_applied = len(events) + 12  # plus the 12 credits

    def applied() -> int:
        with urllib.request.urlopen(f"{settings.service_url('budsjett')}/v1/lines", timeout=5) as response:
            return sum(line["events_applied"] for line in json.loads(response.read())["lines"])

    wait_until(lambda: applied() == expected_applied, 90, f"{expected_applied} events applied")

    line_partition = {}
    for record in read_all(settings, settings.topics.budget):
        line_id = json.loads(record.value)["data"]["line_id"]
        assert line_partition.setdefault(line_id, record.partition) == record.partition
    assert len(set(line_partition.values())) > 1, "the test needs lines on several partitions"

    event_line = {e["id"]: e["data"]["line_id"] for e in events}
    event_line.update({f"o{i}#to": LINES[(i + 5) % len(LINES)] for i in range(12)})
    changelog = read_all(settings, f"{settings.topic_prefix}budsjett-ledger-changelog")
    seen_lines = set()
    for record in changelog:
        key = json.loads(record.key)
        if key.startswith("line:"):
            line_id = key.removeprefix("line:")
            seen_lines.add(line_id)
        elif key.startswith("id:"):
            line_id = event_line[key.removeprefix("id:")]
        else:
            continue
        assert record.partition == line_partition[line_id], (key, record.partition, line_partition[line_id])
    assert seen_lines == set(LINES)

    # After a restart with nothing new to consume, every line is still listed: the worker's
    # set of line ids is rebuilt from the recovered table, not only from new events.
    stack.stop_service("budsjett", hard=False)
    stack.start_service("budsjett")
    wait_until(lambda: applied() == expected_applied, 60, "every line listed again after a restart")
    with urllib.request.urlopen(f"{settings.service_url('budsjett')}/v1/status", timeout=5) as response:
        assert json.loads(response.read())["lines"] == len(LINES)
