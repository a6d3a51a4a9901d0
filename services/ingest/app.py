"""ingest: the front door. HTTP (POST /v1/events) and the raw inbound Kafka topic.

Both channels validate with the shared contract, check the publisher's
identity, deduplicate by event id, and forward the canonical envelope to the
budget or reform topic (key line_id / reform_id, header reformspor-publisher).
Rejected input goes, unchanged, to the dead-letter topic with the reason.

Durability: validated events go through ingest's own idempotent producer
(acks=all, enable_idempotence). A request is answered 2xx only after Kafka
acknowledged every event in it; the idempotency record (event id → content
hash) is written only after that ack. If Kafka does not acknowledge within
ACK_TIMEOUT_S the reply is 503 with Retry-After. The send is *not* abandoned:
the idempotent producer keeps retrying it, and a retried POST of the same id
joins that same in-flight send instead of producing a second copy, so every
acknowledged event is on the topic exactly once.

Publisher identity on the raw Kafka topic
-----------------------------------------
Kafka clients are not HTTP clients, so identity comes from a signature:

- `reformspor tokens create --ministry BFD --kind kafka` prints a key id and a
  signing key (stored by ingest, since HMAC verification needs the key).
- Each message on `<prefix>inbound` carries the headers
  `reformspor-key-id: <id>` and
  `reformspor-signature: <hex HMAC-SHA256(signing key, message value bytes)>`,
  e.g. with kcat: `kcat -P -b HOST -t reformspor.inbound -H reformspor-key-id=7
  -H reformspor-signature=$(printf %s "$JSON" | openssl dgst -sha256 -hmac "$KEY" -r | cut -d' ' -f1)`.
- Unsigned, unknown-key, revoked-key or mis-signed messages, and events whose
  source is not the key's ministry, go to the dead-letter topic with the reason.
- One event (a JSON object) per message.

Production design (topic ACLs, defence in depth): the broker authenticates
each ministry as its own principal (SASL/SCRAM or mTLS, `User:dep-bfd`); only
ministry principals get WRITE on `reformspor.inbound` and nothing else; only
the ingest principal gets READ on inbound and WRITE on the budget, reform and
dead-letter topics; services READ those. The signature then still binds each
message to a ministry, because principals on a shared inbound topic cannot be
seen by consumers.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.web import Request, Response, View
from mode import Service
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.ingest import core
from services.ingest.core import ItemResult
from services.ingest.openapi import openapi_document
from services.ingest.store import IngestRecord, IngestStore
from services.shared.config import Settings
from services.shared.jsonio import JsonInputError, dumps_compact, dumps_raw, loads_strict
from services.shared.service import (add_standard_routes, make_app, raw_topic, run_worker, send_dead_letter,
                                     track_consumer_lag)

log = logging.getLogger("reformspor.ingest")

ACK_TIMEOUT_S = 10.0
ENQUEUE_TIMEOUT_S = 5.0
DEAD_LETTER_TIMEOUT_S = 5.0
DEAD_LETTER_SAMPLE_BYTES = 65_536
# Kafka refuses messages over ~1 MB by default; a body near our 1 MiB limit is cut to fit, and the reason says so.
DEAD_LETTER_MAX_BYTES = 512 * 1024
PUBLISHER_HEADER = "reformspor-publisher"
KEY_ID_HEADER = "reformspor-key-id"
SIGNATURE_HEADER = "reformspor-signature"
PROBLEM_JSON = "application/problem+json"


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge in time; nothing was acknowledged to the caller."""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("reformspor_ingest_events", "Events received by ingest, by channel and outcome",
                              ["channel", "outcome"], registry=self.registry)
        self.request_seconds = Histogram("reformspor_ingest_request_seconds", "HTTP request handling time",
                                         ["route"], registry=self.registry)
        self.dead_letters = Counter("reformspor_dead_letters", "Messages written to the dead-letter topic",
                                    ["service", "reason"], registry=self.registry)
        self.last_event = Gauge("reformspor_ingest_last_event_timestamp_seconds",
                                "Unix time of the last accepted event per publishing ministry",
                                ["ministry"], registry=self.registry)
        self.unavailable = Counter("reformspor_ingest_kafka_unavailable",
                                   "Requests answered 503 because Kafka did not acknowledge in time",
                                   registry=self.registry)
        for channel in ("http", "kafka"):
            for outcome in ("accepted", "duplicate", "rejected", "conflict", "forbidden"):
                self.events.labels(channel=channel, outcome=outcome)


