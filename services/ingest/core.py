"""Ingest's pure core: decode a request body, authorise, classify each event, decide the reply.

No I/O here: the HTTP handler, the Kafka agent and the tests all drive these
functions with plain data.

Batch semantics (a deliberate choice): by default a batch is *not* atomic.
Good events are accepted and each bad one is reported by its index, because a
ministry's nightly batch should not be held back by one bad row; the bad rows
are on the dead-letter topic with the reason, ready to be fixed and resent
(same ids, so a resend of the whole batch is harmless). A caller that needs
all-or-nothing sends `?atomic=true`: then nothing is sent unless every event
is valid, authorised and free of conflicts. (Atomic means "validated as a
whole"; if Kafka fails mid-batch the reply is 503 and the caller retries the
whole batch, which idempotency makes safe.)
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any, Iterable

from services.budsjett.catalogue import Catalogue, PostRejection, check_post
from services.budsjett.core import TRANSFER_TYPE
from services.shared.contract import ContractError, Event, FieldProblem, parse_event
from services.shared.jsonio import JsonInputError, loads_strict

MAX_BODY_BYTES = 1_048_576
MAX_BATCH_EVENTS = 500
RETRY_AFTER_S = 5

# Per-event status reported to publishers, and the finer `code` behind it.
ACCEPTED, DUPLICATE, REJECTED, CONFLICT = "accepted", "duplicate", "rejected", "conflict"
CODE_INVALID, CODE_FORBIDDEN, CODE_NOT_SENT = "invalid", "forbidden", "not_sent"
# Dead-letter reason labels of the forbidden kinds (reformspor_dead_letters_total{reason}).
LABEL_WRONG_PUBLISHER, LABEL_INTERNAL_TYPE = "wrong_publisher", "internal_type"

# Event types only a service writes (budsjett's cross-line credit): no ministry may publish them, by any channel.
INTERNAL_TYPES = frozenset({TRANSFER_TYPE})

PROBLEM_BASE = "https://reformspor.example/problems/"
PROBLEM_TYPES: dict[str, tuple[str, str]] = {
    # slug: (English title, Norwegian title)
    "invalid-event": ("Invalid event", "Ugyldig hendelse"),
    "forbidden": ("Not allowed for this ministry", "Ikke tillatt for dette departementet"),
    "conflict": ("Event id already used with other content", "Hendelses-id er brukt med annet innhold"),
    "unauthorized": ("Missing or invalid API token", "Mangler eller ugyldig API-nøkkel"),
    "payload-too-large": ("Request too large", "Forespørselen er for stor"),
    "malformed-json": ("Malformed JSON", "Ugyldig JSON"),
    "unprocessable-body": ("Request body not accepted", "Innholdet kan ikke behandles"),
    "kafka-unavailable": ("Event log unavailable, retry later", "Hendelsesloggen er utilgjengelig, prøv igjen"),
    "batch-failed": ("No event in the batch was accepted", "Ingen hendelser i bunken ble godtatt"),
    "unknown-event": ("No event of yours with this id", "Ingen hendelse fra dere med denne id-en"),
}


class BodyError(Exception):
    """The request body as a whole is unacceptable (size, syntax, shape)."""

    def __init__(self, status: int, slug: str, detail: str):
        self.status = status
        self.slug = slug
        self.detail = detail
        super().__init__(detail)


@dataclass
class ItemResult:
    """What happened to one event of a request (or one Kafka message)."""

    index: int
    raw: Any
    event: Event | None = None
    status: str = ACCEPTED
    code: str = ACCEPTED
    problems: list[FieldProblem] = field(default_factory=list)
    label: str | None = None  # the dead-letter reason label, when finer than the code

    @property
    def event_id(self) -> str | None:
        if self.event is not None:
            return self.event.id
        if isinstance(self.raw, dict) and isinstance(self.raw.get("id"), str):
            return self.raw["id"][:128]
        return None

    @property
    def is_bad(self) -> bool:
        return self.status in (REJECTED, CONFLICT) and self.code != CODE_NOT_SENT

    @property
    def metric_outcome(self) -> str:
        """Label for reformspor_ingest_events_total."""
        return CODE_FORBIDDEN if self.code == CODE_FORBIDDEN else self.status

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "id": self.event_id, "status": self.status, "code": self.code}
        out["reasons"] = [{"path": p.path, "reason": p.reason} for p in self.problems]
        return out


@dataclass(frozen=True)
class KnownEvent:
    """An event id ingest has already had acknowledged by Kafka."""

    event_id: str
    content_hash: str


# --- body ----------------------------------------------------------------------

def decode_body(raw: bytes, max_bytes: int = MAX_BODY_BYTES, max_batch: int = MAX_BATCH_EVENTS) -> tuple[list[Any], bool]:
    """Bytes → (items, is_batch). One JSON object is a batch of one; an array is a batch.

    Text that cannot be written back as UTF-8 (a lone surrogate escape) fails the
    whole body with 422 naming the event's index and field, so no such string
    ever reaches a reply, a log or a dead letter; other bad events are reported
    one by one (see the module docstring).
    """
    if len(raw) > max_bytes:
        raise BodyError(413, "payload-too-large", f"body is {len(raw)} bytes; the limit is {max_bytes}")
    if not raw.strip():
        raise BodyError(400, "malformed-json", "empty body: send one event object or an array of events")
    try:
        document = loads_strict(raw, max_bytes=max_bytes)
    except JsonInputError as error:
        message = str(error)
        syntax = message.startswith(("invalid JSON", "not valid UTF-8"))
        raise BodyError(400 if syntax else 422, "malformed-json" if syntax else "unprocessable-body", message) from None
    if isinstance(document, dict):
        return [document], False
    if isinstance(document, list):
        if not document:
            raise BodyError(422, "unprocessable-body", "empty array: send at least one event")
        if len(document) > max_batch:
            raise BodyError(413, "payload-too-large", f"batch has {len(document)} events; the limit is {max_batch}")
        return document, True
    raise BodyError(422, "unprocessable-body", f"body must be an event object or an array of events, got {type(document).__name__}")


# --- authorisation and validation -----------------------------------------------

def authorization_problems(event: Event, publisher_ministry: str) -> list[FieldProblem]:
    """The authenticated ministry may publish only under its own source.

    parse_event already checks that the data (money, milestones) belongs to
    the source; together the two checks mean a BFD token can only write BFD's
    numbers.
    """
    if event.source_ministry != publisher_ministry:
        return [FieldProblem("source", f"your credentials are for {publisher_ministry}; "
                                       f"you may not publish as {event.source}")]
    return []


def catalogue_rejection(event: Event, catalogue: Catalogue | None) -> PostRejection | None:
    """Does the event name a kap/post that its fiscal year's catalogue refuses (unknown, or another ministry's)?

    The same rule budsjett applies (catalogue.check_post), checked here so the publisher hears it at once.
    A year with no catalogue is not checked, and never against another year's items.
    """
    data = event.data
    kap, post = getattr(data, "kap", None), getattr(data, "post", None)
    if catalogue is None or not event.is_budget or kap is None or post is None:
        return None
    rejection = check_post(catalogue, data.fiscal_year, data.ministry, kap, post)
    return rejection if rejection is not None and rejection.refuses else None


def check_item(index: int, document: Any, publisher_ministry: str, catalogue: Catalogue | None = None) -> ItemResult:
    """Validate one event and check it against the publisher's identity and its year's budget catalogue."""
    result = ItemResult(index=index, raw=document)
    internal = internal_type_problems(document)
    if internal:
        result.status, result.code, result.label, result.problems = REJECTED, CODE_FORBIDDEN, LABEL_INTERNAL_TYPE, internal
        return result
    try:
        event = parse_event(document)
    except ContractError as error:
        # A data-ownership problem is also a permissions problem when the
        # envelope itself is in order and the source is the publisher's.
        source_ok = isinstance(document, dict) and document.get("source") == f"urn:no:dep:{publisher_ministry}"
        ownership = source_ok and all(p.path == "data" and "may only publish its own" in p.reason for p in error.problems)
        result.status, result.code = REJECTED, CODE_FORBIDDEN if ownership else CODE_INVALID
        result.problems = list(error.problems)
        return result
    result.event = event
    forbidden = authorization_problems(event, publisher_ministry)
    if forbidden:
        result.status, result.code, result.label, result.problems = REJECTED, CODE_FORBIDDEN, LABEL_WRONG_PUBLISHER, forbidden
        return result
    refused = catalogue_rejection(event, catalogue)
    if refused is not None:  # 422, not 403: the ministry may publish, but not under that kap/post
        result.status, result.code, result.label = REJECTED, CODE_INVALID, refused.kind.value
        result.problems = [FieldProblem("data.post", refused.reason)]
    return result


def internal_type_problems(document: Any) -> list[FieldProblem]:
    """A service's internal event type is refused from every publisher, whatever else the event says."""
    type_name = document.get("type") if isinstance(document, dict) else None
    if isinstance(type_name, str) and type_name in INTERNAL_TYPES:
        return [FieldProblem("type", f"{type_name} is an internal event type that only reformspor's own services "
                                     f"write; no ministry may publish it")]
    return []


