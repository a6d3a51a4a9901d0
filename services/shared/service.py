"""What every Faust service shares: app settings, health, metrics, dead letters.

Each service builds its app with `make_app`, so all of them use plain JSON on
the wire (raw bytes in, our own strict parser), acks=all, loopback-only web
servers, and the same /healthz, /readyz and /metrics endpoints.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_kafka
from faust.utils.terminal import SpinnerHandler
from faust.web import Request, Response, View
from mode.utils.logging import level_number
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from services.shared.config import Settings
from services.shared.gauges import GaugeFamilies
from services.shared.jsonio import dumps_compact

# How long the broker may hold a fetch that finds no new records. Faust hard-codes 1.5 s. While a
# partition's records wait in the client's buffer, aiokafka's next fetch leaves that partition out;
# with nothing new elsewhere the broker held that fetch for 1.5 s, and records arriving behind it
# waited too: 0-1.5 s of every event's publish-to-visible time. 100 ms costs ~10 empty fetches/s.
FETCH_MAX_WAIT_MS = 100

# A full collection of the cyclic garbage collector walks every object, and a ledger's state is
# millions of them: with 100 k events in the table it paused the event loop 0.2-0.4 s every ~2 s,
# most of the p99 of publish-to-visible. Survivors are frozen (never scanned again) every second;
# once an hour everything is unfrozen so cycles that died after being frozen are reclaimed.
GC_FREEZE_INTERVAL_S = 1.0
GC_FULL_COLLECTION_INTERVAL_S = 3600.0

DEAD_LETTER_REASON_HEADER = "reformspor-reason"
DEAD_LETTER_SOURCE_HEADER = "reformspor-source"


class _ConsumerThread(faust_kafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # handed to aiokafka's Fetcher when it starts
        return consumer


class _Consumer(faust_kafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_kafka.Transport):
    Consumer = _Consumer


class ServiceApp(faust.App):
    """faust.App on Faust's aiokafka transport, with a short fetch wait (FETCH_MAX_WAIT_MS)."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def make_app(service: str, settings: Settings, web_port: int | None = None, **overrides: Any) -> faust.App:
    """A Faust app for one service, configured the one way all services share."""
    options: dict[str, Any] = dict(
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(settings.home / f"{service}-data"),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_bind=settings.web_bind,
        web_host="127.0.0.1",
        web_port=web_port or settings.port(service),
        # Leave the terminal alone: logs go to stderr without spinners.
        web_enabled=True,
        autodiscover=False,
    )
    options.update(overrides)
    app = ServiceApp(f"{settings.topic_prefix}{service}", **options)

    @app.task
    async def quiet_debug_logging() -> None:
        # faust.Worker drives its terminal spinner by setting the root logger to DEBUG, so every
        # produce on the hot path (faust.topics, aiokafka) built a log record nobody reads.
        root = logging.getLogger()
        root.handlers[:] = [h for h in root.handlers if not isinstance(h, SpinnerHandler)]
        root.setLevel(level_number(settings.log_level))

    keep_gc_pauses_short(app)
    return app


def keep_gc_pauses_short(app: faust.App) -> None:
    """Freeze long-lived objects each second so the garbage collector's pauses stay short."""
    last_full_s = [time.monotonic()]

    @app.timer(interval=GC_FREEZE_INTERVAL_S)
    async def _freeze_survivors() -> None:
        freeze_survivors(last_full_s, app.log)


def freeze_survivors(last_full_s: list[float], logger: Any) -> None:
    """Collect the young generations, then freeze what survives; hourly, unfreeze and collect all."""
    now_s = time.monotonic()
    if now_s - last_full_s[0] >= GC_FULL_COLLECTION_INTERVAL_S:
        last_full_s[0] = now_s
        gc.unfreeze()
        started_s = time.perf_counter()
        collected = gc.collect()
        logger.info("hourly full garbage collection: %d objects, %.2f s", collected, time.perf_counter() - started_s)
    else:
        gc.collect(1)  # the young generations' cycles die here instead of being frozen
    gc.freeze()


