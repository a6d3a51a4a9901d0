"""What every stream service shares: a Quix Streams Application configured one way,
one error policy, and the HTTP side (/healthz, /readyz, /metrics and the service's own routes).

A service is a pure step function wired by `route_outputs`:

    step(value, key, state) -> list[Record | Snapshot | <sink row>]

- `Record`s are produced inside the checkpoint's Kafka transaction (exactly-once: outputs,
  state changelog and input offsets commit together, or not at all);
- a `Snapshot` is produced once per checkpoint, in the same transaction: the newest per key;
- anything else the step returns goes to the service's sink (its SQL read model), which
  Quix flushes at each checkpoint before the transaction commits;
- `Rejection` (raised by the step) is the one way to refuse input: the message goes,
  unchanged, to the dead-letter topic with the reason in a header, and the metric
  `reformspor_dead_letters_total{service, reason}` counts it;
- any other exception is an internal error: Quix stops the application without
  committing, the process exits non-zero, and the input is read again after a restart.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from confluent_kafka import KafkaException
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from quixstreams import Application, State, message_context
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.kafka.exceptions import BaseKafkaException
from quixstreams.models import Topic
from quixstreams.models.serializers import SerializationContext, Serializer
from quixstreams.sinks import BaseSink, BatchingSink

from services.shared.config import Settings
from services.shared.gauges import GaugeFamilies
from services.shared.jsonio import dumps_compact
from services.shared.kafka_security import client_config, consumer_group, kafka_python_options, transactional_id

log = logging.getLogger("reformspor.streaming")

DEAD_LETTER_REASON_HEADER = "reformspor-reason"
DEAD_LETTER_SOURCE_HEADER = "reformspor-source"
DEAD_LETTER_LABEL_HEADER = "reformspor-reason-label"  # the metric's bounded label (unknown_post, conflict, …)
# Kafka refuses messages over ~1 MB by default; a dead letter is cut to fit and says so.
DEAD_LETTER_MAX_BYTES = 512 * 1024

# A checkpoint (one Kafka transaction) at most every 100 ms: the p99 publish-to-visible
# target is 500 ms, and a transaction costs a few ms of broker round trips.
COMMIT_INTERVAL_S = 0.1
# Static membership: a restarted worker with the same instance id takes its partitions
# back at once instead of waiting for the dead member's session to expire (~45 s).
SESSION_TIMEOUT_MS = 10_000
MONITOR_INTERVAL_S = 1.0
# librdkafka's default partitioner (CRC32) puts a key on another partition than Java's and
# kafka-python's (murmur2). A line's events and its cross-line credits must share one
# partition whoever produced them, so every producer of ours uses murmur2.
PARTITIONER = "murmur2_random"
STREAM_RESTART_PAUSE_S = 1.0


@dataclass(frozen=True)
class Record:
    """A message to produce within the current checkpoint's Kafka transaction."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """The newest picture of something keyed (a line's totals), produced once per checkpoint.

    Of the snapshots with one (topic, key) in a checkpoint only the last is rendered and
    produced, inside the checkpoint's Kafka transaction: a reader of the topic sees every
    key's newest state, not every step on the way.
    """

    topic: str
    key: bytes
    render: Callable[[], bytes]


class Rejection(Exception):
    """Input that can never be applied: it goes to the dead-letter topic with these reasons."""

    def __init__(self, reasons: Iterable[str], label: str):
        self.reasons = tuple(reasons) or ("rejected",)
        self.label = label  # a short, bounded metric label: invalid, conflict, unknown_post, …
        super().__init__("; ".join(self.reasons))


def instance_id(service: str) -> str:
    """This worker's stable identity in its group: REFORMSPOR_INSTANCE, else the service name.

    It is both the static group member id and the transactional id, so a restarted worker
    fences its dead predecessor's open transaction at once. Two workers of one service
    beside each other must set different REFORMSPOR_INSTANCE values.
    """
    return os.environ.get("REFORMSPOR_INSTANCE") or service


def connection_config(settings: Settings, principal: str) -> ConnectionConfig:
    """How `principal` (a service) reaches the broker: the one place clients get address and credentials."""
    return ConnectionConfig.from_librdkafka_dict(client_config(settings, principal))


def make_application(service: str, settings: Settings, *, state_dir: str | None = None,
                     group: str | None = None, **overrides: Any) -> Application:
    """A Quix Streams Application for one service, configured the one way all services share."""
    member = instance_id(service)
    group_id = group or consumer_group(settings, service)
    options: dict[str, Any] = dict(
        broker_address=connection_config(settings, service),
        consumer_group=group_id,
        processing_guarantee="exactly-once",
        commit_interval=COMMIT_INTERVAL_S,
        # Quix checks the commit interval only between polls: with its default 1 s poll, a quiet
        # input committed (and showed its outputs and read model) up to 1 s after processing.
        consumer_poll_timeout=COMMIT_INTERVAL_S,
        auto_offset_reset="earliest",
        state_dir=state_dir or str(settings.home / "state" / member),
        consumer_extra_config={
            "group.instance.id": member,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "client.id": f"{service}:{member}",
            "fetch.wait.max.ms": 50,
        },
        # Prefixed by the group: unique per stack on a shared broker, and inside the
        # service's TRANSACTIONAL_ID ACL (a prefixed pattern on the group name).
        producer_extra_config={"transactional.id": transactional_id(settings, service, member), "linger.ms": 5,
                               "partitioner": PARTITIONER},
        loglevel=settings.log_level.upper() if settings.log_level.lower() != "warn" else "WARNING",
        auto_create_topics=True,
    )
    options.update(overrides)
    return Application(**options)


def input_topic(app: Application, name: str) -> Topic:
    """A topic read as raw bytes: our own strict parser reads the JSON, not a framework's."""
    return app.topic(name, key_deserializer="bytes", value_deserializer="bytes")