def mark_repeats_within_batch(results: list[ItemResult]) -> None:
    """The same id twice in one batch: second is a duplicate (same content) or a conflict."""
    seen: dict[str, str] = {}
    for result in results:
        if result.event is None or result.status != ACCEPTED:
            continue
        first_hash = seen.get(result.event.id)
        if first_hash is None:
            seen[result.event.id] = result.event.content_hash
        elif first_hash == result.event.content_hash:
            result.status = result.code = DUPLICATE
        else:
            mark_conflict(result)


def mark_conflict(result: ItemResult) -> None:
    result.status = result.code = CONFLICT
    result.problems = [FieldProblem("id", f"event id {result.event_id!r} was already accepted with different content; "
                                          "use a new id for a new fact, or a korrigert event to reverse one")]


def classify_known(result: ItemResult, known: KnownEvent | None) -> None:
    """Compare an accepted-so-far event with what ingest already acknowledged under its id."""
    if result.status != ACCEPTED or result.event is None or known is None:
        return
    if hmac.compare_digest(known.content_hash, result.event.content_hash):
        result.status = result.code = DUPLICATE
    else:
        mark_conflict(result)


def apply_atomic(results: list[ItemResult]) -> bool:
    """All-or-nothing: if any event is bad, none is sent. Returns True if the batch may be sent."""
    if not any(r.is_bad for r in results):
        return True
    for result in results:
        if result.status == ACCEPTED:
            result.status, result.code = REJECTED, CODE_NOT_SENT
            result.problems = [FieldProblem("", "not sent: the batch is atomic and another event in it was rejected")]
    return False


