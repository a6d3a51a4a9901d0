"""ingest: the front door. HTTP (POST /v1/events) and the raw inbound Kafka topic.

Both channels validate with the shared contract, check the publisher's
identity, deduplicate by event id, and forward the canonical envelope to the
budget or reform topic (key line_id / reform_id, header reformspor-publisher).
Rejected input goes, unchanged, to the dead-letter topic with the reason.

Two halves, one process (streaming.run_service):

- HTTP (aiohttp, in its own thread): validated events go through ingest's own
  idempotent confluent-kafka producer (acks=all, enable.idempotence). A request
  is answered 2xx only after Kafka acknowledged every event in it; the
  idempotency record (event id → content hash) is written only after that ack.
  If Kafka does not acknowledge within ACK_TIMEOUT_S the reply is 503 with
  Retry-After. The send is *not* abandoned: the producer keeps retrying it, and
  a retried POST of the same id joins that same in-flight send instead of
  producing a second copy, so every acknowledged event is on the topic once.
- The raw inbound topic (a Quix Streams application, in the main thread):
  each message is checked and either forwarded or dead-lettered inside the
  checkpoint's Kafka transaction, so no offset is ever skipped or lost. The
  idempotency record of a forwarded event is written by the sink at the
  checkpoint, with the inbound position it came from (see InboundRecordSink).

Both channels also check a budget event's kap/post against its fiscal year's catalogue, which
ingest follows on the catalogue topic (budsjett.catalogue.CatalogueHolder): a post the year's
catalogue does not have, or gives to another ministry, is refused (422; label unknown_post or
another_ministrys_post). GET /v1/events/{id} answers a publisher what became of its event:
rejected (from the dead-letter topic, which ingest follows into its store), applied (asked of
budsjett and milepael over HTTP) or pending.

Handler boundaries (issue 16): a bug while checking one event costs that event
a rejection (422 / dead letter with a correlation id in the reason and the
log), never a 500, a lost event or a skipped offset.

Publisher identity on the Kafka path comes from the broker
---------------------------------------------------------
Each ministry publishes to its own topic `<prefix>inbound.<CODE>` with its own
Kafka user (SASL/SCRAM, `ministry-<CODE>`, from `reformspor tokens create
--ministry BFD --kind kafka`), and the broker's ACLs let only that user write
that topic (deploy/kafka/acls.csv). ingest reads every registered ministry's
inbound topic and takes the publisher from the topic a message came from
(quixstreams' message_context().topic), never from a header:

- an event whose source is another ministry (KD's money on BFD's topic) goes
  to the dead-letter topic with the reason (label `wrong_publisher`);
- internal event types (budsjett's cross-line credit) are refused from every
  ministry on both channels (label `internal_type`);
- one event (a JSON object) per message; e.g. with kcat (librdkafka >= 2.6.1):
  `kcat -F bfd.properties -P -t reformspor.inbound.BFD -k 0-24`.

Why not a shared topic with signed messages: see deploy/kafka/README.md.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable

import aiohttp
from aiohttp import web
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from quixstreams import Application, State, message_context
from quixstreams.sinks import BatchingSink, SinkBatch
from sqlalchemy.exc import OperationalError

from services.budsjett.catalogue import Catalogue, CatalogueHolder
from services.ingest import core
from services.ingest.core import ItemResult, KnownEvent
from services.ingest.openapi import ACCEPTED_CONTENT_TYPES, openapi_document
from services.ingest.store import IngestRecord, IngestStore
from services.shared.config import Settings
from services.shared.contract import Event, FieldProblem
from services.shared.follower import FollowedRecord, TopicFollower
from services.shared.jsonio import JsonInputError, dumps_compact, dumps_raw, loads_strict
from services.shared.ministries import default_registry
from services.shared.logs import setup_logging
from services.shared.openapi import openapi_handler
from services.shared.streaming import (DEAD_LETTER_LABEL_HEADER, DEAD_LETTER_REASON_HEADER, DEAD_LETTER_SOURCE_HEADER,
                                       PARTITIONER, PROBLEM_JSON, DeadLetters, GroupMonitor, Record, Rejection, ServiceHttp,
                                       connection_config, input_topic, make_application, output_topic,
                                       route_outputs, run_service)

log = logging.getLogger("reformspor.ingest")

ACK_TIMEOUT_S = 10.0
DEAD_LETTER_TIMEOUT_S = 5.0
DEAD_LETTER_SAMPLE_BYTES = 65_536
PRODUCER_PROBE_INTERVAL_S = 2.0
SHUTDOWN_FLUSH_S = 10.0
LABEL_NOT_INBOUND = "not_inbound"
PUBLISHER_HEADER = "reformspor-publisher"


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge in time; nothing was acknowledged to the caller."""