class _RecordValue(Serializer):
    """Serializes a `Record` routed to a topic: its value bytes, as they are."""

    def __call__(self, value: Record, ctx: SerializationContext) -> bytes:
        return value.value


def output_topic(app: Application, name: str) -> Topic:
    return app.topic(name, key_serializer="bytes", value_serializer=_RecordValue())


# --- the error policy, written once ---------------------------------------------------------

class DeadLetters:
    """Turns a `Rejection` into a dead-letter record and counts it by service and reason."""

    def __init__(self, service: str, topic: str, registry: CollectorRegistry):
        self.service = service
        self.topic = topic
        self.counter = Counter("reformspor_dead_letters", "Messages sent to the dead-letter topic",
                               ["service", "reason"], registry=registry)

    def record(self, value: bytes | None, key: bytes | None, rejection: Rejection) -> Record:
        self.counter.labels(service=self.service, reason=rejection.label).inc()
        reason = "; ".join(rejection.reasons)
        body = value or b""
        if len(body) > DEAD_LETTER_MAX_BYTES:
            reason += f" (message cut from {len(body)} to {DEAD_LETTER_MAX_BYTES} bytes)"
            body = body[:DEAD_LETTER_MAX_BYTES]
        headers = ((DEAD_LETTER_REASON_HEADER, reason[:4000].encode("utf-8", "replace")),
                   (DEAD_LETTER_SOURCE_HEADER, self.service.encode("utf-8")),
                   (DEAD_LETTER_LABEL_HEADER, rejection.label.encode("utf-8", "replace")))
        log.warning("dead letter (%s): %s", rejection.label, reason[:500],
                    extra={"reason": rejection.label, "key": (key or b"").decode("utf-8", "replace")[:200]})
        return Record(self.topic, key, body, headers)


Step = Callable[[bytes, "bytes | None", State], list[Any]]