def to_send(results: Iterable[ItemResult]) -> list[ItemResult]:
    return [r for r in results if r.status == ACCEPTED and r.event is not None]


# --- the reply ------------------------------------------------------------------

def response_status(results: list[ItemResult], is_batch: bool) -> int:
    """HTTP status for a request whose events were all decided.

    202 all new events accepted · 200 nothing new (all duplicates) · 207 a batch
    with both accepted and rejected events · 4xx when nothing was accepted:
    403 if every bad event was forbidden, 409 if every bad one was a conflict,
    else 422.
    """
    good = [r for r in results if r.status in (ACCEPTED, DUPLICATE)]
    bad = [r for r in results if r.is_bad]
    if not bad and not any(r.code == CODE_NOT_SENT for r in results):
        return 202 if any(r.status == ACCEPTED for r in results) else 200
    if good and is_batch:
        return 207
    if bad and all(r.code == CODE_FORBIDDEN for r in bad):
        return 403
    if bad and all(r.status == CONFLICT for r in bad):
        return 409
    return 422


def summary(results: list[ItemResult]) -> dict[str, int]:
    counts = {ACCEPTED: 0, DUPLICATE: 0, REJECTED: 0, CONFLICT: 0}
    for result in results:
        counts[result.status] += 1
    return counts