class Metrics:
    def __init__(self, registry: CollectorRegistry, dead_letters: DeadLetters) -> None:
        self.dead_letters = dead_letters.counter  # one counter for both channels, labelled {service, reason}
        self.events = Counter("reformspor_ingest_events", "Events received by ingest, by channel and outcome",
                              ["channel", "outcome"], registry=registry)
        self.request_seconds = Histogram("reformspor_ingest_request_seconds", "HTTP request handling time",
                                         ["route"], registry=registry)
        self.last_event = Gauge("reformspor_ingest_last_event_timestamp_seconds",
                                "Unix time of the last accepted event per publishing ministry",
                                ["ministry"], registry=registry)
        self.unavailable = Counter("reformspor_ingest_kafka_unavailable",
                                   "Requests answered 503 because Kafka did not acknowledge in time",
                                   registry=registry)
        for channel in ("http", "kafka"):
            for outcome in ("accepted", "duplicate", "rejected", "conflict", "forbidden"):
                self.events.labels(channel=channel, outcome=outcome)

    def count(self, results: list[ItemResult], channel: str) -> None:
        for result in results:
            self.events.labels(channel=channel, outcome=result.metric_outcome).inc()


# --- checking, shared by both channels --------------------------------------------------------

def json_bytes(document: Any, dump: Callable[[Any], bytes] = dumps_compact) -> bytes:
    """`dump(document)`; a lone surrogate (which UTF-8 cannot carry) is written as a JSON \\u escape instead."""
    try:
        return dump(document)
    except UnicodeEncodeError:
        return json.dumps(document, ensure_ascii=True, separators=(",", ":"), sort_keys=True, default=str).encode()


def outgoing(event: Event, settings: Settings) -> Record:
    """One validated event as it goes to Kafka (by either channel)."""
    topic = settings.topics.budget if event.is_budget else settings.topics.reform
    return Record(topic, event.key.encode("utf-8"), dumps_compact(event.to_wire()),
                  ((PUBLISHER_HEADER, event.source_ministry.encode("utf-8")),))


def internal_rejection(index: int, document: Any, what: str) -> ItemResult:
    """The boundary: an unexpected error while checking one event rejects that event, with an id in the log."""
    correlation_id = uuid.uuid4().hex
    log.exception("unexpected error while checking %s [correlation_id=%s]", what, correlation_id)
    return ItemResult(index=index, raw=document, status=core.REJECTED, code=core.CODE_INVALID, problems=[
        FieldProblem("", f"internal error while checking this event; it was not accepted "
                         f"(correlation id {correlation_id})")])


def check_events(items: list[Any], ministry: str, settings: Settings,
                 catalogue: Catalogue | None = None) -> list[ItemResult]:
    """core.check_item for each item, behind the boundary; an accepted event must also encode for Kafka."""
    results = []
    for index, item in enumerate(items):
        try:
            result = core.check_item(index, item, ministry, catalogue)
            if result.event is not None:
                outgoing(result.event, settings)
        except Exception:  # noqa: BLE001 - the boundary: a checking bug rejects the event, never more
            result = internal_rejection(index, item, f"event {index}")
        results.append(result)
    core.mark_repeats_within_batch(results)
    return results


def settle(results: list[ItemResult], known: dict[str, KnownEvent], elsewhere: Callable[[str], str | None],
           atomic: bool) -> None:
    """Duplicate or conflict against what Kafka already has (`known`), or what another send has on its way.

    elsewhere(event id) -> the content hash of a send in flight that this request cannot join.
    """
    for result in core.to_send(results):
        core.classify_known(result, known.get(result.event.id))
    for result in core.to_send(results):
        pending_hash = elsewhere(result.event.id)
        if pending_hash is not None:
            core.classify_known(result, KnownEvent(result.event.id, pending_hash))
    if atomic:
        core.apply_atomic(results)