class ConfirmedTable(faust.Table):
    """A Faust table whose changelog writes can be awaited until the broker has them.

    Faust flushes its producer before it commits offsets, but that flush gives up as soon as
    its buffer has not moved for 0.1 s, and a busy event loop easily stalls it that long. A
    kill -9 right after such a commit lost the changelog writes of events whose offsets were
    already committed: a line ended one or two events short. So the agents wait for their own
    writes (`confirm_deliveries`) before they let an input offset be acked.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unconfirmed: list[asyncio.Future] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        delivery = super().send_changelog(*args, **kwargs)
        self.unconfirmed.append(delivery)
        return delivery

    def take_unconfirmed(self) -> list[asyncio.Future]:
        taken, self.unconfirmed = self.unconfirmed, []
        return taken


def confirmed_table(app: faust.App, name: str, partitions: int) -> ConfirmedTable:
    """`app.Table(name)` whose writes `confirm_deliveries` can wait for."""
    return app.tables.add(ConfirmedTable(app, name=name, default=None, beacon=app.tables.beacon,
                                         partitions=partitions))


async def confirm_deliveries(tables: Iterable[ConfirmedTable], sends: Iterable[Awaitable[Any]] = ()) -> None:
    """Wait until the broker has acknowledged every table write and send; exit hard if one failed.

    Call before the input offsets behind those writes can be acked. A write the producer gave up
    on (after its own retries) must not be followed by an offset commit, so the process stops at
    once, without committing, and its supervisor restarts it; the input is then read again from
    the last committed offset, and the ledger's per-line offsets skip what was already applied.
    """
    pending = [*sends]
    for table in tables:
        pending.extend(table.take_unconfirmed())
    if not pending:
        return
    try:
        await asyncio.gather(*pending)
    except Exception:  # noqa: BLE001
        exit_without_commit(logging.getLogger(__name__), "a state write or send was not delivered", 75)


async def take_batches(stream: Any, max_events: int, within_s: float) -> AsyncIterator[list[Any]]:
    """Batches of a Faust stream's events; a batch is acked when the next one is asked for.

    Replaces faust's `Stream.take_events`, which has a race: an event whose arrival waited
    for the previous batch can resume only after the next batch was handed out, clear the
    "batch in progress" marker and let more events into the buffer while that batch is being
    applied; the batch's end then acks and drops them all, applied or not. It lost a few
    events per partition now and then (offsets committed, effects never applied: seen as
    skipped offsets in the kill -9 test). Here a batch is a snapshot, exactly its events are
    acked, and what arrived meanwhile is the next batch. A batch is never acked if the
    caller does not ask for the next one (a stop or an error): it is read again after a restart.

    A batch is handed out when it is full or when its oldest event has waited `within_s`
    (a producer's linger), not `within_s` after it was asked for as in take_events: events
    that arrived while the last batch was applied have waited already, so under steady load
    batches follow each other with no pause, and no event waits more than `within_s` for
    batch-mates.
    """
    loop = asyncio.get_running_loop()
    pending: list[Any] = []  # events in arrival order, not yet acked
    arrived_at: list[float] = []  # loop time each pending event arrived
    room = asyncio.Event()  # back-pressure: the stream stops reading while `pending` is full
    room.set()
    full = asyncio.Event()
    some = asyncio.Event()  # set while anything is pending

    async def collect(value: Any) -> Any:
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_batches: a stream value without its event")
        while len(pending) >= max_events and not stream.should_stop:
            room.clear()
            await stream.wait(room)
        pending.append(event)
        arrived_at.append(loop.time())
        some.set()
        if len(pending) >= max_events:
            full.set()
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # we ack, batch by batch
    stream.add_processor(collect)
    stream._enable_passive(aiter(stream.channel))  # as take_events does: the stream runs in the background
    try:
        while not stream.should_stop:
            if not pending:
                await stream.wait_for_stopped(some, timeout=within_s)
                continue
            lingered_s = loop.time() - arrived_at[0]
            if len(pending) < max_events and lingered_s < within_s:
                await stream.wait_for_stopped(full, timeout=within_s - lingered_s)
                continue
            batch = pending[:max_events]
            full.clear()
            yield batch
            del pending[:len(batch)], arrived_at[:len(batch)]
            for event in batch:
                await stream.ack(event)
            room.set()
            if len(pending) >= max_events:
                full.set()
            if not pending:
                some.clear()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(collect)


async def finish_before_ack(work: Awaitable[None], logger: logging.Logger) -> None:
    """Run a batch's work to its end even if the agent is cancelled (a stop), then let it be acked.

    Faust acks the events an agent was handed when the agent stops or raises, done or not. Work
    cut short would leave acked offsets without their effects, so a stop waits for the batch,
    and an unexpected error exits at once: no offset is committed, and the batch is read again.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if task.cancelled() or task.exception() is not None:
            exit_without_commit(logger, "batch failed while stopping", 70)
        raise
    except Exception:  # noqa: BLE001
        exit_without_commit(logger, "batch failed", 70)


def exit_without_commit(logger: logging.Logger, why: str, exit_code: int) -> None:
    """End the process now: no stop hooks, so Faust commits no offset for work that was not done."""
    logger.critical("%s; exiting without committing offsets (the input is read again on restart)", why,
                    exc_info=True)
    logging.shutdown()
    os._exit(exit_code)


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    """A topic of plain bytes: we parse JSON ourselves, strictly, with no Faust envelope."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


async def send_dead_letter(
    app: faust.App,
    settings: Settings,
    value: bytes,
    key: bytes | None,
    reasons: list[str],
    origin: str,
    dead_letters: Counter | None = None,
    reason_label: str = "invalid",
) -> Awaitable[Any]:
    """Write a rejected message, unchanged, to the dead-letter topic with the reason in headers.

    Returns the delivery (a future the broker's acknowledgement resolves), for `confirm_deliveries`.
    """
    headers = [
        (DEAD_LETTER_REASON_HEADER, "; ".join(reasons)[:4000].encode("utf-8")),
        (DEAD_LETTER_SOURCE_HEADER, origin.encode("utf-8")),
    ]
    topic = raw_topic(app, settings.topics.dead_letter)
    delivery = await topic.send(key=key, value=value, headers=headers)
    if dead_letters is not None:
        dead_letters.labels(reason=reason_label).inc()
    return delivery


def json_response(view: View, payload: Any, status: int = 200, content_type: str = "application/json") -> Response:
    return view.bytes(dumps_compact(payload), content_type=content_type, status=status)


def add_standard_routes(app: faust.App, registry: CollectorRegistry, ready_check=None,
                        gauges: GaugeFamilies | None = None) -> None:
    """/healthz (process alive), /readyz (Kafka reachable, partitions assigned), /metrics (the registry, then `gauges`)."""

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return json_response(self, {"status": "ok"})

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            problems = []
            if not app.producer or not getattr(app.producer, "started", False):
                problems.append("producer not started")
            if app.rebalancing:
                problems.append("rebalancing")
            if ready_check is not None:
                problems.extend(await ready_check())
            status = 200 if not problems else 503
            return json_response(self, {"status": "ready" if not problems else "not ready", "problems": problems}, status)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            body = generate_latest(registry)
            if gauges is not None:
                body += gauges.render()
            return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])


def run_worker(app: faust.App, settings: Settings) -> None:
    """Run the Faust worker in the foreground until SIGTERM/SIGINT."""
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False, console_port=None)
    sys.exit(worker.execute_from_commandline())


def track_consumer_lag(app: faust.App, registry: CollectorRegistry, service: str, interval_s: float = 5.0):
    """Gauge reformspor_consumer_lag_messages{service, topic, partition}, refreshed by a Faust timer.

    Lag = the partition's high watermark minus the consumer group's committed
    offset (or the fetch position before the first commit): messages not yet
    processed for good. Changelog partitions (table recovery) are left out.
    """
    from prometheus_client import Gauge

    gauge = Gauge("reformspor_consumer_lag_messages", "Messages in the input topic not yet processed",
                  ["service", "topic", "partition"], registry=registry)

    @app.timer(interval=interval_s)
    async def _update_consumer_lag() -> None:
        consumer = app.consumer
        try:
            assigned = [tp for tp in consumer.assignment() if not tp.topic.endswith("-changelog")]
            if not assigned:
                return
            highwaters = await consumer.highwaters(*assigned)
            for tp in assigned:
                committed = consumer._committed_offset.get(tp)
                position = committed if committed is not None else await consumer.position(tp)
                if position is None or highwaters.get(tp) is None:
                    continue
                gauge.labels(service=service, topic=tp.topic, partition=str(tp.partition)).set(
                    max(highwaters[tp] - position, 0))
        except Exception as error:  # noqa: BLE001 - a metric must never take the worker down
            app.log.warning("consumer lag not updated: %r", error)

    return gauge