@dataclass
class _Pending:
    content_hash: str
    future: asyncio.Future


class Forwarder:
    """Sends validated events with ingest's idempotent producer; one in-flight send per event id."""

    def __init__(self, settings: Settings, store: IngestStore, metrics: Metrics):
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.producer: AIOKafkaProducer | None = None
        self.pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Future] = set()

    async def start(self) -> None:
        while self.producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                client_id="reformspor-ingest",
                acks="all",
                enable_idempotence=True,
                request_timeout_ms=15000,
                linger_ms=2,
            )
            try:
                await producer.start()
                self.producer = producer
            except Exception as error:  # broker not up yet: keep trying; /readyz says not ready
                log.warning("ingest producer cannot start yet: %s", error)
                await producer.stop()
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()  # flushes what is in flight

    async def kafka_problems(self) -> list[str]:
        if self.producer is None:
            return ["ingest producer not connected to Kafka"]
        try:
            await asyncio.wait_for(self.producer.client.fetch_all_metadata(), 3.0)
        except Exception as error:
            return [f"Kafka metadata request failed: {type(error).__name__}"]
        return []

    def claim(self, results: list[ItemResult], channel: str) -> list[tuple[ItemResult, asyncio.Future]]:
        """Join in-flight sends of the same id, start the rest. Synchronous: no await between check and claim."""
        waits: list[tuple[ItemResult, asyncio.Future]] = []
        fresh: list[ItemResult] = []
        loop = asyncio.get_running_loop()
        for result in results:
            event = result.event
            entry = self.pending.get(event.id)
            if entry is not None:
                if entry.content_hash != event.content_hash:
                    core.mark_conflict(result)
                else:
                    waits.append((result, entry.future))
                continue
            future = loop.create_future()
            future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            self.pending[event.id] = _Pending(event.content_hash, future)
            fresh.append(result)
            waits.append((result, future))
        if fresh:
            task = asyncio.ensure_future(self._deliver(fresh, channel))
            self._tasks.add(task)  # keep a reference: the loop holds tasks only weakly
            task.add_done_callback(self._tasks.discard)
        return waits

    async def _deliver(self, results: list[ItemResult], channel: str) -> None:
        sends: list[tuple[ItemResult, Any]] = []
        try:
            for result in results:
                event = result.event
                if self.producer is None:
                    raise KafkaUnavailable("producer not connected")
                topic = self.settings.topics.budget if event.is_budget else self.settings.topics.reform
                # Enqueueing waits for metadata; bounded so a dead broker cannot hold it forever.
                ack = await asyncio.wait_for(
                    self.producer.send(topic, value=dumps_compact(event.to_wire()), key=event.key.encode("utf-8"),
                                       headers=[(PUBLISHER_HEADER, event.source_ministry.encode("utf-8"))]),
                    ENQUEUE_TIMEOUT_S)
                sends.append((result, ack))
        except Exception as error:
            for result in results[len(sends):]:
                self._finish(result.event.id, error=KafkaUnavailable(str(error) or type(error).__name__))
        acked: list[tuple[ItemResult, Any]] = []
        for result, ack in sends:
            try:
                acked.append((result, await ack))  # the idempotent producer retries until Kafka has it
            except Exception as error:
                self._finish(result.event.id, error=KafkaUnavailable(str(error) or type(error).__name__))
        if not acked:
            return
        records = [
            IngestRecord(event_id=r.event.id, content_hash=r.event.content_hash, ministry=r.event.source_ministry,
                         channel=channel, topic=meta.topic, partition=meta.partition, offset=meta.offset)
            for r, meta in acked
        ]
        for attempt in range(5):
            try:
                await asyncio.to_thread(self.store.record, records)
                break
            except Exception as error:  # the event is on Kafka; keep trying to remember that
                log.error("cannot write idempotency records (attempt %d): %s", attempt + 1, error)
                await asyncio.sleep(0.5 * (attempt + 1))
        now = time.time()
        for result, meta in acked:
            self.metrics.last_event.labels(ministry=result.event.source_ministry).set(now)
            self._finish(result.event.id, value=meta)

    def _finish(self, event_id: str, value: Any = None, error: Exception | None = None) -> None:
        entry = self.pending.pop(event_id, None)
        if entry is None or entry.future.done():
            return
        if error is not None:
            entry.future.set_exception(error)
        else:
            entry.future.set_result(value)

    async def forward(self, results: list[ItemResult], channel: str, timeout_s: float = ACK_TIMEOUT_S) -> None:
        """Send every still-accepted result; return when Kafka acknowledged all, else raise KafkaUnavailable."""
        waits = self.claim(core.to_send(results), channel)
        if not waits:
            return
        futures = [asyncio.shield(future) for _, future in waits]
        done, not_done = await asyncio.wait(futures, timeout=timeout_s)
        for future in not_done:
            future.cancel()  # cancels the shield only; the send itself goes on
        failed = [f for f in done if f.exception() is not None]
        if not_done or failed:
            raise KafkaUnavailable(f"{len(not_done)} not acknowledged in {timeout_s:.0f}s, {len(failed)} failed")