# --- the HTTP channel's producer ----------------------------------------------------------------

@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int


class KafkaSender:
    """confluent-kafka's idempotent producer (acks=all), bridged to asyncio.

    produce() only queues; a poll thread serves the delivery callbacks, which
    resolve futures on the caller's loop (call_soon_threadsafe). A probe thread
    asks the broker for metadata so /readyz can say whether Kafka answers.
    """

    def __init__(self, settings: Settings):
        config = connection_config(settings, "ingest").as_librdkafka_dict()
        config.update({"client.id": "reformspor-ingest-http", "acks": "all", "enable.idempotence": True,
                       "linger.ms": 2, "request.timeout.ms": 15_000, "partitioner": PARTITIONER, "logger": log})
        self.producer = Producer(config)
        self.problem: str | None = "producer not checked yet"
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._poll, name="ingest-producer-poll", daemon=True).start()
        threading.Thread(target=self._probe, name="ingest-producer-probe", daemon=True).start()

    def stop(self) -> None:
        left = self.producer.flush(SHUTDOWN_FLUSH_S)
        self._stop.set()
        if left:
            log.error("%d messages still unacknowledged at shutdown", left)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    def _probe(self) -> None:
        while not self._stop.is_set():
            try:
                self.producer.list_topics(timeout=PRODUCER_PROBE_INTERVAL_S)
                self.problem = None
            except Exception as error:  # noqa: BLE001 - reported by /readyz
                self.problem = f"Kafka metadata request failed: {error}"
            self._stop.wait(PRODUCER_PROBE_INTERVAL_S)

    def problems(self) -> list[str]:
        return [self.problem] if self.problem else []

    def send(self, message: Record) -> asyncio.Future:
        """Queue a message; the future resolves with Delivered once Kafka acknowledged it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def on_delivery(error: KafkaError | None, delivered: Message) -> None:  # runs in the poll thread
            outcome = KafkaUnavailable(error.str()) if error is not None else \
                Delivered(delivered.topic(), delivered.partition(), delivered.offset())
            loop.call_soon_threadsafe(settle_future, future, outcome)

        try:
            self.producer.produce(message.topic, value=message.value, key=message.key,
                                  headers=list(message.headers), on_delivery=on_delivery)
        except Exception as error:  # noqa: BLE001 - queue full or a client error: not acknowledged
            settle_future(future, KafkaUnavailable(f"{type(error).__name__}: {error}"))
        return future


def settle_future(future: asyncio.Future, outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


@dataclass
class InFlight:
    content_hash: str
    future: asyncio.Future


class Forwarder:
    """Sends the HTTP channel's validated events; one in-flight send per event id."""

    def __init__(self, settings: Settings, store: IngestStore, metrics: Metrics, sender: KafkaSender):
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.sender = sender
        self.pending: dict[str, InFlight] = {}
        self.tasks: set[asyncio.Future] = set()

    def in_flight_hash(self, event_id: str) -> str | None:
        """Read from both threads; a single dict lookup is atomic."""
        entry = self.pending.get(event_id)
        return entry.content_hash if entry is not None else None

    def claim(self, results: list[ItemResult]) -> list[asyncio.Future]:
        """Join in-flight sends of the same id, start the rest. Synchronous: no await between check and claim."""
        waits: list[asyncio.Future] = []
        fresh: list[ItemResult] = []
        loop = asyncio.get_running_loop()
        for result in results:
            event = result.event
            entry = self.pending.get(event.id)
            if entry is not None:
                if entry.content_hash != event.content_hash:
                    core.mark_conflict(result)
                else:
                    waits.append(entry.future)
                continue
            future = loop.create_future()
            future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            self.pending[event.id] = InFlight(event.content_hash, future)
            fresh.append(result)
            waits.append(future)
        if fresh:
            task = asyncio.ensure_future(self.deliver(fresh))
            self.tasks.add(task)  # keep a reference: the loop holds tasks only weakly
            task.add_done_callback(self.tasks.discard)
        return waits

    async def deliver(self, results: list[ItemResult]) -> None:
        acks = [(result, self.sender.send(outgoing(result.event, self.settings))) for result in results]
        acked: list[tuple[ItemResult, Delivered]] = []
        for result, ack in acks:
            try:
                acked.append((result, await ack))  # the idempotent producer retries until Kafka has it
            except KafkaUnavailable as error:
                self.finish(result.event.id, error=error)
        if acked:
            await self.remember(acked)

    async def remember(self, acked: list[tuple[ItemResult, Delivered]]) -> None:
        records = [IngestRecord(event_id=r.event.id, content_hash=r.event.content_hash, ministry=r.event.source_ministry,
                                channel="http", topic=d.topic, partition=d.partition, offset=d.offset)
                   for r, d in acked]
        for attempt in range(5):
            try:
                await asyncio.to_thread(self.store.record, records)
                break
            except Exception as error:  # noqa: BLE001 - the event is on Kafka; keep trying to remember that
                log.error("cannot write idempotency records (attempt %d): %s", attempt + 1, error)
                await asyncio.sleep(0.5 * (attempt + 1))
        now = time.time()
        for result, delivered in acked:
            self.metrics.last_event.labels(ministry=result.event.source_ministry).set(now)
            self.finish(result.event.id, value=delivered)

    def finish(self, event_id: str, value: Any = None, error: Exception | None = None) -> None:
        entry = self.pending.pop(event_id, None)
        if entry is not None:
            settle_future(entry.future, error if error is not None else value)

    async def forward(self, results: list[ItemResult], timeout_s: float = ACK_TIMEOUT_S) -> None:
        """Send every still-accepted result; return when Kafka acknowledged all, else raise KafkaUnavailable."""
        waits = self.claim(core.to_send(results))
        if not waits:
            return
        futures = [asyncio.shield(future) for future in waits]
        done, not_done = await asyncio.wait(futures, timeout=timeout_s)
        for future in not_done:
            future.cancel()  # cancels the shield only; the send itself goes on
        failed = [f for f in done if f.exception() is not None]
        if not_done or failed:
            raise KafkaUnavailable(f"{len(not_done)} not acknowledged in {timeout_s:.0f}s, {len(failed)} failed")


