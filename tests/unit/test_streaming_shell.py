"""The shared stream shell's error policy and HTTP boundary, without a broker."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from quixstreams.context import set_message_context
from quixstreams.models import MessageContext

from services.shared.config import Settings
from services.shared.streaming import (DEAD_LETTER_LABEL_HEADER, DEAD_LETTER_MAX_BYTES, DEAD_LETTER_REASON_HEADER,
                                       DEAD_LETTER_SOURCE_HEADER, DeadLetters, OutputRouter, Record, Rejection,
                                       ServiceHttp, Snapshot, Snapshots, StateRecovery, guarded)


def dead_letters() -> tuple[DeadLetters, CollectorRegistry]:
    registry = CollectorRegistry()
    return DeadLetters("budsjett", "p.deadletter", registry), registry


def test_a_rejection_becomes_a_dead_letter_with_the_reason_and_a_counted_label():
    letters, registry = dead_letters()

    def step(value, key, state):
        raise Rejection(["kap 999 post 01 is not in the 2026 catalogue"], "unknown_post")

    outputs = guarded(step, letters)(b'{"id":"e1"}', b"0-24", 0, None, state=None)

    assert outputs == [Record("p.deadletter", b"0-24", b'{"id":"e1"}', (
        (DEAD_LETTER_REASON_HEADER, b"kap 999 post 01 is not in the 2026 catalogue"),
        (DEAD_LETTER_SOURCE_HEADER, b"budsjett"), (DEAD_LETTER_LABEL_HEADER, b"unknown_post")))]
    assert registry.get_sample_value("reformspor_dead_letters_total",
                                     {"service": "budsjett", "reason": "unknown_post"}) == 1


def test_an_internal_error_is_not_swallowed():
    """Anything but a Rejection must stop the worker (no commit), not become a dead letter."""
    letters, registry = dead_letters()

    def step(value, key, state):
        raise KeyError("bug")

    try:
        guarded(step, letters)(b"x", None, 0, None, state=None)
    except KeyError:
        pass
    else:
        raise AssertionError("an internal error was swallowed")
    assert registry.get_sample_value("reformspor_dead_letters_total",
                                     {"service": "budsjett", "reason": "invalid"}) is None


def test_an_oversized_dead_letter_is_cut_to_fit_and_says_so():
    letters, _ = dead_letters()
    record = letters.record(b"x" * (DEAD_LETTER_MAX_BYTES + 10), None, Rejection(["too big"], "too_large"))
    assert len(record.value) == DEAD_LETTER_MAX_BYTES
    reason = dict(record.headers)[DEAD_LETTER_REASON_HEADER].decode()
    assert reason.startswith("too big") and "cut from" in reason


def test_an_unexpected_handler_error_is_a_problem_document_with_a_correlation_id(tmp_path, caplog):
    http = ServiceHttp("ingest", Settings(home=tmp_path), CollectorRegistry(), port=1)

    async def broken(request):
        raise ValueError("a parser bug")

    http.app.router.add_get("/broken", broken)

    async def scenario():
        async with TestClient(TestServer(http.app)) as client:
            response = await client.get("/broken")
            assert response.status == 500
            assert response.content_type == "application/problem+json"
            document = await response.json()
            assert "Traceback" not in await response.text()
            return document

    document = asyncio.run(scenario())
    assert document["correlation_id"] in document["detail"]
    assert document["correlation_id"] in caplog.text


class FakeProducer:
    """Quix's producer as the router and the snapshots use it: what was produced, in order."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, bytes]] = []

    def produce(self, topic, key=None, value=None, headers=None, timestamp=None, **_):
        self.produced.append((topic, key, value))


def test_records_go_out_at_once_and_only_the_newest_snapshot_per_key_at_the_checkpoint():
    set_message_context(MessageContext(topic="p.in", partition=0, offset=7, size=1))
    producer = FakeProducer()
    topics = {name: type("T", (), {"name": name})() for name in ("p.out", "p.totals")}
    snapshots = Snapshots(producer, topics)
    rows: list = []
    sink = type("Sink", (), {"add": lambda self, value, *rest: rows.append((value, rest))})()
    router = OutputRouter(producer, topics, snapshots, sink)
    renders: list[bytes] = []

    def snapshot(value: bytes) -> Snapshot:
        return Snapshot("p.totals", b"0-24", lambda: renders.append(value) or value)

    router([Record("p.out", b"0-24", b"credit"), snapshot(b"total 1"), "a row"], b"0-24", 0, None)
    router([snapshot(b"total 2")], b"0-24", 0, None)
    assert producer.produced == [("p.out", b"0-24", b"credit")]
    assert rows == [("a row", (b"0-24", 0, None, "p.in", 0, 7))]

    snapshots.flush()
    assert producer.produced[1:] == [("p.totals", b"0-24", b"total 2")]
    assert renders == [b"total 2"]  # the older picture was never even rendered
    router([snapshot(b"total 3")], b"0-24", 0, None)
    snapshots.on_paused()  # an aborted checkpoint: its snapshots go with it
    snapshots.flush()
    assert len(producer.produced) == 2


class FakeStore:
    def __init__(self, partitions: set[int]) -> None:
        self.partitions = dict.fromkeys(partitions)


def test_readyz_waits_until_the_held_partitions_state_is_opened_and_recovered(tmp_path):
    """Ready only once the worker holds partitions AND has recovered their state (issue 12)."""
    state = SimpleNamespace(stores={"budsjett": {"default": FakeStore(set())}}, recovery_required=False)
    sdf = SimpleNamespace(processing_context=SimpleNamespace(state_manager=state))
    monitor = SimpleNamespace(held=frozenset({("p.budsjett.events", 0), ("p.budsjett.events", 2)}))
    http = ServiceHttp("budsjett", Settings(home=tmp_path), CollectorRegistry(), port=1)
    http.ready_checks.append(StateRecovery(sdf, monitor).problems)

    async def scenario() -> list[tuple[int, list[str]]]:
        answers = []
        async with TestClient(TestServer(http.app)) as client:
            for opened, recovering in ((set(), False), ({0, 2}, True), ({0, 2}, False)):
                state.stores["budsjett"]["default"] = FakeStore(opened)
                state.recovery_required = recovering
                response = await client.get("/readyz")
                answers.append((response.status, (await response.json())["problems"]))
        return answers

    assert asyncio.run(scenario()) == [(503, ["opening the state of the partitions this worker holds"]),
                                       (503, ["recovering state from the changelog"]),
                                       (200, [])]