class Ingestor:
    """The shell around the pure core, shared by the HTTP and Kafka channels."""

    def __init__(self, app: faust.App, settings: Settings, store: IngestStore, metrics: Metrics):
        self.app = app
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.forwarder = Forwarder(settings, store, metrics)

    async def decide(self, items: list[Any], ministry: str, atomic: bool) -> list[ItemResult]:
        results = [core.check_item(index, item, ministry) for index, item in enumerate(items)]
        core.mark_repeats_within_batch(results)
        candidates = core.to_send(results)
        known = await asyncio.to_thread(self.store.known, [r.event.id for r in candidates]) if candidates else {}
        for result in candidates:
            core.classify_known(result, known.get(result.event.id))
        for result in core.to_send(results):  # in flight with other content is a conflict too
            entry = self.forwarder.pending.get(result.event.id)
            if entry is not None and entry.content_hash != result.event.content_hash:
                core.mark_conflict(result)
        if atomic:
            core.apply_atomic(results)
        return results

    async def dead_letter(self, value: bytes, key: bytes | None, reasons: list[str], origin: str, label: str) -> None:
        if len(value) > DEAD_LETTER_MAX_BYTES:
            reasons = [*reasons, f"(value truncated to its first {DEAD_LETTER_MAX_BYTES} of {len(value)} bytes)"]
            value = value[:DEAD_LETTER_MAX_BYTES]
        try:
            await asyncio.wait_for(
                send_dead_letter(self.app, self.settings, value, key, reasons, origin), DEAD_LETTER_TIMEOUT_S)
            self.metrics.dead_letters.labels(service="ingest", reason=label).inc()
        except Exception as error:  # the caller still gets the reasons in the reply
            log.error("dead-letter write failed (%s): %s", label, error)
            self.metrics.dead_letters.labels(service="ingest", reason="dead_letter_failed").inc()

    async def dead_letter_results(self, results: list[ItemResult], origin: str) -> None:
        # Concurrently, so a slow broker costs one DEAD_LETTER_TIMEOUT_S per request, not one per event.
        await asyncio.gather(*(
            self.dead_letter(dumps_raw(result.raw), result.event.key.encode("utf-8") if result.event else None,
                             [str(p) for p in result.problems], origin, core.dead_letter_reason_label(result))
            for result in results if result.is_bad
        ))

    def count(self, results: list[ItemResult], channel: str) -> None:
        for result in results:
            self.metrics.events.labels(channel=channel, outcome=result.metric_outcome).inc()

    # --- raw Kafka channel --------------------------------------------------------

    async def handle_inbound(self, value: bytes | None, key: bytes | None, headers: dict[str, bytes]) -> str:
        """One message from the inbound topic. Returns the outcome (for tests and logs)."""
        value = value or b""
        origin = "kafka:inbound"
        ministry, reason = await self._signer(value, headers)
        if ministry is None:
            await self.dead_letter(value[:DEAD_LETTER_SAMPLE_BYTES], key, [reason], origin, "unsigned")
            self.metrics.events.labels(channel="kafka", outcome="forbidden").inc()
            return "forbidden"
        try:
            document = loads_strict(value)
        except JsonInputError as error:
            await self.dead_letter(value[:DEAD_LETTER_SAMPLE_BYTES], key, [str(error)], origin, "malformed")
            self.metrics.events.labels(channel="kafka", outcome="rejected").inc()
            return "rejected"
        results = await self.decide([document], ministry, atomic=False)
        while core.to_send(results):
            try:
                await self.forwarder.forward(results, "kafka")
                break
            except KafkaUnavailable as error:  # hold the partition until Kafka is back: nothing is skipped
                log.warning("inbound forward waiting for Kafka: %s", error)
                await asyncio.sleep(1.0)
        await self.dead_letter_results(results, f"{origin}:{ministry}")
        self.count(results, "kafka")
        return results[0].metric_outcome

    async def _signer(self, value: bytes, headers: dict[str, bytes]) -> tuple[str | None, str]:
        key_id_raw, signature_raw = headers.get(KEY_ID_HEADER), headers.get(SIGNATURE_HEADER)
        if not key_id_raw or not signature_raw:
            return None, f"unsigned: headers {KEY_ID_HEADER} and {SIGNATURE_HEADER} are required on the inbound topic"
        try:
            key_id = int(key_id_raw.decode("ascii").strip())
            signature = signature_raw.decode("ascii")
        except (UnicodeDecodeError, ValueError):
            return None, f"{KEY_ID_HEADER} must be a number and {SIGNATURE_HEADER} hex"
        credential = await asyncio.to_thread(self.store.signing_credential, key_id)
        if credential is None or not core.signature_valid(credential.signing_key, value, signature):
            return None, "bad signature: unknown or revoked key id, or the HMAC-SHA256 of the value does not match"
        return credential.ministry, ""

    # --- HTTP channel ---------------------------------------------------------------

    async def handle_post(self, view: View, request: Request) -> Response:
        token = core.parse_bearer(request.headers.get("Authorization"))
        credential = await asyncio.to_thread(self.store.credential_by_hash, core.token_hash(token)) if token else None
        if credential is None:
            return problem_response(view, core.problem(401, "unauthorized",
                                    "send Authorization: Bearer <token>; tokens come from `reformspor tokens create`"),
                                    headers={"WWW-Authenticate": 'Bearer realm="reformspor"'})
        ministry = credential.ministry
        origin = f"http:{ministry}"
        atomic = request.query.get("atomic", "false").strip().lower() in ("1", "true", "yes")

        declared = request.content_length
        if declared is not None and declared > core.MAX_BODY_BYTES:
            error = core.BodyError(413, "payload-too-large", f"body is {declared} bytes; the limit is {core.MAX_BODY_BYTES}")
            return await self._body_error(view, error, b"", origin)
        raw = await request.content.read(core.MAX_BODY_BYTES + 1)
        if len(raw) <= core.MAX_BODY_BYTES:
            while chunk := await request.content.read(core.MAX_BODY_BYTES + 1 - len(raw)):
                raw += chunk
                if len(raw) > core.MAX_BODY_BYTES:
                    break
        try:
            items, is_batch = core.decode_body(raw)
        except core.BodyError as error:
            return await self._body_error(view, error, raw, origin)

        results = await self.decide(items, ministry, atomic)
        dead_letters = asyncio.ensure_future(self.dead_letter_results(results, origin))
        try:
            await self.forwarder.forward(results, "http")
        except KafkaUnavailable as error:
            await dead_letters
            self.metrics.unavailable.inc()
            return problem_response(
                view,
                core.problem(503, "kafka-unavailable",
                             f"Kafka did not acknowledge ({error}); nothing in this request is acknowledged. "
                             f"Retry the same request: event ids make the retry safe."),
                headers={"Retry-After": str(core.RETRY_AFTER_S)})
        await dead_letters
        self.count(results, "http")
        status = core.response_status(results, is_batch)
        body = core.response_body(results, status)
        if not is_batch and status < 400:
            body = {**results[0].to_json(), "summary": body["summary"], "results": body["results"]}
        return view.bytes(dumps_compact(body), content_type=PROBLEM_JSON if status >= 400 else "application/json",
                          status=status)

    async def _body_error(self, view: View, error: core.BodyError, raw: bytes, origin: str) -> Response:
        sample = raw[:DEAD_LETTER_SAMPLE_BYTES]
        reason = error.detail + (f" (first {len(sample)} bytes kept)" if len(raw) > len(sample) else "")
        await self.dead_letter(sample, None, [reason], origin, "too_large" if error.status == 413 else "malformed")
        self.metrics.events.labels(channel="http", outcome="rejected").inc()
        return problem_response(view, core.problem(error.status, error.slug, error.detail))


