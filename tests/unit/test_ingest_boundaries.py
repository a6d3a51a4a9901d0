"""ingest's handler boundaries (issue 16): a bug while checking costs a rejection with a correlation id, never more."""
from __future__ import annotations

import asyncio
import json
import logging
import re
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry

from services.ingest import app as ingest_app
from services.ingest import core
from services.ingest.samples import sample_event, sample_internal_credit
from services.ingest.store import IngestStore
from services.ingest.tokens import issue_token
from services.shared import streaming
from services.shared.config import Settings
from services.shared.streaming import DEAD_LETTER_REASON_HEADER, DeadLetters, Rejection, ServiceHttp


class FakeSender:
    """Kafka acknowledges at once; what was sent is kept."""

    def __init__(self) -> None:
        self.sent: list = []

    def send(self, message) -> asyncio.Future:
        self.sent.append(message)
        future = asyncio.get_running_loop().create_future()
        future.set_result(ingest_app.Delivered(message.topic, 0, len(self.sent) - 1))
        return future


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", topic_prefix="u.")


def broken_check(*args, **kwargs):
    raise RuntimeError("a parser bug")


def correlation_ids(text: str) -> set[str]:
    return set(re.findall(r"correlation[ _]id[ =]([0-9a-f]{32})", text))


def front_door(settings: Settings) -> tuple[ServiceHttp, FakeSender]:
    registry = CollectorRegistry()
    dead_letters = DeadLetters("ingest", settings.topics.dead_letter, registry)
    metrics = ingest_app.Metrics(registry, dead_letters)
    store = IngestStore(settings.db_url("ingest"))
    sender = FakeSender()
    forwarder = ingest_app.Forwarder(settings, store, metrics, sender)
    front = ingest_app.HttpFrontDoor(settings, store, metrics, dead_letters, forwarder, lambda event_id: None)
    http = ServiceHttp("ingest", settings, registry)
    http.app.router.add_post("/v1/events", front.post_events)
    return http, sender


