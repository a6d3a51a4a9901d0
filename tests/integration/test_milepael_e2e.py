"""End to end through a real Kafka broker: late milestones and spending make a justering event and metric appear.

Reform events are published in Kafka transactions, as ingest does, and by librdkafka's default
partitioner (not Java's murmur2): the periodic re-evaluation must still reach the partition that
holds the reform's state, and must not wait behind a commit marker.
"""
from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timezone

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer

from services.shared.kafka_security import ADMIN, client_config, kafka_python_options
from services.shared.contract import make_event
from services.localstack.processes import wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 9, tzinfo=timezone.utc)


def _reform() -> dict:
    return {
        "reform_id": "R-e2e", "title": "Tidlig innsats", "owner": "BFD",
        "stages": [{
            "stage_id": "utredning", "name": "Utredning", "planned_start": "2026-01-01", "planned_finish": "2026-04-11",
            "planned_cost_nok": "1000000.00",
            "milestones": [
                {"milestone_id": "A", "name": "Kunnskapsgrunnlag", "weight": 1, "due": "2026-01-21", "responsible": "BFD"},
                {"milestone_id": "B", "name": "Høringsnotat", "weight": 1, "due": "2026-02-20", "responsible": "KD"},
                {"milestone_id": "C", "name": "Anbefaling", "weight": 2, "due": "2026-04-11", "responsible": "BFD"},
            ],
            "funding": [{"line_id": "L-e2e", "phase": "utredning"}],
            "gate": {"required_milestones": ["A", "B", "C"]},
            "tolerances": {"time_days": {"warning": 10, "critical": 30}, "cost_pct": {"warning": 10, "critical": 25}},
        }],
    }


