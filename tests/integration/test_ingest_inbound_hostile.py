"""Hostile bytes on a ministry's inbound topic: every offset is forwarded or dead-lettered, none lost (issue 16)."""
from __future__ import annotations

import json
import random

import pytest
from confluent_kafka import Producer
from kafka import KafkaAdminClient

from services.ingest.samples import sample_event
from services.ingest.testing import read_topic
from services.ingest.tokens import issue_credential
from services.localstack.processes import wait_until
from services.shared.contract import parse_event
from services.shared.jsonio import loads_strict
from services.shared.kafka_security import ADMIN, kafka_python_options, parse_properties
from services.shared.streaming import DEAD_LETTER_REASON_HEADER, consumer_group

pytestmark = pytest.mark.integration


def hostile_values() -> list[bytes]:
    """Valid events, and everything a careless or hostile publisher might put on the topic."""
    rng = random.Random(16)
    good = [json.dumps(sample_event(event_id=f"in-ok-{i}", line_id=f"0-{i}")).encode() for i in range(5)]
    # Valid events of another ministry: on BFD's topic they are BFD speaking for KD.
    foreign = [json.dumps(sample_event(ministry="KD", event_id=f"in-kd-{i}", line_id=f"0-{i}")).encode() for i in range(3)]
    text = json.dumps(sample_event(event_id="in-template", line_id="0-24"))
    surrogates = [
        text.replace('"in-template"', '"in-\\ud800"'),                      # lone surrogate in id
        text.replace('"0-24"', '"0-\\udfff"'),                               # … in line_id
        text.replace('"in-template"', '"in-desc"')[:-2] + ', "description": "x\\ud800y"}}',
        json.dumps(sample_event("korrigert", event_id="in-reason", line_id="0-24")).replace("wrong post", "\\udc80"),
    ]
    nul = [text.replace('"in-template"', '"in-nul-id\\u0000"'),
           text.replace('"in-template"', '"in-nul"')[:-2] + ', "description": "a\\u0000b"}}']
    oversized = [
        (text.replace('"in-template"', '"in-big"')[:-2] + f', "description": "{"x" * 900_000}"}}}}').encode(),
        b"{" * 700_000,
        rng.randbytes(900_000),
    ]
    garbage = [rng.randbytes(rng.randint(0, 300)) for _ in range(12)] + [
        b"", b"\xff\xfe\xfd", b'{"id": "\xc3\x28"}', b"\xed\xa0\x80", b"null", b"[]", b"1e999", b'"text"',
        text.encode()[:-7],  # cut short
    ]
    return good + foreign + [v.encode() for v in surrogates + nul] + oversized + garbage


def test_every_inbound_offset_is_forwarded_or_dead_lettered(stack, settings):
    bfd_kafka = parse_properties(issue_credential(settings, "BFD", name="hostile", kind="kafka").secret)
    stack.start_service("ingest")
    values = hostile_values()
    delivered: list = []
    producer = Producer({**bfd_kafka, "message.max.bytes": 2_000_000, "message.timeout.ms": 60_000})
    for index, value in enumerate(values):
        producer.produce(settings.topics.inbound_for("BFD"), value=value, key=str(index).encode(),
                         on_delivery=lambda error, _message: delivered.append(error))
    producer.flush(60)
    assert delivered == [None] * len(values)

    def committed_everything() -> bool:
        admin = KafkaAdminClient(**kafka_python_options(settings, ADMIN))
        try:
            offsets = admin.list_group_offsets({consumer_group(settings, "ingest"): None})
            return sum(o.offset for o in offsets[consumer_group(settings, "ingest")].values() if o.offset > 0) == len(values)
        finally:
            admin.close()

    wait_until(committed_everything, 120, "ingest to commit every inbound offset")
    forwarded = read_topic(settings, settings.topics.budget, timeout_s=10) + \
        read_topic(settings, settings.topics.reform, timeout_s=10)
    dead = read_topic(settings, settings.topics.dead_letter, min_count=len(values) - len(forwarded),
                      timeout_s=60)

    assert len(forwarded) + len(dead) == len(values), (len(forwarded), len(dead), len(values))
    assert {f"in-ok-{i}" for i in range(5)} <= {r.json()["id"] for r in forwarded}
    for record in forwarded:  # nothing hostile got through: every forwarded value is a valid event again
        assert parse_event(loads_strict(record.value)).id == record.json()["id"]
    assert all(r.headers.get(DEAD_LETTER_REASON_HEADER) for r in dead)
    reasons = [r.headers[DEAD_LETTER_REASON_HEADER].decode() for r in dead]
    assert sum("you may not publish as urn:no:dep:KD" in reason for reason in reasons) == 3
    assert any("cut from" in reason for reason in reasons)  # the 900 KB values, kept in part
    assert stack.pid_file("ingest").running_pid(), "ingest must survive all of it"