def post(http: ServiceHttp, bodies: list[bytes], token: str) -> list[tuple[int, dict]]:
    async def send_all() -> list[tuple[int, dict]]:
        replies = []
        async with TestClient(TestServer(http.app)) as client:
            for body in bodies:
                response = await client.post("/v1/events", data=body, headers={
                    "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                replies.append((response.status, json.loads(await response.read())))
        return replies

    return asyncio.run(send_all())


def test_a_checking_bug_rejects_only_that_event_with_a_correlation_id_in_reply_log_and_dead_letter(
        settings, monkeypatch, caplog):
    token = issue_token(settings, "BFD")
    http, sender = front_door(settings)
    real_check = core.check_item
    monkeypatch.setattr(core, "check_item",
                        lambda index, document, ministry, catalogue=None: broken_check() if document["id"] == "bug"
                        else real_check(index, document, ministry, catalogue))
    batch = [sample_event(event_id="fine"), sample_event(event_id="bug")]
    with caplog.at_level(logging.ERROR, logger="reformspor.ingest"):
        (status, reply), (single_status, single) = post(
            http, [json.dumps(batch).encode(), json.dumps(sample_event(event_id="bug")).encode()], token)

    assert status == 207 and [r["status"] for r in reply["results"]] == ["accepted", "rejected"]
    assert single_status == 422 and single["status"] == 422
    replied = correlation_ids(json.dumps(reply)) | correlation_ids(single["detail"])
    assert len(replied) == 2 and replied <= correlation_ids(caplog.text)
    forwarded = [m for m in sender.sent if m.topic == settings.topics.budget]
    dead = [m for m in sender.sent if m.topic == settings.topics.dead_letter]
    assert [json.loads(m.value)["id"] for m in forwarded] == ["fine"]
    assert [json.loads(m.value)["id"] for m in dead] == ["bug", "bug"]  # the body, dead-lettered with the reason
    assert all(correlation_ids(dict(m.headers)[DEAD_LETTER_REASON_HEADER].decode()) for m in dead)


def test_a_body_reader_bug_is_a_422_and_a_dead_letter_not_a_500(settings, monkeypatch, caplog):
    token = issue_token(settings, "BFD")
    http, sender = front_door(settings)
    monkeypatch.setattr(core, "decode_body", broken_check)
    with caplog.at_level(logging.ERROR, logger="reformspor.ingest"):
        [(status, reply)] = post(http, [b'{"id": "x"}'], token)
    assert status == 422 and reply["type"].endswith("unprocessable-body")
    assert correlation_ids(reply["detail"]) <= correlation_ids(caplog.text) and correlation_ids(reply["detail"])
    assert [m.value for m in sender.sent if m.topic == settings.topics.dead_letter] == [b'{"id": "x"}']


def inbound_channel(settings: Settings, dead_letters: DeadLetters | None = None) -> ingest_app.InboundChannel:
    registry = CollectorRegistry()
    dead_letters = dead_letters or DeadLetters("ingest", settings.topics.dead_letter, registry)
    return ingest_app.InboundChannel(settings, IngestStore(settings.db_url("ingest")),
                                     ingest_app.Metrics(registry, dead_letters))


def read_from(monkeypatch, topic: str, partition: int = 0, offset: int = 0) -> None:
    """The message being processed came from this topic (what quixstreams' message_context says)."""
    position = SimpleNamespace(topic=topic, partition=partition, offset=offset)
    monkeypatch.setattr(ingest_app, "message_context", lambda: position)


def test_a_bug_while_checking_an_inbound_message_is_a_dead_letter_with_the_reason(settings, monkeypatch, caplog):
    registry = CollectorRegistry()
    dead_letters = DeadLetters("ingest", settings.topics.dead_letter, registry)
    channel = inbound_channel(settings, dead_letters)
    step = streaming.guarded(channel.step, dead_letters)
    value = json.dumps(sample_event(event_id="in-bug")).encode()
    read_from(monkeypatch, settings.topics.inbound_for("BFD"))
    monkeypatch.setattr(ingest_app, "loads_strict", broken_check)
    with caplog.at_level(logging.ERROR, logger="reformspor.ingest"):
        [letter] = step(value, b"k", 0, [], None)
    assert letter.topic == settings.topics.dead_letter and letter.value == value
    reason = dict(letter.headers)[DEAD_LETTER_REASON_HEADER].decode()
    assert reason.startswith("internal error") and correlation_ids(reason) <= correlation_ids(caplog.text)
    with pytest.raises(Rejection):  # and the step itself refuses, rather than raising the bug
        channel.step(value, b"k", None)


@pytest.mark.parametrize("document, label, reason", [
    (sample_event(ministry="KD", event_id="kd-on-bfd"), "wrong_publisher", "may not publish as urn:no:dep:KD"),
    (sample_internal_credit("BFD"), "internal_type", "internal event type"),
])
def test_the_inbound_topic_names_the_publisher(settings, monkeypatch, document, label, reason):
    """BFD's topic carries only BFD's own events: KD's money and internal types are dead-lettered with the reason."""
    channel = inbound_channel(settings)
    read_from(monkeypatch, settings.topics.inbound_for("BFD"))
    with pytest.raises(Rejection) as caught:
        channel.step(json.dumps(document).encode(), b"k", None)
    assert caught.value.label == label and reason in caught.value.reasons[0]
    [record, _row] = channel.step(json.dumps(sample_event(ministry="BFD")).encode(), b"k", None)
    assert record.topic == settings.topics.budget and dict(record.headers)["reformspor-publisher"] == b"BFD"


def test_a_message_from_a_topic_that_is_no_ministrys_inbound_topic_is_refused(settings, monkeypatch):
    channel = inbound_channel(settings)
    read_from(monkeypatch, f"{settings.topic_prefix}inbound")  # the deleted shared topic names no publisher
    with pytest.raises(Rejection) as caught:
        channel.step(json.dumps(sample_event()).encode(), b"k", None)
    assert caught.value.label == "not_inbound"


def test_the_front_door_outlives_a_kafka_client_error_of_the_stream(monkeypatch):
    """librdkafka's fatal 'static consumer fenced' after a long broker outage: the stream is rebuilt in-process."""

    class Stream:
        def __init__(self, error: Exception | None):
            self.error = error
            self.ran = False

        def run(self) -> None:
            self.ran = True
            if self.error:
                raise self.error

    class Http:
        service = "ingest"

        def start(self) -> None:
            pass

    first, second = Stream(KafkaException(KafkaError(KafkaError.FENCED_INSTANCE_ID, fatal=True))), Stream(None)
    monkeypatch.setattr(streaming, "STREAM_RESTART_PAUSE_S", 0.0)
    monkeypatch.setattr(streaming.os, "_exit", lambda code: pytest.fail(f"exited {code}"))
    streaming.run_service(first, Http(), rebuild=lambda: second)
    assert first.ran and second.ran


def test_an_inbound_message_read_again_after_an_aborted_checkpoint_is_forwarded_again(settings, monkeypatch):
    """The sink wrote its idempotency record, the transaction did not commit: the same offset is not a duplicate."""
    store = IngestStore(settings.db_url("ingest"))
    registry = CollectorRegistry()
    channel = ingest_app.InboundChannel(settings, store, ingest_app.Metrics(
        registry, DeadLetters("ingest", settings.topics.dead_letter, registry)))
    sink = ingest_app.InboundRecordSink(store, channel, channel.metrics)
    value = json.dumps(sample_event(event_id="again")).encode()

    def at(offset: int) -> list:
        read_from(monkeypatch, settings.topics.inbound_for("BFD"), 2, offset)
        return channel.step(value, b"k", None)

    record, row = at(5)
    assert record.topic == settings.topics.budget
    sink.add(row, b"k", 0, [], settings.topics.inbound_for("BFD"), 2, 5)
    sink.flush()  # the checkpoint wrote the record; say its transaction then aborted
    [again, _] = at(5)
    assert again == record
    channel.pending.clear()
    assert at(6) == []  # a later copy of the event is a duplicate
