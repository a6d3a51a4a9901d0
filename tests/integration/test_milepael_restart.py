"""A killed milepael worker recovers its reforms and totals and does not raise the same adjustment twice.

Runs on PostgreSQL, as in production, so the read model's upserts are checked there too. The totals
are published in a Kafka transaction, as budsjett does: the restarted worker must read past the
transaction's commit marker to know it has loaded the whole totals topic.
"""
from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime, timezone

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer

from services.shared.kafka_security import ADMIN, client_config, kafka_python_options
from services.shared.contract import make_event
from services.localstack.processes import wait_until
from tests.integration.test_milepael_e2e import _get, _metric, _reform

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

RESTART_APPLIES_WITHIN_S = 10.0  # issue 12: a restarted worker applies again within 10 s


def publish_totals_in_transaction(settings, line_id: str, totals: dict) -> None:
    producer = Producer({**client_config(settings, ADMIN), "transactional.id": f"test-budsjett-{line_id}"})
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(settings.topics.totals, key=line_id.encode(), value=json.dumps(totals).encode())
    producer.commit_transaction(10)


def test_kill_9_recovers_state_without_duplicate_justering(stack, settings, postgres_url):
    env = {"REFORMSPOR_MILEPAEL_CLOCK": "2026-03-02T08:00:00Z", "REFORMSPOR_MILEPAEL_TICK_S": "1",
           "REFORMSPOR_MILEPAEL_DB_URL": postgres_url}
    stack.start_service("milepael", extra_env=env)
    base = settings.service_url("milepael")
    producer = KafkaProducer(**kafka_python_options(settings, ADMIN), acks="all")
    consumer = KafkaConsumer(settings.topics.justering, **kafka_python_options(settings, ADMIN),
                             auto_offset_reset="earliest", consumer_timeout_ms=200)
    received: dict[str, dict] = {}

    def publish(kind, ministry, data, event_id, when):
        producer.send(settings.topics.reform, key=b"R-e2e",
                      value=json.dumps(make_event(kind, ministry, data, event_id, when)).encode())
        producer.flush()

    def required_ids():
        received.update((e["id"], e) for e in (json.loads(m.value) for m in consumer))
        return [i for i, e in received.items() if e["data"]["state"] == "required"]

    try:
        publish("reform_registrert", "BFD", _reform(), "r-1", datetime(2026, 1, 1, tzinfo=timezone.utc))
        publish("milepael_fullfort", "BFD", {"reform_id": "R-e2e", "stage_id": "utredning", "milestone_id": "A",
                                             "ministry": "BFD"}, "r-2", datetime(2026, 1, 21, tzinfo=timezone.utc))
        publish_totals_in_transaction(settings, "L-e2e", {
            "line_id": "L-e2e", "updated_at": "2026-03-01T10:00:00Z", "cells": [
                {"ministry": "BFD", "phase": "utredning", "utbetalt_ore": 40_000_000}]})
        def settled():
            ids = required_ids()
            return ids and {r["code"] for r in received[ids[-1]]["data"]["reasons"]} == {
                "milestone_overdue", "time_tolerance", "cost_tolerance"}

        wait_until(settled, 40, "a justering event with the late milestone and the actual cost")
        before = set(received)

        stack.stop_service("milepael", hard=True)  # kill -9
        restarted_at = time.monotonic()
        stack.start_service("milepael", extra_env=env)
        # A new fact that does not change the condition: C has started.
        publish("milepael_startet", "BFD", {"reform_id": "R-e2e", "stage_id": "utredning", "milestone_id": "C",
                                            "ministry": "BFD"}, "r-3", datetime(2026, 3, 1, tzinfo=timezone.utc))

        def c_started():
            status, body = _get(f"{base}/v1/reforms/R-e2e")
            return status == 200 and body["stages"][0]["milestones"][2]["state"] == "pågår" and body

        body = wait_until(c_started, max(RESTART_APPLIES_WITHIN_S - (time.monotonic() - restarted_at), 0.1),
                          f"the restarted worker to apply r-3 within {RESTART_APPLIES_WITHIN_S:.0f} s of its restart")
        stage = body["stages"][0]
        assert stage["status"] == "justering påkrevd"
        assert stage["ac_ore"] == 40_000_000  # totals rebuilt from the compacted topic
        assert stage["milestones"][0]["state"] == "fullført"  # reform state recovered from the changelog
        wait_until(lambda: _metric(urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode(),
                                   "reformspor_reform_stage_adjustment_required", reform="R-e2e", stage="utredning") == 1,
                   20, "adjustment metric after restart")
        required_ids()
        assert set(received) == before  # nothing re-raised, nothing spuriously cleared
        assert {a["event_id"] for a in body["adjustments"]} == before
    finally:
        producer.close()
        consumer.close()