def guarded(step: Step, dead_letters: DeadLetters) -> Callable[..., list[Any]]:
    """The step as Quix calls it (with metadata; state None for a stateless step); a `Rejection` becomes a dead letter."""

    def run(value: bytes, key: bytes | None, timestamp_ms: int, headers: Any, state: State | None = None) -> list[Any]:
        try:
            return step(value, key, state)
        except Rejection as rejection:
            return [dead_letters.record(value, key, rejection)]

    return run


class Snapshots(BaseSink):
    """`Snapshot`s waiting for the checkpoint: the newest per (topic, key), produced when Quix flushes its sinks.

    Quix flushes sinks at the start of a checkpoint's commit, inside the open Kafka transaction
    and before the changelog and offsets join it, so snapshots commit with the state they show,
    or not at all (an aborted checkpoint drops them; its messages are read and applied again).
    """

    def __init__(self, producer: Any, topics: dict[str, Topic]):
        super().__init__()
        self.producer = producer
        self.topics = topics
        self.pending: dict[tuple[str, bytes], Snapshot] = {}

    def add(self, value: Any, key: Any, timestamp: int, headers: Any, topic: str, partition: int,
            offset: int) -> None:
        self.pending[(value.topic, value.key)] = value

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for snapshot in pending.values():
            self.producer.produce(topic=self.topics[snapshot.topic].name, key=snapshot.key, value=snapshot.render())

    def on_paused(self) -> None:
        self.pending = {}


class OutputRouter:
    """Hands each output of one message to its place: a Record to the producer (the checkpoint's
    transaction), a Snapshot to the per-checkpoint `Snapshots`, anything else to the service's sink.

    One pass, no stream branch: at a branch Quix pickles a copy of every value for the second
    branch (~55 µs per event for budsjett's outputs).
    """

    def __init__(self, producer: Any, topics: dict[str, Topic], snapshots: Snapshots, sink: BatchingSink | None):
        self.producer = producer
        self.topics = topics
        self.snapshots = snapshots
        self.sink = sink

    def __call__(self, outputs: list[Any], key: Any, timestamp_ms: int, headers: Any) -> None:
        for item in outputs:
            if isinstance(item, Record):
                self.producer.produce(topic=self.topics[item.topic].name, key=item.key, value=item.value,
                                      headers=list(item.headers) or None, timestamp=timestamp_ms)
                continue
            # What Quix's own StreamingDataFrame.sink() hands a sink for each value.
            context = message_context()
            target = self.snapshots if isinstance(item, Snapshot) else self.sink
            if target is None:
                raise TypeError(f"the step returned a {type(item).__name__}, but no sink takes it")
            target.add(item, key, timestamp_ms, headers, context.topic, context.partition, context.offset)


def route_outputs(sdf: StreamingDataFrame, step: Step, dead_letters: DeadLetters,
                  topics: dict[str, Topic], sink: BatchingSink | None = None, *, stateful: bool = True) -> None:
    """Wire a step: its Records to their topics (one transaction per checkpoint), its Snapshots to
    their topics once per checkpoint (the newest per key), the rest to `sink`.

    stateful=False: the step keeps no Quix state (it is called with state None), so no state
    store or changelog topic is made for its input.
    """
    context = sdf.processing_context
    snapshots = Snapshots(context.producer, topics)
    # What StreamingDataFrame.sink() does to have a sink flushed at every checkpoint.
    for registered in (snapshots, sink):
        if registered is not None:
            context.sink_manager.register(registered)
    router = OutputRouter(context.producer, topics, snapshots, sink)
    sdf.apply(guarded(step, dead_letters), stateful=stateful, metadata=True).update(router, metadata=True)


# --- the group: lag and readiness, from the broker's view --------------------------------------