def problem_response(view: View, document: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return view.bytes(dumps_compact(document), content_type=PROBLEM_JSON, status=document["status"], headers=headers)


def _headers(event: Any) -> dict[str, bytes]:
    raw = getattr(event, "headers", None) or {}
    items = raw.items() if isinstance(raw, dict) else raw
    out = {}
    for name, value in items:
        name = name.decode() if isinstance(name, bytes) else str(name)
        out[name.lower()] = value if isinstance(value, bytes) else str(value).encode()
    return out


def create_app(settings: Settings, web_port: int | None = None) -> faust.App:
    app = make_app("ingest", settings, web_port=web_port)
    metrics = Metrics()
    store = IngestStore(settings.db_url("ingest"))
    ingestor = Ingestor(app, settings, store, metrics)
    app.ingestor = ingestor  # type: ignore[attr-defined]  # handy in tests and the debugger

    @app.service
    class ProducerService(Service):
        async def on_start(self) -> None:
            self.add_future(ingestor.forwarder.start())

        async def on_stop(self) -> None:
            await ingestor.forwarder.stop()

    inbound = raw_topic(app, settings.topics.inbound)

    @app.agent(inbound, concurrency=1)
    async def inbound_agent(stream):
        async for event in stream.events():
            try:
                await ingestor.handle_inbound(event.value, event.key, _headers(event))
            except Exception:  # never stall the partition on a bug: log it and go on
                log.exception("inbound message at offset %s failed", getattr(event.message, "offset", "?"))

    add_standard_routes(app, metrics.registry, ready_check=ingestor.forwarder.kafka_problems)
    track_consumer_lag(app, metrics.registry, "ingest")  # lag on the raw inbound topic

    @app.page("/v1/events")
    class Events(View):
        async def post(self, request: Request) -> Response:
            started = time.monotonic()
            try:
                return await ingestor.handle_post(self, request)
            except Exception:
                log.exception("POST /v1/events failed")
                return problem_response(self, {"type": "about:blank", "title": "Internal error", "status": 500,
                                               "detail": "unexpected error; nothing in this request is acknowledged"})
            finally:
                metrics.request_seconds.labels(route="/v1/events").observe(time.monotonic() - started)

    @app.page("/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(dumps_compact(openapi_document(settings)), content_type="application/json")

    return app


def main(settings: Settings) -> None:
    app = create_app(settings)
    run_worker(app, settings)
