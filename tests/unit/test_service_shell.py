"""The shared Faust shell: what a batch waits for before its offsets can be acked, and how fast it fetches."""
from __future__ import annotations

import asyncio
import logging

import pytest

from services.shared import service


class Exited(BaseException):
    """Stands in for os._exit in these tests (BaseException: nothing in between may swallow it)."""


@pytest.fixture
def exits(monkeypatch):
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited(code)

    monkeypatch.setattr(service.os, "_exit", fake_exit)
    return codes


class FakeTable:
    def __init__(self, deliveries):
        self.unconfirmed = list(deliveries)

    def take_unconfirmed(self):
        taken, self.unconfirmed = self.unconfirmed, []
        return taken


def test_confirm_waits_for_every_table_write_and_send():
    async def scenario():
        loop = asyncio.get_running_loop()
        write, send = loop.create_future(), loop.create_future()
        table = FakeTable([write])
        confirming = asyncio.ensure_future(service.confirm_deliveries([table], [send]))
        loop.call_later(0.01, write.set_result, "written")
        await asyncio.sleep(0.05)
        assert not confirming.done(), "returned before the send was acknowledged"
        send.set_result("sent")
        await asyncio.wait_for(confirming, 1)
        assert table.unconfirmed == []

    asyncio.run(scenario())


def test_a_lost_write_ends_the_process_before_any_offset_is_committed(exits):
    async def scenario():
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError("broker gave up"))
        with pytest.raises(Exited):
            await service.confirm_deliveries([FakeTable([failed])])

    asyncio.run(scenario())
    assert exits == [75]


def test_a_stop_mid_batch_lets_the_batch_finish_before_the_agent_ends():
    done: list[str] = []

    async def batch():
        await asyncio.sleep(0.05)
        done.append("batch")

    async def scenario():
        agent = asyncio.ensure_future(service.finish_before_ack(batch(), logging.getLogger("test")))
        await asyncio.sleep(0.01)
        agent.cancel()  # what Faust does to an agent on stop
        with pytest.raises(asyncio.CancelledError):
            await agent
        assert done == ["batch"], "the agent ended (and Faust would ack) before the batch was applied"

    asyncio.run(scenario())


def test_an_error_in_a_batch_exits_instead_of_letting_faust_ack_it(exits):
    async def failing_batch():
        raise ValueError("bug")

    async def scenario():
        with pytest.raises(Exited):
            await service.finish_before_ack(failing_batch(), logging.getLogger("test"))

    asyncio.run(scenario())
    assert exits == [70]


def test_the_services_consumer_does_not_let_the_broker_hold_fetches_for_faust_s_1_5_s(tmp_path):
    """Faust hard-codes fetch_max_wait_ms=1500, which added 0-1.5 s to every event's publish→visible time."""
    from services.shared.config import Settings

    async def scenario():
        app = service.make_app("budsjett", Settings(kafka_bootstrap="127.0.0.1:9", home=tmp_path))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(scenario()) == service.FETCH_MAX_WAIT_MS <= 100


def test_long_lived_state_is_frozen_out_of_the_collectors_scans_and_reclaimed_hourly():
    """Full collections over a big table paused the loop 0.2-0.8 s: the p99 of publish→visible."""
    import gc
    import time
    import weakref

    class Node:
        pass

    state = [{"record": i} for i in range(10_000)]  # stands in for a table's records
    try:
        gc.unfreeze()
        last_full_s = [time.monotonic()]
        service.freeze_survivors(last_full_s, logging.getLogger("test"))
        assert gc.get_freeze_count() >= len(state), "the state is still scanned by every full collection"

        node = Node()
        node.me = node  # a cycle that is alive when frozen and dies later
        gone = weakref.ref(node)
        gc.freeze()
        del node
        gc.collect()
        assert gone() is not None  # frozen: not reclaimed by ordinary collections ...
        last_full_s[0] -= service.GC_FULL_COLLECTION_INTERVAL_S
        service.freeze_survivors(last_full_s, logging.getLogger("test"))
        assert gone() is None, "... but the hourly full collection must reclaim it"
        assert gc.get_freeze_count() >= len(state)
    finally:
        gc.unfreeze()