@dataclass
class GroupMonitor:
    """Consumer lag per input partition and whether this worker holds partitions.

    Read with kafka-python's admin client from the broker (committed offsets, log-end
    offsets, group members), so it needs nothing from inside the stream framework.
    Lag = log-end offset minus the group's committed offset: what is not yet processed
    for good. Refreshed every MONITOR_INTERVAL_S in a daemon thread.
    """

    settings: Settings
    service: str
    input_topics: list[str]
    registry: CollectorRegistry
    group: str = ""
    assigned_partitions: int = 0
    # The input partitions this worker holds, as (topic, partition), from the last refresh.
    held: frozenset[tuple[str, int]] = frozenset()
    last_error: str | None = "not checked yet"
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.group = self.group or consumer_group(self.settings, self.service)
        self.lag = Gauge("reformspor_consumer_lag_messages", "Messages in an input topic not yet processed",
                         ["service", "topic", "partition"], registry=self.registry)

    def start(self) -> None:
        threading.Thread(target=self._loop, name=f"{self.service}-group-monitor", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        admin = None
        while not self._stop.is_set():
            try:
                admin = admin or KafkaAdminClient(**kafka_python_options(self.settings, self.service),
                                                  client_id=f"{self.service}-monitor", request_timeout_ms=5000)
                self.refresh(admin)
                self.last_error = None
            except Exception as error:  # noqa: BLE001 - a metric must never take the worker down
                self.last_error = f"{type(error).__name__}: {error}"
                if admin is not None:
                    admin.close()
                admin = None
            self._stop.wait(MONITOR_INTERVAL_S)

    def refresh(self, admin: KafkaAdminClient) -> None:
        member = f"{self.service}:{instance_id(self.service)}"
        described = admin.describe_groups([self.group]).get(self.group, {})
        self.held = frozenset(
            (assigned["topic"], partition)
            for m in described.get("members", []) if m.get("client_id") == member
            for assigned in (m.get("member_assignment") or {}).get("assigned_partitions", [])
            if assigned.get("topic") in self.input_topics
            for partition in assigned.get("partitions", []))
        self.assigned_partitions = len(self.held)
        committed = admin.list_group_offsets({self.group: None}).get(self.group, {})
        partitions = [TopicPartition(topic, p) for topic in self.input_topics
                      for p in range(self.settings.partitions)]
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
        for tp in partitions:
            end = getattr(ends.get(tp), "offset", None)
            done = committed.get(tp)
            position = done.offset if done is not None and done.offset >= 0 else 0
            if end is not None:
                self.lag.labels(service=self.service, topic=tp.topic, partition=str(tp.partition)).set(
                    max(end - position, 0))

    def problems(self) -> list[str]:
        found = []
        if self.last_error:
            found.append(f"group not checked: {self.last_error}")
        elif self.assigned_partitions == 0:
            found.append("this worker holds no partitions yet (joining the group or recovering)")
        return found


class StateRecovery:
    """A readiness check: the input partitions this worker holds have their state opened and recovered.

    Which partitions it holds comes from the broker (the `GroupMonitor`); whether their state
    is ready, from Quix's public state manager (read from the HTTP thread: reads only). Quix
    opens a partition's store and registers it for recovery when it is assigned, and applies
    nothing of it until its changelog is replayed: until then, answers would come from a ledger
    that has not caught up. (The monitor's own check says when no partition is held yet.)
    """

    def __init__(self, sdf: StreamingDataFrame, monitor: GroupMonitor):
        self.state = sdf.processing_context.state_manager
        self.monitor = monitor

    def problems(self) -> list[str]:
        held = {partition for _topic, partition in self.monitor.held}
        if not held:
            return []
        opened = [set(store.partitions) for stores in self.state.stores.values() for store in stores.values()]
        if any(not held <= partitions for partitions in opened):
            return ["opening the state of the partitions this worker holds"]
        if self.state.recovery_required:
            return ["recovering state from the changelog"]
        return []


# --- the HTTP side ----------------------------------------------------------------------------

PROBLEM_JSON = "application/problem+json"


def json_response(payload: Any, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(body=dumps_compact(payload), status=status, content_type=content_type)


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    """An RFC 9457 problem document."""
    return json_response({"type": "about:blank", "title": title, "status": status, "detail": detail, **extra},
                         status=status, content_type=PROBLEM_JSON)


@web.middleware
async def problem_boundary(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Every unexpected error becomes a problem+json with a correlation id that the log carries too."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return problem(error.status, error.reason, error.text or error.reason)
    except Exception:  # noqa: BLE001 - the boundary: log it with an id, answer without a traceback
        correlation_id = uuid.uuid4().hex
        log.exception("unexpected error on %s %s [correlation_id=%s]", request.method, request.path, correlation_id)
        return problem(500, "Internal error", f"the request could not be handled; correlation id {correlation_id}",
                       correlation_id=correlation_id)


class ServiceHttp:
    """An aiohttp server in a daemon thread: the standard routes plus the service's own."""

    def __init__(self, service: str, settings: Settings, registry: CollectorRegistry,
                 monitor: GroupMonitor | None = None, gauges: GaugeFamilies | None = None,
                 port: int | None = None):
        self.service = service
        self.settings = settings
        self.port = port or settings.port(service)
        self.registry = registry
        self.monitor = monitor
        self.gauges = gauges
        self.ready_checks: list[Callable[[], list[str]]] = []
        self.app = web.Application(middlewares=[problem_boundary], client_max_size=2 * 1024 * 1024)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = list(self.monitor.problems()) if self.monitor else []
        for check in self.ready_checks:
            problems.extend(check())
        status = 200 if not problems else 503
        return json_response({"status": "ready" if not problems else "not ready", "problems": problems}, status)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        if self.gauges is not None:
            body += self.gauges.render()
        return web.Response(body=body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    def start(self, timeout_s: float = 10.0) -> None:
        """Serve in a daemon thread; return once the port is bound (or raise why it could not be)."""
        threading.Thread(target=self._serve, name=f"{self.service}-http", daemon=True).start()
        if not self._started.wait(timeout_s) or self._failure is not None:
            raise RuntimeError(f"{self.service}: HTTP server on {self.settings.web_bind}:{self.port} did not start: "
                               f"{self._failure!r}")

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self.app, access_log=None)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.settings.web_bind, self.port, reuse_address=True)
            loop.run_until_complete(site.start())
        except BaseException as error:  # noqa: BLE001 - reported to start()
            self._failure = error
            self._started.set()
            return
        self._started.set()
        loop.run_forever()


def run_service(app: Application, http: ServiceHttp, monitor: GroupMonitor | None = None,
                rebuild: Callable[[], Application] | None = None) -> None:
    """Serve HTTP, watch the group, and run the stream in the foreground until SIGTERM/SIGINT.

    An internal error in the stream stops the application without committing; the process
    then exits non-zero so its supervisor restarts it, and the input is read again.

    rebuild: for a service whose HTTP side must outlive the stream (ingest's front door).
    A Kafka client error (e.g. librdkafka's fatal "static consumer fenced" after the broker
    was away longer than the session timeout, librdkafka issue #3437) then builds a fresh
    Application and runs it again in this process, as a restart would, instead of exiting.
    """
    http.start()
    if monitor is not None:
        monitor.start()
    try:
        while True:
            try:
                app.run()
                return
            except (BaseKafkaException, KafkaException) as error:
                if rebuild is None:
                    raise
                log.error("%s: the stream stopped on a Kafka client error (%s); nothing was committed for the "
                          "failed work; starting it again in %.0f s", http.service, error, STREAM_RESTART_PAUSE_S)
                time.sleep(STREAM_RESTART_PAUSE_S)
                app = rebuild()
    except Exception:  # noqa: BLE001 - logged once, here; the exit code tells the supervisor
        log.critical("%s stopped on an internal error; nothing was committed for the failed work",
                     http.service, exc_info=True)
        logging.shutdown()
        os._exit(70)
    finally:
        if monitor is not None:
            monitor.stop()