def _metric(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _get(url: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
            return response.status, (json.loads(body) if "json" in response.headers["Content-Type"] else body)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode())


def test_overdue_milestone_and_overspending_raise_then_replanning_clears(stack, settings, tmp_path):
    clock_file = tmp_path / "clock"
    clock_file.write_text("2026-01-25T08:00:00Z")
    stack.start_service("milepael", extra_env={"REFORMSPOR_MILEPAEL_CLOCK": f"file:{clock_file}",
                                               "REFORMSPOR_MILEPAEL_TICK_S": "1"})
    base = settings.service_url("milepael")
    producer = KafkaProducer(**kafka_python_options(settings, ADMIN), acks="all")
    reform_producer = Producer({**client_config(settings, ADMIN), "transactional.id": "test-ingest"})
    reform_producer.init_transactions(10)
    consumer = KafkaConsumer(settings.topics.justering, **kafka_python_options(settings, ADMIN),
                             auto_offset_reset="earliest", consumer_timeout_ms=200, isolation_level="read_committed")
    received: list[dict] = []

    def publish_raw(value: bytes) -> None:
        reform_producer.begin_transaction()
        reform_producer.produce(settings.topics.reform, key=b"R-e2e", value=value)
        reform_producer.commit_transaction(10)

    def publish(kind, ministry, data, event_id, when):
        publish_raw(json.dumps(make_event(kind, ministry, data, event_id, when)).encode())

    def justering(state: str):
        received.extend(json.loads(m.value) for m in consumer)
        return [e for e in received if e["data"]["state"] == state]

    try:
        publish("reform_registrert", "BFD", _reform(), "r-1", T0)
        publish("milepael_fullfort", "BFD", {"reform_id": "R-e2e", "stage_id": "utredning", "milestone_id": "A",
                                             "ministry": "BFD", "completed_on": "2026-01-21"}, "r-2",
                datetime(2026, 1, 21, 15, tzinfo=timezone.utc))
        publish_raw(b'{"not": "an event"')  # dead-lettered, not stalling the reform's partition
        def a_done():
            status, body = _get(f"{base}/v1/reforms/R-e2e")
            return status == 200 and body["stages"][0]["milestones"][0]["state"] == "fullført" and body

        body = wait_until(a_done, 30, "the reform and milestone A in the read model")
        assert body["stages"][0]["status"] == "pågår" and not body["adjustment_required"]

        # Time passes with no reform event: the periodic re-evaluation finds B overdue and the forecast late.
        clock_file.write_text("2026-03-02T08:00:00Z")
        first = wait_until(lambda: justering("required"), 30, "a justering event for the late milestone")
        assert len(first) == 1
        assert {r["code"] for r in first[0]["data"]["reasons"]} == {"milestone_overdue", "time_tolerance"}
        assert first[0]["type"] == "no.reformspor.reform.justering.v1"
        assert first[0]["data"]["numbers"]["forecast_finish"] == "2026-05-01"

        # Budsjett's totals for the line (as budsjett would publish them): 400 000 NOK spent on utredning.
        totals = {"line_id": "L-e2e", "updated_at": "2026-03-01T10:00:00Z", "last_event_time": "2026-03-01T10:00:00Z",
                  "cells": [{"ministry": m, "phase": "utredning", "bevilget_ore": 60_000_000, "omdisponert_ore": 0,
                             "forpliktet_ore": 0, "utbetalt_ore": 20_000_000, "disponibelt_ore": 40_000_000}
                            for m in ("BFD", "KD")], "totals": {}}
        producer.send(settings.topics.totals, key=b"L-e2e", value=json.dumps(totals).encode())
        producer.flush()
        # Spending ahead of earned value changes the condition: exactly one more event, now with the cost.
        required = wait_until(lambda: len(justering("required")) >= 2 and justering("required"), 30,
                              "a justering event for the cost forecast")
        data = required[1]["data"]
        assert {r["code"] for r in data["reasons"]} == {"milestone_overdue", "time_tolerance", "cost_tolerance"}
        assert data["numbers"]["ac_ore"] == 40_000_000 and data["numbers"]["eac_ore"] == 160_000_000

        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert _metric(metrics, "reformspor_reform_stage_adjustment_required", reform="R-e2e", stage="utredning") == 1
        assert _metric(metrics, "reformspor_reform_stage_schedule_variance_days", reform="R-e2e", stage="utredning") == 20
        assert _metric(metrics, "reformspor_reform_stage_tolerance_level", stage="utredning", dimension="cost") == 2
        assert _metric(metrics, "reformspor_dead_letters_total", service="milepael", reason="invalid") == 1
        status, body = _get(f"{base}/v1/reforms/R-e2e")
        stage = body["stages"][0]
        assert stage["status"] == "justering påkrevd" and stage["spi_t"] == 0.8333 and stage["cpi"] == 0.625
        assert stage["methods"]["cost_forecast"] == "eac_bac_over_cpi"

        # Several more ticks with the same facts: still exactly one event.
        wait_until(lambda: _metric(urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode(),
                                   "reformspor_reform_stage_status", stage="utredning", status="justering påkrevd") == 1,
                   10, "status metric")
        # Re-plan: B moves, budget and finish move; the adjustment clears.
        publish("plan_justert", "BFD", {"reform_id": "R-e2e", "stage_id": "utredning", "planned_finish": "2026-06-30",
                                        "planned_cost_nok": "1600000", "ministry": "BFD", "reason": "ny port",
                                        "milestones": [{"milestone_id": "B", "due": "2026-03-20"},
                                                       {"milestone_id": "C", "due": "2026-06-30"}]},
                "r-3", datetime(2026, 3, 2, 9, tzinfo=timezone.utc))
        wait_until(lambda: justering("cleared"), 30, "a cleared justering event")
        assert len(justering("required")) == 2  # ticks with unchanged facts added nothing
        status, body = _get(f"{base}/v1/reforms/R-e2e")
        assert [b["version"] for b in body["baselines"]] == [1, 2]
        assert body["stages"][0]["status"] == "pågår"
        assert [a["state"] for a in body["adjustments"]] == ["required", "required", "cleared"]
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert _metric(metrics, "reformspor_reform_stage_adjustment_required", reform="R-e2e", stage="utredning") == 0
        assert _get(f"{base}/v1/reforms/nope")[0] == 404
        # The stages as finance staff open them in Excel, and the API's own description.
        status, text = _get(f"{base}/v1/reforms?format=csv")
        rows = [row.split(";") for row in text.lstrip("\ufeff").split("\r\n") if row]
        assert status == 200 and rows[0][:5] == ["Reform", "Tittel", "Eier", "Vurdert per", "Trinn"]
        assert rows[1][:7] == ["R-e2e", "Tidlig innsats", "BFD", rows[1][3], "utredning", "Utredning", "pågår"]
        assert _get(f"{base}/openapi.json")[1]["info"]["title"] == "Reformspor milepael"
    finally:
        producer.close()
        reform_producer.flush(5)
        consumer.close()
