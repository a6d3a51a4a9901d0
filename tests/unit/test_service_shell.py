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


class FakeStream:
    """What take_batches uses of a Faust stream: processors, a passive reader, acks."""

    def __init__(self, values, arrival_gap_s=0.0):
        self.values, self.arrival_gap_s = values, arrival_gap_s
        self._processors, self.acked = [], []
        self.enable_acks, self.should_stop, self.current_event = True, False, None
        self.channel = self
        self.reader = None

    def __aiter__(self):
        return self

    async def __anext__(self):
        raise StopAsyncIteration

    def add_processor(self, processor):
        self._processors.append(processor)

    def _enable_passive(self, channel):
        async def read():
            for value in self.values:
                await asyncio.sleep(self.arrival_gap_s)
                self.current_event = value
                for processor in self._processors:
                    await processor(value)
        self.reader = asyncio.ensure_future(read())

    async def wait(self, event):
        await event.wait()

    async def wait_for_stopped(self, event, timeout):
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return self.should_stop

    async def ack(self, event):
        self.acked.append(event)


def test_events_arriving_while_a_batch_is_applied_are_not_acked_with_it():
    """faust's take_events acked (and dropped) such events: offsets committed, effects never applied."""
    async def scenario():
        stream = FakeStream(list(range(40)), arrival_gap_s=0.001)
        seen, acked_when_asked = [], []
        batches = service.take_batches(stream, 10, 0.005)
        async for batch in batches:
            acked_when_asked.append(list(stream.acked))
            await asyncio.sleep(0.02)  # applying the batch; more events arrive meanwhile
            seen.extend(batch)
            if len(seen) == 40:
                break
        await batches.aclose()
        stream.reader.cancel()
        return seen, acked_when_asked, stream

    seen, acked_when_asked, stream = asyncio.run(scenario())
    assert seen == list(range(40)), "every event handed out once, in order"
    for acked in acked_when_asked:
        assert acked == seen[:len(acked)], "only events of batches already handed out and applied are acked"
    assert stream.acked == seen[:len(stream.acked)] and len(stream.acked) < 40, \
        "the last batch was not asked past, so it must not be acked (it is read again after a restart)"
    assert stream.enable_acks is True and stream._processors == []


def test_a_batch_never_holds_more_than_its_maximum():
    async def scenario():
        stream = FakeStream(list(range(35)))
        sizes = []
        batches = service.take_batches(stream, 10, 0.005)
        async for batch in batches:
            sizes.append(len(batch))
            await asyncio.sleep(0.01)
            if sum(sizes) == 35:
                break
        await batches.aclose()
        stream.reader.cancel()
        return sizes

    sizes = asyncio.run(scenario())
    assert sum(sizes) == 35 and max(sizes) <= 10


def test_a_batch_waits_for_batch_mates_at_most_within_s_counted_from_its_oldest_event():
    within_s = 0.5

    async def scenario():
        loop = asyncio.get_running_loop()
        stream = FakeStream(list(range(80)), arrival_gap_s=0.01)  # arrivals over ~0.8 s
        batches = service.take_batches(stream, 1000, within_s)
        first = await batches.__anext__()
        await asyncio.sleep(0.7)  # applying the first batch while the rest arrives
        asked_at = loop.time()
        second = await batches.__anext__()
        waited_s = loop.time() - asked_at
        await batches.aclose()
        stream.reader.cancel()
        return first, second, waited_s

    first, second, waited_s = asyncio.run(scenario())
    assert 1 < len(first) < 80, "the first batch gathered events that arrived within its linger, not one alone"
    assert first + second == list(range(80))
    # Its events had waited longer than within_s already; take_events would wait within_s again.
    assert waited_s < within_s / 2
