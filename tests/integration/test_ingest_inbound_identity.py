"""Identity on the Kafka path comes from the broker (issue 13): the topic a message came from names its publisher.

A ministry's Kafka user may write only `<prefix>inbound.<CODE>`; ingest takes the publisher from that
topic, never from a header. Another ministry's money on it, or an internal event type, is dead-lettered
with the reason and reaches no total.
"""
from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer

from services.ingest.client import IngestClient
from services.ingest.samples import sample_event, sample_internal_credit
from services.ingest.testing import read_topic
from services.ingest.tokens import issue_credential, issue_token
from services.localstack.processes import wait_until
from services.shared.kafka_security import parse_properties
from services.shared.streaming import DEAD_LETTER_REASON_HEADER

pytestmark = pytest.mark.integration


def publish_as(properties: str, topic: str, documents: list[dict[str, Any]]) -> None:
    """Produce each document (keyed by its line) with the client properties `tokens create --kind kafka` printed."""
    errors: list[KafkaError | None] = []
    producer = Producer({**parse_properties(properties), "message.timeout.ms": 20_000})
    for document in documents:
        producer.produce(topic, key=document["data"]["line_id"].encode(), value=json.dumps(document).encode(),
                         on_delivery=lambda error, _message: errors.append(error))
    producer.flush(30)
    assert errors == [None] * len(documents), errors


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_a_ministry_on_its_own_topic_gets_its_own_events_through_and_nothing_else(stack, settings):
    bfd_kafka = issue_credential(settings, "BFD", kind="kafka").secret  # what `tokens create --kind kafka` prints
    stack.start_service("ingest")
    stack.start_service("budsjett")
    kd_money = sample_event(ministry="KD", event_id="kd-by-bfd", line_id="0-24", amount_nok="999999.00")
    credit = sample_internal_credit("BFD", event_id="credit-by-bfd", line_id="0-24")
    own = sample_event(ministry="BFD", event_id="bfd-own", line_id="0-24")
    # One key, one partition: once BFD's own event is forwarded, the two before it were read too.
    publish_as(bfd_kafka, settings.topics.inbound_for("BFD"), [kd_money, credit, own])

    forwarded = read_topic(settings, settings.topics.budget, min_count=1, timeout_s=60, settle_s=2)
    assert [(r.json()["id"], r.headers["reformspor-publisher"]) for r in forwarded] == [("bfd-own", b"BFD")]
    dead = read_topic(settings, settings.topics.dead_letter, min_count=2, timeout_s=60)
    reasons = {r.json()["id"]: r.headers[DEAD_LETTER_REASON_HEADER].decode() for r in dead}
    assert set(reasons) == {"kd-by-bfd", "credit-by-bfd"}
    assert "your credentials are for BFD; you may not publish as urn:no:dep:KD" in reasons["kd-by-bfd"]
    assert "internal event type" in reasons["credit-by-bfd"]

    line_url = f"{settings.service_url('budsjett')}/v1/lines/0-24"
    wait_until(lambda: get_json(line_url).get("cells"), 60, "budsjett to count BFD's own event")
    cells = {(c["ministry"], c["phase"]): c for c in get_json(line_url)["cells"]}
    assert list(cells) == [("BFD", "utredning")]  # no KD cell: KD's money on BFD's topic changed no total
    assert (cells["BFD", "utredning"]["bevilget_ore"], cells["BFD", "utredning"]["omdisponert_ore"]) == (125_000_000, 0)

    metrics = urllib.request.urlopen(settings.service_url("ingest") + "/metrics", timeout=5).read().decode()
    assert 'reformspor_dead_letters_total{reason="wrong_publisher",service="ingest"} 1.0' in metrics
    assert 'reformspor_dead_letters_total{reason="internal_type",service="ingest"} 1.0' in metrics


def test_an_internal_credit_is_refused_over_http_too(stack, settings):
    stack.start_service("ingest")
    client = IngestClient(settings.service_url("ingest"), issue_token(settings, "BFD"))
    [result] = client.publish([sample_internal_credit("BFD", event_id="credit-over-http")])
    assert (result["status"], result["code"]) == ("rejected", "forbidden")
    assert "internal event type" in result["reasons"][0]["reason"]
    dead = read_topic(settings, settings.topics.dead_letter, min_count=1, timeout_s=30)
    assert [r.json()["id"] for r in dead] == ["credit-over-http"]
    assert read_topic(settings, settings.topics.budget, timeout_s=2) == []
