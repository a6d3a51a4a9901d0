"""The shared stream shell's error policy and HTTP boundary, without a broker."""
from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from services.shared.config import Settings
from services.shared.streaming import (DEAD_LETTER_LABEL_HEADER, DEAD_LETTER_MAX_BYTES, DEAD_LETTER_REASON_HEADER,
                                       DEAD_LETTER_SOURCE_HEADER,
                                       DeadLetters, Record, Rejection, ServiceHttp, guarded)


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