def problem(status: int, slug: str, detail: str, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem document (application/problem+json)."""
    title, title_nb = PROBLEM_TYPES[slug]
    return {"type": PROBLEM_BASE + slug, "title": title, "title_nb": title_nb, "status": status, "detail": detail, **extra}


def response_body(results: list[ItemResult], status: int) -> dict[str, Any]:
    """The reply body: per-event results always; a problem document when nothing was accepted."""
    body: dict[str, Any] = {"results": [r.to_json() for r in results], "summary": summary(results)}
    if status < 400:
        return body
    slug = {403: "forbidden", 409: "conflict"}.get(status, "invalid-event")
    if len(results) > 1:
        slug = slug if status in (403, 409) else "batch-failed"
    bad = [r for r in results if r.is_bad]
    errors = [
        {"index": r.index, "id": r.event_id, "code": r.code, "path": p.path, "reason": p.reason}
        for r in bad for p in r.problems
    ]
    detail = "; ".join(f"[{e['index']}] {e['path'] + ': ' if e['path'] else ''}{e['reason']}" for e in errors[:5])
    if len(errors) > 5:
        detail += f"; … {len(errors) - 5} more"
    return problem(status, slug, detail, errors=errors, **body)


def dead_letter_reason_label(result: ItemResult) -> str:
    return result.label or {CODE_FORBIDDEN: "forbidden", CONFLICT: "conflict"}.get(result.code, "invalid")


# --- one event's outcome, for its publisher (GET /v1/events/{id}) ---------------------------------

APPLIED, PENDING = "applied", "pending"
INGEST_SERVICE = "ingest"
SOURCE_PREFIX = "urn:no:dep:"


@dataclass(frozen=True)
class RejectionFact:
    """A dead letter about one event id: which service refused it, why, and whose event it was."""

    event_id: str
    ministry: str  # "" when the publisher is not known for certain: then no one is shown it
    service: str
    reason: str
    label: str


def rejection_from_dead_letter(value: bytes | None, service: str, reason: str, label: str,
                               publisher: str | None) -> RejectionFact | None:
    """The fact a dead letter states, or None when it names no event id (a malformed body, say).

    The publisher: ingest's own dead letters carry the authenticated one in a header; a downstream
    service's dead letter holds the envelope ingest forwarded, whose source ingest had checked.
    """
    try:
        document = loads_strict(value or b"")
    except JsonInputError:
        return None
    event_id = document.get("id") if isinstance(document, dict) else None
    if not isinstance(event_id, str) or not event_id or len(event_id) > 128:
        return None
    if service == INGEST_SERVICE:
        ministry = publisher or ""
    else:
        source = document.get("source")
        ministry = source.removeprefix(SOURCE_PREFIX) if isinstance(source, str) and source.startswith(SOURCE_PREFIX) else ""
    return RejectionFact(event_id, ministry[:8], service[:16], reason, label[:64])


@dataclass(frozen=True)
class EventStatus:
    event_id: str
    status: str  # applied | pending | rejected
    ministry: str
    decided_by: str | None = None  # the service that applied or rejected it
    reason: str | None = None
    reason_label: str | None = None
    applied: dict[str, Any] | None = None  # where the owning service applied it

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.event_id, "status": self.status, "ministry": self.ministry}
        if self.decided_by:
            body["decided_by"] = self.decided_by
        if self.status == REJECTED:
            body |= {"reason": self.reason, "reason_label": self.reason_label}
        if self.applied is not None:
            body["applied"] = self.applied
        return body


def decide_event_status(event_id: str, caller: str, accepted_by: str | None, rejections: list[RejectionFact],
                        applied: tuple[str, dict[str, Any]] | None) -> EventStatus | None:
    """applied, pending or rejected, for the event's own ministry only (None: not known to this caller, 404).

    accepted_by: the ministry ingest accepted the event from (None: never accepted); applied: (service,
    its answer) when a downstream service applied it. A downstream rejection wins; an ingest rejection
    counts only when the id was never accepted (a later, corrected resend of the same id was).
    """
    owner = accepted_by or next((r.ministry for r in rejections if r.ministry), None)
    if owner is None or owner != caller:
        return None
    downstream = [r for r in rejections if r.service != INGEST_SERVICE and r.ministry == owner]
    at_ingest = [r for r in rejections if r.service == INGEST_SERVICE and r.ministry == owner]
    if downstream:
        first = downstream[0]
        return EventStatus(event_id, REJECTED, owner, first.service, first.reason, first.label)
    if applied is not None:
        return EventStatus(event_id, APPLIED, owner, applied[0], applied=applied[1])
    if accepted_by is not None:
        return EventStatus(event_id, PENDING, owner)
    first = at_ingest[0]
    return EventStatus(event_id, REJECTED, owner, first.service, first.reason, first.label)


# --- credentials ------------------------------------------------------------------

def token_hash(token: str) -> str:
    """Tokens are stored as SHA-256: they are 256-bit random, so no slow hash is needed."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_bearer(header: str | None) -> str | None:
    """The token from an Authorization header, or None. Tokens are printable ASCII
    (rfs_<code>_<urlsafe base64>); anything else, such as a header byte the server
    decoded to a lone surrogate, is no token rather than a failure to hash it."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > 200 or not _is_printable_ascii(value):
        return None
    return value


def _is_printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()