# --- the HTTP channel ---------------------------------------------------------------------------

def problem_response(document: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json_bytes(document), status=document["status"], content_type=PROBLEM_JSON,
                        headers=headers)


def unsupported_media_type(content_type: str) -> dict[str, Any]:
    accepted = ", ".join(ACCEPTED_CONTENT_TYPES)
    return {"type": core.PROBLEM_BASE + "unsupported-media-type", "title": "Unsupported Content-Type",
            "title_nb": "Innholdstypen støttes ikke", "status": 415,
            "detail": f"Content-Type {content_type!r} is not accepted; send one of {accepted}"}


class HttpFrontDoor:
    """POST /v1/events: authenticate, read, check, forward, answer."""

    def __init__(self, settings: Settings, store: IngestStore, metrics: Metrics, dead_letters: DeadLetters,
                 forwarder: Forwarder, inbound_in_flight: Callable[[str], str | None],
                 catalogue: CatalogueHolder | None = None):
        self.settings = settings
        self.catalogue = catalogue
        self.store = store
        self.metrics = metrics
        self.dead_letters = dead_letters
        self.forwarder = forwarder
        self.inbound_in_flight = inbound_in_flight

    async def post_events(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        try:
            return await self.handle_post(request)
        finally:
            self.metrics.request_seconds.labels(route="/v1/events").observe(time.monotonic() - started)

    async def ministry_of(self, authorization: str | None) -> str | None:
        token = core.parse_bearer(authorization)
        try:
            hashed = core.token_hash(token) if token else None
        except UnicodeEncodeError:  # undecodable header bytes: no token of ours looks like that
            return None
        credential = await asyncio.to_thread(self.store.credential_by_hash, hashed) if hashed else None
        return credential.ministry if credential is not None else None

    async def handle_post(self, request: web.Request) -> web.Response:
        ministry = await self.ministry_of(request.headers.get("Authorization"))
        if ministry is None:
            return problem_response(core.problem(401, "unauthorized",
                                    "send Authorization: Bearer <token>; tokens come from `reformspor tokens create`"),
                                    headers={"WWW-Authenticate": 'Bearer realm="reformspor"'})
        if request.content_type not in ACCEPTED_CONTENT_TYPES:
            self.metrics.events.labels(channel="http", outcome="rejected").inc()
            return problem_response(unsupported_media_type(request.headers.get("Content-Type", "")))
        atomic = request.query.get("atomic", "false").strip().lower() in ("1", "true", "yes")
        declared = request.content_length
        if declared is not None and declared > core.MAX_BODY_BYTES:
            error = core.BodyError(413, "payload-too-large", f"body is {declared} bytes; the limit is {core.MAX_BODY_BYTES}")
            return await self.body_error(error, b"", ministry)
        raw = await read_limited(request.content, core.MAX_BODY_BYTES)
        try:
            items, is_batch = core.decode_body(raw)
        except core.BodyError as error:
            return await self.body_error(error, raw, ministry)
        except Exception:  # noqa: BLE001 - the boundary: a reader bug rejects the body, with an id in the log
            correlation_id = uuid.uuid4().hex
            log.exception("unexpected error while reading a body [correlation_id=%s]", correlation_id)
            error = core.BodyError(422, "unprocessable-body", f"internal error while reading the body; nothing "
                                                              f"was accepted (correlation id {correlation_id})")
            return await self.body_error(error, raw, ministry)
        return await self.accept(items, is_batch, ministry, atomic)

    async def accept(self, items: list[Any], is_batch: bool, ministry: str, atomic: bool) -> web.Response:
        results = check_events(items, ministry, self.settings, self.catalogue.current if self.catalogue else None)
        candidates = [r.event.id for r in core.to_send(results)]
        known = await asyncio.to_thread(self.store.known, candidates) if candidates else {}
        settle(results, known, self.inbound_in_flight, atomic)  # no await from here to forward's claim
        dead_letters = asyncio.ensure_future(self.dead_letter_results(results, ministry))
        try:
            await self.forwarder.forward(results)
        except KafkaUnavailable as error:
            await dead_letters
            self.metrics.unavailable.inc()
            return problem_response(
                core.problem(503, "kafka-unavailable",
                             f"Kafka did not acknowledge ({error}); nothing in this request is acknowledged. "
                             f"Retry the same request: event ids make the retry safe."),
                headers={"Retry-After": str(core.RETRY_AFTER_S)})
        await dead_letters
        self.metrics.count(results, "http")
        status = core.response_status(results, is_batch)
        body = core.response_body(results, status)
        if not is_batch and status < 400:
            body = {**results[0].to_json(), "summary": body["summary"], "results": body["results"]}
        return web.Response(body=json_bytes(body), status=status,
                            content_type=PROBLEM_JSON if status >= 400 else "application/json")

    async def dead_letter(self, value: bytes, key: bytes | None, reasons: list[str], label: str, ministry: str) -> None:
        record = self.dead_letters.record(value, key, Rejection(reasons, label))
        record = replace(record, headers=(*record.headers, (PUBLISHER_HEADER, ministry.encode("utf-8"))))
        try:
            await asyncio.wait_for(asyncio.shield(self.forwarder.sender.send(record)), DEAD_LETTER_TIMEOUT_S)
        except (KafkaUnavailable, asyncio.TimeoutError) as error:  # the caller still gets the reasons in the reply
            log.error("dead-letter write failed (%s): %s", label, error)
            self.metrics.dead_letters.labels(service="ingest", reason="dead_letter_failed").inc()

    async def dead_letter_results(self, results: list[ItemResult], ministry: str) -> None:
        # Concurrently, so a slow broker costs one DEAD_LETTER_TIMEOUT_S per request, not one per event.
        await asyncio.gather(*(
            self.dead_letter(json_bytes(result.raw, dumps_raw), result.event.key.encode("utf-8") if result.event else None,
                             [str(p) for p in result.problems], core.dead_letter_reason_label(result), ministry)
            for result in results if result.is_bad
        ))

    async def body_error(self, error: core.BodyError, raw: bytes, ministry: str) -> web.Response:
        sample = raw[:DEAD_LETTER_SAMPLE_BYTES]
        reason = error.detail + (f" (first {len(sample)} bytes kept)" if len(raw) > len(sample) else "")
        await self.dead_letter(sample, None, [reason], "too_large" if error.status == 413 else "malformed", ministry)
        self.metrics.events.labels(channel="http", outcome="rejected").inc()
        return problem_response(core.problem(error.status, error.slug, error.detail))


# --- one event's outcome: GET /v1/events/{id} ---------------------------------------------------------

# The services that apply events, asked in turn whether they applied one (they answer from their read models).
OWNING_SERVICES = ("budsjett", "milepael")
OUTCOME_TIMEOUT_S = 3.0


class Rejections:
    """Every service's rejections, read from the dead-letter topic into ingest's store by event id.

    Resumes after the last dead letter it kept; one that names no event id (a malformed body) is skipped.
    """

    def __init__(self, settings: Settings, store: IngestStore):
        self.store = store
        self.follower = TopicFollower(settings, "ingest", settings.topics.dead_letter, self.take,
                                      store.dead_letter_positions, name="deadletters")

    def take(self, record: FollowedRecord) -> None:
        headers = dict(record.headers)

        def text(name: str) -> str:
            return (headers.get(name) or b"").decode("utf-8", "replace")

        fact = core.rejection_from_dead_letter(record.value, text(DEAD_LETTER_SOURCE_HEADER),
                                               text(DEAD_LETTER_REASON_HEADER), text(DEAD_LETTER_LABEL_HEADER),
                                               text(PUBLISHER_HEADER) or None)
        if fact is not None:
            self.store.record_rejection(fact, record.partition, record.offset)


class EventStatusRoute:
    """GET /v1/events/{id}: applied, pending or rejected (with the reason), for the caller's own events only."""

    def __init__(self, settings: Settings, store: IngestStore, front: HttpFrontDoor):
        self.settings = settings
        self.store = store
        self.front = front

    async def get_event(self, request: web.Request) -> web.Response:
        ministry = await self.front.ministry_of(request.headers.get("Authorization"))
        if ministry is None:
            return problem_response(core.problem(401, "unauthorized", "send Authorization: Bearer <token>"),
                                    headers={"WWW-Authenticate": 'Bearer realm="reformspor"'})
        event_id = request.match_info["event_id"]
        record, rejections = await asyncio.to_thread(self.store.event_facts, event_id)
        accepted_by = record.ministry if record is not None else None
        applied = await self.ask_owners(event_id) if accepted_by == ministry else None
        status = core.decide_event_status(event_id, ministry, accepted_by, rejections, applied)
        if status is None:  # another ministry's event is as unknown to this caller as one never sent
            return problem_response(core.problem(404, "unknown-event", f"{ministry} has published no event with id "
                                                                       f"{event_id[:128]!r} that ingest knows of"))
        return web.Response(body=json_bytes(status.to_json()), content_type="application/json")

    async def ask_owners(self, event_id: str) -> tuple[str, dict[str, Any]] | None:
        """(service, its answer) from the first owning service that applied the event; None: none has (yet)."""
        timeout = aiohttp.ClientTimeout(total=OUTCOME_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for service in OWNING_SERVICES:
                url = f"{self.settings.service_url(service)}/v1/events/{urllib.parse.quote(event_id, safe='')}"
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return service, await response.json()
                except (aiohttp.ClientError, asyncio.TimeoutError) as error:  # not applied as far as we can tell
                    # info, not warning: a publisher polling --wait would repeat it every second
                    log.info("cannot ask %s about event %s: %s", service, event_id[:128], error)
        return None


async def read_limited(stream: web.StreamReader, max_bytes: int) -> bytes:
    """At most max_bytes + 1 bytes of a body: enough to tell that it is too large, never more."""
    raw = b""
    while len(raw) <= max_bytes and (chunk := await stream.read(max_bytes + 1 - len(raw))):
        raw += chunk
    return raw


# --- the raw inbound topic ------------------------------------------------------------------------

@dataclass(frozen=True)
class InboundAccepted:
    """A sink row: an event the inbound channel forwarded; its idempotency record is written at the checkpoint."""

    event_id: str
    content_hash: str
    ministry: str


class InboundChannel:
    """The Quix step for every `<prefix>inbound.<CODE>`: the topic names the publisher; check, forward or dead-letter."""

    def __init__(self, settings: Settings, store: IngestStore, metrics: Metrics,
                 catalogue: CatalogueHolder | None = None):
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.catalogue = catalogue
        # Forwarded in the current checkpoint, not in the store yet (the sink writes it): id → content hash.
        self.pending: dict[str, str] = {}
        self.http_in_flight: Callable[[str], str | None] = lambda event_id: None

    def pending_hash(self, event_id: str) -> str | None:
        return self.pending.get(event_id)

    def in_flight_hash(self, event_id: str) -> str | None:
        return self.pending.get(event_id) or self.http_in_flight(event_id)

    def step(self, value: bytes | None, key: bytes | None, state: State | None) -> list[Any]:
        """Records to forward (plus a sink row), [] for a duplicate; raises Rejection to dead-letter."""
        try:
            return self.check(value or b"", message_context().topic)
        except (Rejection, StoreUnavailable):
            raise
        except Exception:  # noqa: BLE001 - the boundary: a checking bug costs a dead letter, never an offset
            correlation_id = uuid.uuid4().hex
            log.exception("unexpected error while checking an inbound message [correlation_id=%s]", correlation_id)
            self.metrics.events.labels(channel="kafka", outcome="rejected").inc()
            raise Rejection([f"internal error while checking this message; it was not accepted "
                             f"(correlation id {correlation_id})"], "internal_error") from None

    def check(self, value: bytes, topic: str) -> list[Any]:
        ministry = self.publisher(topic)
        try:
            document = loads_strict(value)
        except JsonInputError as error:
            self.metrics.events.labels(channel="kafka", outcome="rejected").inc()
            raise Rejection([str(error)], "malformed") from None
        [result] = check_events([document], ministry, self.settings,
                                self.catalogue.current if self.catalogue else None)
        settle([result], self.known(result), self.in_flight_hash, atomic=False)
        self.metrics.count([result], "kafka")
        if result.status == core.DUPLICATE:
            return []
        if result.status != core.ACCEPTED:
            raise Rejection([str(p) for p in result.problems], core.dead_letter_reason_label(result))
        event = result.event
        self.pending[event.id] = event.content_hash
        return [outgoing(event, self.settings), InboundAccepted(event.id, event.content_hash, event.source_ministry)]

    def known(self, result: ItemResult) -> dict[str, KnownEvent]:
        """What the store knows of this event, unless it was recorded from this very message.

        That happens when the checkpoint that forwarded it wrote the record but its
        transaction did not commit: the message is read again and must be forwarded again.
        """
        if not core.to_send([result]):
            return {}
        found = guard_store(self.store.known, [result.event.id])
        if found:
            here = message_context()
            if guard_store(self.store.recorded_at, result.event.id, here.topic, here.partition, here.offset):
                return {}
        return found

    def publisher(self, topic: str) -> str:
        """The ministry whose inbound topic this is: the broker let only its Kafka user write it."""
        ministry = self.settings.topics.ministry_of_inbound(topic)
        if ministry is None:  # ingest subscribes to inbound topics only; a rename elsewhere must not pass as identity
            self.metrics.events.labels(channel="kafka", outcome="forbidden").inc()
            raise Rejection([f"{topic} is not a ministry's inbound topic ({self.settings.topics.inbound_prefix}<CODE>)"],
                            LABEL_NOT_INBOUND)
        return ministry


class StoreUnavailable(Exception):
    """ingest's database did not answer: an internal error (stop, read the message again), not the message's fault."""


def guard_store(call: Callable[..., Any], *args: Any) -> Any:
    try:
        return call(*args)
    except OperationalError as error:
        raise StoreUnavailable(str(error)) from error


class InboundRecordSink(BatchingSink):
    """Writes the idempotency records of forwarded inbound events at each checkpoint, before it commits.

    A record names the inbound message it came from (topic, partition, offset), so a message
    read again after an aborted checkpoint is recognised as itself, not as a duplicate.
    """

    def __init__(self, store: IngestStore, channel: InboundChannel, metrics: Metrics):
        super().__init__()
        self.store = store
        self.channel = channel
        self.metrics = metrics

    def write(self, batch: SinkBatch) -> None:
        rows = [(item.offset, item.value) for item in batch]
        self.store.record([IngestRecord(event_id=row.event_id, content_hash=row.content_hash, ministry=row.ministry,
                                        channel="kafka", topic=batch.topic, partition=batch.partition, offset=offset)
                           for offset, row in rows])
        now = time.time()
        for _, row in rows:
            self.channel.pending.pop(row.event_id, None)
            self.metrics.last_event.labels(ministry=row.ministry).set(now)


# --- wiring -----------------------------------------------------------------------------------------

# The inbound step keeps no Quix state (idempotency is in ingest's store): a stateful step would
# give each ministry's topic its own state store and changelog topic, and make every rebalance ask
# the broker for the committed offset and watermarks of every inbound partition, one by one: a
# ministry count of round trips that a broker restart turns into timeouts.


def inbound_topics(settings: Settings) -> list[str]:
    """Every registered ministry's own inbound topic (the ones ensure_topics creates)."""
    return [settings.topics.inbound_for(code) for code in default_registry().codes()]


@dataclass
class IngestService:
    http: ServiceHttp
    monitor: GroupMonitor
    sender: KafkaSender
    stream: Callable[[], Application]
    catalogue: CatalogueHolder
    rejections: Rejections


def build(settings: Settings) -> IngestService:
    registry = CollectorRegistry()
    dead_letters = DeadLetters("ingest", settings.topics.dead_letter, registry)
    metrics = Metrics(registry, dead_letters)
    store = IngestStore(settings.db_url("ingest"))
    sender = KafkaSender(settings)
    catalogue = CatalogueHolder(settings, "ingest")
    forwarder = Forwarder(settings, store, metrics, sender)
    inbound = InboundChannel(settings, store, metrics, catalogue)
    inbound.http_in_flight = forwarder.in_flight_hash
    front = HttpFrontDoor(settings, store, metrics, dead_letters, forwarder, inbound.pending_hash, catalogue)

    def stream() -> Application:
        """The inbound topic's Quix application; built again after a Kafka client error (run_service)."""
        inbound.pending.clear()  # what the failed run had in flight was not committed: it is read again
        app = make_application("ingest", settings)
        topics = settings.topics
        outputs = {name: output_topic(app, name) for name in (topics.budget, topics.reform, topics.dead_letter)}
        sink = InboundRecordSink(store, inbound, metrics)
        for name in inbound_topics(settings):
            route_outputs(app.dataframe(input_topic(app, name)), inbound.step, dead_letters, outputs, sink,
                          stateful=False)
        return app

    monitor = GroupMonitor(settings, "ingest", inbound_topics(settings), registry)
    http = ServiceHttp("ingest", settings, registry, monitor)
    http.app.router.add_post("/v1/events", front.post_events)
    http.app.router.add_get("/v1/events/{event_id}", EventStatusRoute(settings, store, front).get_event)
    http.app.router.add_get("/v1/status", CatalogueStatus(catalogue).get)
    http.app.router.add_get("/openapi.json", openapi_handler(openapi_document))
    http.ready_checks.append(sender.problems)
    return IngestService(http, monitor, sender, stream, catalogue, Rejections(settings, store))


@dataclass(frozen=True)
class CatalogueStatus:
    """GET /v1/status: what ingest checks kap/post against (the catalogue it follows)."""

    catalogue: CatalogueHolder

    async def get(self, request: web.Request) -> web.Response:
        return web.Response(body=dumps_compact({"catalogue": self.catalogue.status()}),
                            content_type="application/json")


def main(settings: Settings) -> None:
    setup_logging("ingest", settings.log_level)
    service = build(settings)
    service.sender.start()
    service.catalogue.load()  # checks start with the catalogue as the topic holds it, not half-read
    service.rejections.follower.start(timeout_s=0)
    try:
        run_service(service.stream(), service.http, service.monitor, rebuild=service.stream)
    finally:
        service.sender.stop()  # flush what the HTTP channel has in flight
        service.rejections.follower.stop()
        service.catalogue.stop()
