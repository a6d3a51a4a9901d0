"""Kafka down: ingest answers 503 with Retry-After, loses nothing it acknowledged, never duplicates, and comes back."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Producer

from services.ingest.samples import sample_event
from services.ingest.testing import post, read_topic
from services.ingest.tokens import issue_credential, issue_token
from services.shared.config import Settings
from services.localstack.kafka_local import LocalKafka
from services.localstack.processes import free_port, http_ok, wait_until
from services.localstack.stack import LocalStack
from services.shared.kafka_security import parse_properties
from services.shared.topics import ensure_topics

pytestmark = pytest.mark.integration


def test_broker_down_gives_503_and_every_acknowledged_event_lands_exactly_once(tmp_path):
    # Our own broker (secured, as the session's): the session broker is shared and must not be stopped.
    broker = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port(),
                        secrets_dir=tmp_path / "secrets")
    broker.start()
    settings = broker.client_settings(Settings(topic_prefix=f"d{uuid.uuid4().hex[:8]}.", partitions=2,
                                               home=tmp_path / "home", ingest_port=free_port(),
                                               budsjett_port=free_port(), milepael_port=free_port()))
    stack = LocalStack(settings)
    try:
        ensure_topics(settings)
        token = issue_token(settings, "BFD")
        bfd_kafka = parse_properties(issue_credential(settings, "BFD", kind="kafka").secret)
        pid = stack.start_service("ingest")
        url = settings.service_url("ingest") + "/v1/events"
        ready = settings.service_url("ingest") + "/readyz"
        acknowledged: set[str] = set()

        def send(events):
            status, headers, body = post(url, json.dumps(events).encode(), token)
            if 200 <= status < 300:
                acknowledged.update(r["id"] for r in body["results"] if r["status"] in ("accepted", "duplicate"))
            return status, headers, body

        assert send([sample_event(event_id="before-1")])[0] == 202

        broker.kill()
        started = time.monotonic()
        status, headers, body = send([sample_event(event_id="during-1"), sample_event(event_id="during-2")])
        assert status == 503 and int(headers["Retry-After"]) > 0
        assert body["title"].startswith("Event log unavailable")
        assert time.monotonic() - started < 30, "a dead broker must not hang the request"
        wait_until(lambda: not http_ok(ready), 15, "/readyz to report Kafka down")
        assert send([sample_event(event_id="during-3")])[0] == 503

        broker.start()
        wait_until(lambda: http_ok(ready), 60, "/readyz to report Kafka back")
        # The publisher retries with the same ids, as `reformspor publish` does.
        for events in ([sample_event(event_id="during-1"), sample_event(event_id="during-2")],
                       [sample_event(event_id="during-3")]):
            status, _, body = wait_until(lambda: (r := send(events))[0] in (200, 202) and r, 60, "retry to succeed")
            assert {r["status"] for r in body["results"]} <= {"accepted", "duplicate"}
        assert send([sample_event(event_id="after-1")])[0] == 202

        # The broker was away longer than the consumer session: the inbound stream forwards again,
        # in the same process (librdkafka's "static consumer fenced" is answered by a rebuild, not an exit).
        value = json.dumps(sample_event(event_id="inbound-after")).encode()
        producer = Producer({**bfd_kafka, "message.timeout.ms": 30_000})
        producer.produce(settings.topics.inbound_for("BFD"), value=value, key=b"0-24")
        assert producer.flush(30) == 0
        acknowledged.add("inbound-after")

        records = read_topic(settings, settings.topics.budget, min_count=len(acknowledged),
                             timeout_s=90, settle_s=3)
        ids = [r.json()["id"] for r in records]
        assert sorted(ids) == sorted(acknowledged) == ["after-1", "before-1", "during-1", "during-2", "during-3",
                                                        "inbound-after"]
        assert stack.pid_file("ingest").running_pid() == pid, "the front door must not have exited"
    finally:
        for pid_file in sorted(stack.run_dir.glob("*.pid")) if stack.run_dir.exists() else []:
            stack.stop_service(pid_file.stem)
        broker.stop()
