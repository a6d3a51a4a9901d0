"""The ledger's rules: pure functions on plain, JSON-able data. No I/O.

State lives in a key-value store (a dict in tests, one per line in replay, the
worker's Quix state scoped to the line in the worker) under prefixed keys, all
belonging to the line being processed:

- ``line:<line_id>``  the line's cells, flags and ``last_offset`` (the input
  offset last applied; a line's events share one partition, so offsets grow).
  Each cell keeps its amounts per funding kap/post under ``posts`` ("kap.post" ->
  the same amount fields); the cell's own fields are always the sum of its posts.
- ``id:<event_id>``   {digest (older records: hash), offset, line_id, effect, corrected_by, …}
- ``c:<line_id>:<commitment_id>``  one commitment's outstanding amount and its kap/post

`process(store, offset, message, catalogue, now)` is the exactly-once state
transition. Writes happen in the order id → commitments → corrected original
→ line; the line record is the commit point. Redelivery after a crash between
any two writes gives the same state (see the offset checks in `process`); the
worker's store commits all of an event's writes with its input offset anyway.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import orjson

from services.budsjett.catalogue import Catalogue
from services.budsjett.yearend import (
    CarryRule,
    CellYear,
    Closing,
    ClosingOutcome,
    PostTerms,
    YearStatus,
    booking_refusal,
    close_cell,
    decide_closing,
)
from services.shared.contract import (
    BUDGET_KINDS,
    DATA_MODELS,
    EVENT_ID_RULE,
    IDENTIFIER_RULE,
    KIND_BY_TYPE,
    PHASES,
    SOURCE_PREFIX,
    ContractError,
    Event,
    FieldProblem,
    is_event_id,
    is_identifier,
    parse_event,
    parse_time,
)
from services.shared.jsonio import dumps_compact, loads_strict
from services.shared.ministries import default_registry
from services.shared.money import MAX_ABS_ORE

# What the year-end closing of the year before carried in and let lapse: figures of their own, never bevilget.
CARRY_FIELDS = ("overfort_inn_ore", "bortfalt_ore")
AMOUNT_FIELDS = ("bevilget_ore", "omdisponert_ore", "forpliktet_ore", "utbetalt_ore") + CARRY_FIELDS
TOTAL_FIELDS = AMOUNT_FIELDS + ("disponibelt_ore",)
# Internal kind: the credit side of an omdisponert between lines, sent by the
# debited line's worker to the target line (never published by ministries).
TRANSFER_KIND = "overfoert"
TRANSFER_TYPE = "no.reformspor.budsjett.intern.overfoert.v1"
FLAGS = ("overcommitted", "overspent")

NEVER = -1
# The contract's FiscalYear range.
MIN_FISCAL_YEAR, MAX_FISCAL_YEAR = 2000, 2100
FISCAL_YEAR_RULE = f"a fiscal year, an integer {MIN_FISCAL_YEAR}..{MAX_FISCAL_YEAR}"


class Store(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...


class CompactStore:
    """A Store over any mapping that keeps every record except lines as its JSON text.

    `id:` and `c:` records are written once per event and read back rarely (a duplicate,
    a correction, a redelivery, a payment against a commitment), yet as dicts they cost
    ~0.9 KB per event in memory and ~1.9 KB when rebuilt from the JSON changelog after a
    restart; as text, about a quarter of that. Line records, read on every event, stay dicts.
    Values stored as dicts are read as they are. Replay keeps its in-memory stores this way.
    """

    def __init__(self, mapping: Any):
        self.mapping = mapping

    def get(self, key: str, default: Any = None) -> Any:
        value = self.mapping.get(key)
        if value is None:
            return default
        return orjson.loads(value) if isinstance(value, str) else value

    def __setitem__(self, key: str, value: Any) -> None:
        self.mapping[key] = value if key.startswith("line:") else orjson.dumps(value).decode("utf-8")


# --- messages -------------------------------------------------------------------

@dataclass(frozen=True)
class Transfer:
    """The credit side of a cross-line omdisponert (or its reversal when amount < 0)."""

    id: str
    line_id: str
    ministry: str
    phase: str
    fiscal_year: int  # the omdisponert's year: money moves within one budget year
    amount_ore: int
    origin_id: str
    origin_line_id: str
    source_ministry: str
    time: datetime
    kind: str = TRANSFER_KIND
    # (post key, amount_ore) per funding post the debit took the money from; they add up to amount_ore
    posts: tuple[tuple[str, int], ...] = ()

    @property
    def key(self) -> str:
        return self.line_id

    def to_wire(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": f"{SOURCE_PREFIX}{self.source_ministry}",
            "type": TRANSFER_TYPE,
            "time": self.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "data": {
                "line_id": self.line_id,
                "ministry": self.ministry,
                "phase": self.phase,
                "fiscal_year": self.fiscal_year,
                "amount_ore": self.amount_ore,
                "origin_id": self.origin_id,
                "origin_line_id": self.origin_line_id,
                **({"by_post": dict(self.posts)} if self.posts else {}),
            },
        }

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(dumps_compact(self.to_wire())).hexdigest()


Message = Event | Transfer


def _is_ministry(value: object) -> bool:
    return isinstance(value, str) and value in default_registry()


def _parse_transfer(document: dict) -> Transfer:
    # Written by budsjett itself, but read from a topic others can write: checked like any input.
    problems = []
    data = document.get("data")
    if not isinstance(data, dict):
        raise ContractError([FieldProblem("data", "required: a JSON object")])
    for name in ("line_id", "origin_line_id"):
        if not is_identifier(data.get(name)):
            problems.append(FieldProblem(f"data.{name}", f"required: {IDENTIFIER_RULE}"))
    if not is_event_id(data.get("origin_id")):
        problems.append(FieldProblem("data.origin_id", f"required: {EVENT_ID_RULE}"))
    amount = data.get("amount_ore")
    if not isinstance(amount, int) or isinstance(amount, bool) or abs(amount) > MAX_ABS_ORE:
        problems.append(FieldProblem("data.amount_ore", "required integer øre"))
    if data.get("phase") not in PHASES:
        problems.append(FieldProblem("data.phase", "unknown phase"))
    if not is_fiscal_year(data.get("fiscal_year")):
        problems.append(FieldProblem("data.fiscal_year", f"required: {FISCAL_YEAR_RULE}"))
    if not _is_ministry(data.get("ministry")):
        problems.append(FieldProblem("data.ministry", "unknown ministry"))
    source = document.get("source")
    if not (isinstance(source, str) and source.startswith(SOURCE_PREFIX)
            and _is_ministry(source.removeprefix(SOURCE_PREFIX))):
        problems.append(FieldProblem("source", f"required: {SOURCE_PREFIX}<ministry code>"))
    posts = _parse_transfer_posts(data.get("by_post"), amount, problems)
    time = parse_time(document.get("time"), problems)
    event_id = document.get("id")
    if not is_event_id(event_id) or not event_id.endswith("#to"):
        problems.append(FieldProblem("id", f"an internal transfer id ends with #to ({EVENT_ID_RULE})"))
        event_id = None
    if problems or time is None:
        raise ContractError(problems, event_id=event_id)
    return Transfer(id=event_id, line_id=data["line_id"], ministry=data["ministry"], phase=data["phase"],
                    fiscal_year=data["fiscal_year"], amount_ore=amount, origin_id=data["origin_id"], origin_line_id=data["origin_line_id"],
                    source_ministry=source.removeprefix(SOURCE_PREFIX), time=time, posts=posts)


def is_post_key(value: object) -> bool:
    if not isinstance(value, str) or not value.isascii() or value.count(".") != 1:
        return False
    kap, post = value.split(".")
    return kap.isdigit() and post.isdigit() and len(kap) <= 4 and len(post) <= 2


def _parse_transfer_posts(by_post: object, amount: object, problems: list[FieldProblem]) -> tuple[tuple[str, int], ...]:
    """The optional per-post split of a transfer: "kap.post" -> integer øre, adding up to amount_ore."""
    if by_post is None:
        return ()
    if (not isinstance(by_post, dict) or not all(is_post_key(k) for k in by_post)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in by_post.values())
            or sum(by_post.values()) != amount):
        problems.append(FieldProblem("data.by_post", '"kap.post" -> integer øre, adding up to amount_ore'))
        return ()
    return tuple(sorted(by_post.items(), key=lambda item: split_post_key(item[0])))


def parse_message(raw: bytes | str) -> Message:
    """Strict JSON, then the contract (or the internal transfer shape). Raises ContractError, nothing else."""
    document = loads_strict(raw)  # its JsonInputError is a ContractError
    if isinstance(document, dict) and document.get("type") == TRANSFER_TYPE:
        return _parse_transfer(document)
    event = parse_event(document)
    if not event.is_budget:
        raise ContractError([FieldProblem("type", f"{event.type} is not a budget event")], event_id=event.id)
    return event


def parse_trusted(raw: bytes) -> Message:
    """A budget-topic record without validating its envelope again: only ingest (after the full
    contract check, ownership included) and budsjett itself may write that topic (the broker's
    ACLs), so the envelope is read as it is and only `data` goes through its model (which also
    turns amounts into øre). Anything unexpected falls back to `parse_message`, whose problems
    dead-letter the record: never an exception other than ContractError.
    """
    try:
        document = orjson.loads(raw)
        kind = KIND_BY_TYPE.get(document["type"])
        source = document["source"]
        time = parse_time(document["time"], [])
        event_id = document["id"]
        # The id keys the state and the read model: a malformed one must never get that far.
        if kind in BUDGET_KINDS and time is not None and source.startswith(SOURCE_PREFIX) and is_event_id(event_id):
            return Event(id=event_id, kind=kind, source=source, source_ministry=source.removeprefix(SOURCE_PREFIX),
                         time=time, data=DATA_MODELS[kind].model_validate(document["data"]))
    except Exception:  # noqa: BLE001 - not the usual shape: the strict parse says exactly what is wrong
        pass
    return parse_message(raw)


def content_digest(message: Message) -> str:
    """What the id record keeps to tell a duplicate (same id, same content) from a conflict: a BLAKE2b
    digest of the parsed content, envelope and data as their models hold them (amounts in øre), so the
    same event written differently is still a duplicate. About a sixth of the cost of `content_hash`
    (canonical wire JSON + SHA-256), which id records written before this kept under "hash"."""
    if isinstance(message, Transfer):  # rare: budsjett's own credits
        return message.content_hash
    digest = hashlib.blake2b(digest_size=16)
    digest.update(orjson.dumps((message.id, message.kind, message.source, message.time.isoformat())))
    digest.update(message.data.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8"))
    return digest.hexdigest()


def same_content(record: dict[str, Any], message: Message) -> bool:
    """Whether an id record was written for this very content (by its digest, or an older record's hash)."""
    if "digest" in record:
        return record["digest"] == content_digest(message)
    return record["hash"] == message.content_hash


def rfc3339(moment: datetime) -> str:
    # isoformat, not strftime: the same text at a quarter of the cost (two calls per applied event)
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# --- records --------------------------------------------------------------------

def new_line(line_id: str) -> dict[str, Any]:
    # closed_years: fiscal year (text) -> the closing that closed it (event_id, closed_by, closed_at)
    return {"line_id": line_id, "last_offset": NEVER, "cells": {}, "last_event_time": None, "updated_at": None,
            "events": 0, "closed_years": {}}


def copy_line(line: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to change (the store's own value must stay as written until we write it back).

    Cells are copied on write by `apply_effect_to_line` (the only place that
    changes them), so a line with many cells costs one dict copy per event,
    not one per cell.
    """
    return {**line, "cells": dict(line["cells"])}


def new_cell() -> dict[str, Any]:
    return {**{name: 0 for name in AMOUNT_FIELDS}, "overcommitted": False, "overspent": False,
            "funding_posts": [], "overslagsbevilgning": False, "kan_overfores": False, "carry_rule": None,
            "posts": {}}


# Money booked without a kap/post to a cell no single post funds (or before any post funded it). At year end
# no rule lets it carry (§ 3, the main rule); kap 0 post 0 do not exist in Gul bok.
NO_POST = "0.0"
# A cell's carry_rule when its posts were closed by different rules (each post names its own).
PER_POST_CARRY_RULE = "per_post"


def new_post() -> dict[str, Any]:
    """One funding kap/post's share of a cell: the cell's amount fields, and the carry terms of the post."""
    return {**{name: 0 for name in AMOUNT_FIELDS}, "overslagsbevilgning": False, "kan_overfores": False,
            "carry_rule": None}


def post_key(kap: int, post: int) -> str:
    return f"{kap}.{post}"


def split_post_key(key: str) -> tuple[int, int]:
    """(kap, post) of a post key; (0, 0) for NO_POST."""
    kap, post = key.split(".")
    return int(kap), int(post)


def cell_posts(cell: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A cell's per-post amounts. A cell stored before cells kept posts reads as one post: its single funding
    post, else NO_POST (it then lapses at year end, as such a cell did before)."""
    posts = cell.get("posts")
    if posts is not None:
        return posts
    key = cell["funding_posts"][0] if len(cell["funding_posts"]) == 1 else NO_POST
    return {key: {**{name: cell[name] for name in AMOUNT_FIELDS}, "overslagsbevilgning": cell["overslagsbevilgning"],
                  "kan_overfores": cell["kan_overfores"], "carry_rule": cell["carry_rule"]}}


def cell_key(ministry: str, phase: str, fiscal_year: int) -> str:
    return f"{ministry}|{phase}|{fiscal_year}"


def split_cell_key(key: str) -> tuple[str, str, int]:
    """(ministry, phase, fiscal_year) of a cell key."""
    ministry, phase, fiscal_year = key.split("|")
    return ministry, phase, int(fiscal_year)


def effect_fiscal_year(effect: list[list[Any]]) -> int:
    """The fiscal year of a booking's effect (a booking books to one year and has a cell entry)."""
    return next(entry[3] for entry in effect if entry[0] == "cell")


def event_fiscal_year(message: "Message", effect: list[list[Any]]) -> int:
    """The year an applied message is about: its own fiscal_year, or (a korrigert) the original's."""
    if isinstance(message, Transfer):
        return message.fiscal_year
    year = getattr(message.data, "fiscal_year", None)
    return effect_fiscal_year(effect) if year is None else year


def is_fiscal_year(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and MIN_FISCAL_YEAR <= value <= MAX_FISCAL_YEAR


def parse_fiscal_year(text: str) -> int | None:
    """A fiscal year typed by a person (a query value, a CLI argument): four ASCII digits in range, else None."""
    if len(text) != 4 or not text.isascii() or not text.isdigit():
        return None
    year = int(text)
    return year if is_fiscal_year(year) else None


def available_ore(cell: dict[str, Any]) -> int:
    """The year's money: bevilget + omdisponert + what the previous year's closing carried in."""
    return cell["bevilget_ore"] + cell["omdisponert_ore"] + cell["overfort_inn_ore"]


def disponibelt(cell: dict[str, Any]) -> int:
    """available − outstanding commitments − paid (payments against a commitment drew it down)."""
    return available_ore(cell) - cell["forpliktet_ore"] - cell["utbetalt_ore"]


def cell_flags(cell: dict[str, Any]) -> dict[str, bool]:
    available = available_ore(cell)
    return {
        "overcommitted": cell["forpliktet_ore"] + cell["utbetalt_ore"] > available,
        # An overslagsbevilgning is an estimate that may legally be exceeded.
        "overspent": cell["utbetalt_ore"] > available and not cell["overslagsbevilgning"],
    }


def commitment_key(line_id: str, commitment_id: str) -> str:
    return f"c:{line_id}:{commitment_id}"


# --- the outcome of processing one message -------------------------------------------

@dataclass
class Outcome:
    status: str  # applied | duplicate | conflict | rejected | redelivered
    kind: str
    line_id: str
    event_id: str
    reasons: list[str] = field(default_factory=list)
    sends: list[Transfer] = field(default_factory=list)  # derived transfers to publish
    flags: list[dict[str, Any]] = field(default_factory=list)  # raised/cleared notifications
    effect: list[list[Any]] = field(default_factory=list)
    touched: set[tuple[str, str, int]] = field(default_factory=set)  # (ministry, phase, fiscal_year)
    line: dict[str, Any] | None = None  # the line record after the message


class Rejected(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- computing an event's effect (pure, from a snapshot of the state) ---------------

def _ministry_of(message: Message) -> str:
    return message.source_ministry


def _check_post(catalogue: Catalogue | None, fiscal_year: int, kap: int | None, post: int | None,
                ministry: str) -> None:
    if catalogue is None or not catalogue.loaded or kap is None or post is None:
        return
    problems = catalogue.problems(fiscal_year, kap, post, ministry)
    if problems:
        raise Rejected(problems[0])


def _check_booking(catalogue: Catalogue | None, cell: dict[str, Any], fiscal_year: int, kap: int | None,
                   post: int | None, ministry: str, phase: str) -> None:
    """Spending booked under a post must be funded by it or by a post pooled with it."""
    _check_post(catalogue, fiscal_year, kap, post, ministry)
    if catalogue is None or not catalogue.loaded or kap is None or post is None or not cell["funding_posts"]:
        return
    booked = (kap, post)
    funding = [tuple(int(x) for x in p.split(".")) for p in cell["funding_posts"]]
    if not any(catalogue.pooled(fiscal_year, booked, source) for source in funding):
        names = ", ".join(f"kap {k} post {p}" for k, p in funding)
        raise Rejected(f"kap {kap} post {post} does not fund {ministry}/{phase} on this line (funded by {names}, "
                       f"and the catalogue does not let them be used under it)")


def compute_effect(store: Store, line: dict[str, Any], message: Message, offset: int,
                   catalogue: Catalogue | None) -> tuple[list[list[Any]], dict[str, Any]]:
    """The deltas an event applies, plus extra facts (funding post, corrected id). Raises Rejected.

    Effect entries: ["cell", ministry, phase, fiscal_year, field, delta_ore],
    ["post", ministry, phase, fiscal_year, post_key, field, delta_ore] (the same deltas per funding kap/post:
    for each cell and field they add up to its "cell" entries), ["commit", commitment_id, ministry, phase,
    fiscal_year, post_key, delta_ore], ["transfer", line_id, ministry, phase, fiscal_year, delta_ore] with its
    ["transfer_post", line_id, ministry, phase, fiscal_year, post_key, delta_ore]. Every entry names its fiscal
    year and ends with its delta, so a korrigert (which negates the original's entries) reverses in the year,
    and on the posts, of the original.
    """
    kind = message.kind
    line_id = line["line_id"]
    extra: dict[str, Any] = {}
    if kind == TRANSFER_KIND:
        # The other half of an omdisponert already applied on its line: applied even to a closed year, since
        # refusing it would lose the money the debit took (both sides or neither).
        return _transfer_effect(line, message), extra
    data = message.data
    if kind == "arsavslutning":
        return _closing_effect(line, message, catalogue)
    _refuse_closed_year(store, line, message)
    if kind == "bevilget":
        _check_post(catalogue, data.fiscal_year, data.kap, data.post, data.ministry)
        funding = extra["funding_post"] = post_key(data.kap, data.post)
        if catalogue is not None and catalogue.loaded:
            item = catalogue.get(data.fiscal_year, data.kap, data.post)
            if item is not None:
                extra["overslagsbevilgning"] = item.overslagsbevilgning
                extra["kan_overfores"] = item.kan_overfores
        return _booking(data.ministry, data.phase, data.fiscal_year, funding, "bevilget_ore", data.amount_ore), extra
    if kind == "omdisponert":
        return _reallocation_effect(data, line), extra
    if kind in ("forpliktet", "forpliktelse_frigitt", "utbetalt"):
        year = data.fiscal_year
        cell = line["cells"].get(cell_key(data.ministry, data.phase, year)) or new_cell()
        commitment = None
        if data.commitment_id is not None:
            commitment = load_commitment(store, line_id, data.commitment_id, offset)
            owner = (data.ministry, data.phase, year)
            if commitment is not None and (commitment["ministry"], commitment["phase"], commitment["fiscal_year"]) != owner:
                # A commitment is drawn in its own year: a later year's payment is met by that year's money.
                raise Rejected(f"commitment {data.commitment_id} belongs to {commitment['ministry']}/"
                               f"{commitment['phase']}/{commitment['fiscal_year']}, not "
                               f"{data.ministry}/{data.phase}/{year}")
        cell_name = f"{data.ministry}/{data.phase}/{year} on line {line_id}"
        if kind == "forpliktet":
            _check_booking(catalogue, cell, year, data.kap, data.post, data.ministry, data.phase)
            post = _spending_post(catalogue, cell, year, data.kap, data.post, cell_name)
            return [["commit", data.commitment_id, data.ministry, data.phase, year, post, data.amount_ore],
                    *_booking(data.ministry, data.phase, year, post, "forpliktet_ore", data.amount_ore)], extra
        if kind == "forpliktelse_frigitt":
            if commitment is None:
                raise Rejected(f"commitment {data.commitment_id} is unknown on line {line_id}")
            if data.amount_ore > commitment["outstanding_ore"]:
                raise Rejected(f"releases {data.amount_ore} øre of commitment {data.commitment_id}, "
                               f"but only {commitment['outstanding_ore']} øre is outstanding")
            post = _commitment_post(commitment, cell)
            return [["commit", data.commitment_id, data.ministry, data.phase, year, post, -data.amount_ore],
                    *_booking(data.ministry, data.phase, year, post, "forpliktet_ore", -data.amount_ore)], extra
        # utbetalt
        _check_booking(catalogue, cell, year, data.kap, data.post, data.ministry, data.phase)
        if data.commitment_id is not None and commitment is None:
            raise Rejected(f"payment against commitment {data.commitment_id}, which is unknown on line {line_id}")
        if data.kap is None and commitment is not None:
            post = _commitment_post(commitment, cell)  # paid under the post the commitment was made on
        else:
            post = _spending_post(catalogue, cell, year, data.kap, data.post, cell_name)
        effect = _booking(data.ministry, data.phase, year, post, "utbetalt_ore", data.amount_ore)
        if commitment is not None:
            drawn = min(max(data.amount_ore, 0), max(commitment["outstanding_ore"], 0))
            if drawn:
                drawn_post = _commitment_post(commitment, cell)
                effect += [["commit", data.commitment_id, data.ministry, data.phase, year, drawn_post, -drawn],
                           *_booking(data.ministry, data.phase, year, drawn_post, "forpliktet_ore", -drawn)]
        return effect, extra
    if kind == "korrigert":
        original = store.get(f"id:{data.corrects_id}")
        if original is None:
            raise Rejected(f"corrects_id {data.corrects_id} is unknown: no such event was applied")
        if original["line_id"] != line_id:
            raise Rejected(f"corrects_id {data.corrects_id} was applied to line {original['line_id']}, not {line_id}")
        if original["kind"] in ("korrigert", TRANSFER_KIND, "arsavslutning"):
            raise Rejected(f"corrects_id {data.corrects_id} is a {original['kind']} event, which cannot be corrected")
        if original["source_ministry"] != message.source_ministry:
            raise Rejected(f"event {data.corrects_id} was published by {original['source_ministry']}; "
                           f"only that ministry may correct it")
        if original.get("corrected_by") not in (None, message.id):
            raise Rejected(f"event {data.corrects_id} was already corrected by {original['corrected_by']}")
        extra["corrects_id"] = data.corrects_id
        reversed_effect = [[entry[0], *entry[1:-1], -entry[-1]] for entry in original["effect"]]
        return reversed_effect + _legacy_post_entries(line, reversed_effect), extra
    raise Rejected(f"unsupported kind {kind}")


def _booking(ministry: str, phase: str, fiscal_year: int, post: str, name: str, delta_ore: int) -> list[list[Any]]:
    """One amount booked to a cell and to the kap/post inside it that the money belongs to."""
    return [["cell", ministry, phase, fiscal_year, name, delta_ore],
            ["post", ministry, phase, fiscal_year, post, name, delta_ore]]


def _unnamed_post(cell: dict[str, Any]) -> str | None:
    """The post of money booked without a kap/post: the cell's one funding post, NO_POST if none funds it,
    None when several do (the booking is ambiguous)."""
    funding = cell["funding_posts"]
    if len(funding) > 1:
        return None
    return funding[0] if funding else NO_POST


def _spending_post(catalogue: Catalogue | None, cell: dict[str, Any], fiscal_year: int, kap: int | None,
                   post: int | None, cell_name: str) -> str:
    """The funding post a commitment or payment draws on.

    Named kap/post: that post, or the funding post the catalogue pools it with ("kan nyttes under"), since the
    money spent is that post's. Unnamed: the cell's one funding post. A cell funded by several posts needs the
    kap/post named, because each post is closed by its own rule at year end (Bevilgningsreglementet § 5, R-110).
    """
    if kap is not None and post is not None:
        booked = post_key(kap, post)
        if booked in cell["funding_posts"] or catalogue is None or not catalogue.loaded:
            return booked
        pooled = [p for p in cell["funding_posts"] if catalogue.pooled(fiscal_year, (kap, post), split_post_key(p))]
        return pooled[0] if pooled else booked
    unnamed = _unnamed_post(cell)
    if unnamed is None:
        names = ", ".join(f"kap {k} post {p}" for k, p in map(split_post_key, cell["funding_posts"]))
        raise Rejected(f"{cell_name} is funded by {names}: name the kap/post (data.kap, data.post) this is booked "
                       f"to, since each post carries over or lapses by its own rule at year end")
    return unnamed


def _commitment_post(commitment: dict[str, Any], cell: dict[str, Any]) -> str:
    """The post a commitment was made on (a commitment stored before posts were kept: the cell's unnamed post)."""
    return commitment.get("post") or _unnamed_post(cell) or NO_POST


def _legacy_post_entries(line: dict[str, Any], effect: list[list[Any]]) -> list[list[Any]]:
    """Post entries for the cell entries of an effect recorded before effects named posts (a korrigert of such
    an event): on the post the cell's amounts were read into (`cell_posts`)."""
    if any(entry[0] == "post" for entry in effect):
        return []
    entries = []
    for entry in effect:
        if entry[0] == "cell":
            _, ministry, phase, year, name, delta = entry
            cell = line["cells"].get(cell_key(ministry, phase, year)) or new_cell()
            key = next(iter(cell_posts(cell)), NO_POST)
            entries.append(["post", ministry, phase, year, key, name, delta])
    return entries


def _draw_from_posts(cell: dict[str, Any] | None, amount_ore: int) -> list[tuple[str, int]]:
    """Which posts an omdisponert takes its money from, as (post, amount): the contract names no post, so it
    takes each post's disponibelt in kap/post order, and any rest from the first post. The money keeps its post
    where it goes, so the year-end rule that governs it stays the one of the post Stortinget granted it under."""
    posts = cell_posts(cell) if cell is not None else {}
    if not posts:
        return [(NO_POST, amount_ore)]
    parts: dict[str, int] = {}
    remaining = amount_ore
    for key in sorted(posts, key=split_post_key):
        take = min(remaining, max(0, disponibelt(posts[key])))
        if take:
            parts[key] = take
            remaining -= take
    if remaining:
        first = min(posts, key=split_post_key)
        parts[first] = parts.get(first, 0) + remaining
    return sorted(parts.items(), key=lambda part: split_post_key(part[0]))


def _reallocation_effect(data: Any, line: dict[str, Any]) -> list[list[Any]]:
    """An omdisponert's two sides, both in the event's fiscal year (the contract refuses sides in other years),
    post by post (`_draw_from_posts`)."""
    year, amount, line_id = data.fiscal_year, data.amount_ore, line["line_id"]
    parts = _draw_from_posts(line["cells"].get(cell_key(data.from_.ministry, data.from_.phase, year)), amount)
    source, target = (data.from_.ministry, data.from_.phase, year), (data.to.ministry, data.to.phase, year)
    effect = [["cell", *source, "omdisponert_ore", -amount]]
    effect += [["post", *source, post, "omdisponert_ore", -part] for post, part in parts]
    if data.to_line_id == line_id:
        effect.append(["cell", *target, "omdisponert_ore", amount])
        effect += [["post", *target, post, "omdisponert_ore", part] for post, part in parts]
    else:
        effect.append(["transfer", data.to_line_id, *target, amount])
        effect += [["transfer_post", data.to_line_id, *target, post, part] for post, part in parts]
    return effect


def _transfer_effect(line: dict[str, Any], message: Transfer) -> list[list[Any]]:
    """The credit side of a cross-line omdisponert, on the posts the debit took it from (a transfer sent
    before transfers named posts: the target cell's unnamed post)."""
    target = (message.ministry, message.phase, message.fiscal_year)
    parts = message.posts
    if not parts:
        cell = line["cells"].get(cell_key(*target)) or new_cell()
        parts = ((_unnamed_post(cell) or NO_POST, message.amount_ore),)
    return [["cell", *target, "omdisponert_ore", message.amount_ore],
            *(["post", *target, post, "omdisponert_ore", part] for post, part in parts)]


def _closing_of(line: dict[str, Any], fiscal_year: int) -> Closing | None:
    stored = line.get("closed_years", {}).get(str(fiscal_year))
    if stored is None:
        return None
    return Closing(event_id=stored["event_id"], line_id=line["line_id"], fiscal_year=fiscal_year,
                   closed_by=stored["closed_by"], closed_at=datetime.fromisoformat(stored["closed_at"].replace("Z", "+00:00")))


def _refuse_closed_year(store: Store, line: dict[str, Any], message: Event) -> None:
    """After a year's closing, nothing is booked to it: not a new event, not a correction of an old one."""
    year = getattr(message.data, "fiscal_year", None)
    if message.kind == "korrigert":
        original = store.get(f"id:{message.data.corrects_id}")
        year = effect_fiscal_year(original["effect"]) if original and original["kind"] != "arsavslutning" else None
    if year is None:
        return
    refusal = booking_refusal(YearStatus(line["line_id"], year, _closing_of(line, year)))
    if refusal is not None:
        raise Rejected(refusal.reason)


def _funders(line: dict[str, Any], fiscal_year: int) -> frozenset[str]:
    """The ministries that granted money to the line in a year."""
    return frozenset(split_cell_key(key)[0] for key, cell in line["cells"].items()
                     if split_cell_key(key)[2] == fiscal_year and (cell["bevilget_ore"] or cell["funding_posts"]))


def _post_terms(catalogue: Catalogue | None, fiscal_year: int, post: str, amounts: dict[str, Any]) -> PostTerms:
    """The carry-over terms of one funding post: the catalogue's stikkord, else the flags its bevilget brought."""
    if post == NO_POST:
        return PostTerms(post=0)  # money under no post: no rule lets it carry, the main rule (§ 3) applies
    kap, number = split_post_key(post)
    item = catalogue.get(fiscal_year, kap, number) if catalogue is not None and catalogue.loaded else None
    if item is not None:
        return PostTerms.of(item)
    flags = (("kan overføres", amounts["kan_overfores"]), ("overslagsbevilgning", amounts["overslagsbevilgning"]))
    return PostTerms(post=number, stikkord=", ".join(word for word, on in flags if on))


def _post_year(amounts: dict[str, Any], previous: dict[str, Any] | None) -> CellYear:
    """One post's figures in a cell for the year being closed, with the same post's appropriation the year before."""
    return CellYear(bevilget_ore=amounts["bevilget_ore"], omdisponert_ore=amounts["omdisponert_ore"],
                    forpliktet_ore=amounts["forpliktet_ore"], utbetalt_ore=amounts["utbetalt_ore"],
                    previous_year_appropriation_ore=0 if previous is None
                    else previous["bevilget_ore"] + previous["omdisponert_ore"],
                    carried_in_ore=amounts["overfort_inn_ore"])


def _closing_effect(line: dict[str, Any], message: Event,
                    catalogue: Catalogue | None) -> tuple[list[list[Any]], dict[str, Any]]:
    """An årsavslutning: each funding post of each of the year's cells carries or lapses into the next year by
    its own rule (yearend.close_cell: Bevilgningsreglementet § 5, R-110: «kan overføres» carries up to this
    year's and last year's appropriation of that post, post 01 without it up to 5 % of its year's appropriation,
    an overslagsbevilgning and other posts lapse). Refused unless FIN or the year's sole funder closes
    (decide_closing)."""
    year, line_id = message.data.fiscal_year, line["line_id"]
    request = Closing(event_id=message.id, line_id=line_id, fiscal_year=year, closed_by=message.source_ministry,
                      closed_at=message.time)
    decision = decide_closing(YearStatus(line_id, year, _closing_of(line, year)), request, _funders(line, year))
    if decision.outcome is ClosingOutcome.REFUSED:
        raise Rejected(decision.reason)
    if decision.outcome is ClosingOutcome.ALREADY_CLOSED:
        return [], {}
    effect: list[list[Any]] = []
    rules: dict[str, str] = {}
    post_rules: dict[tuple[str, str], str] = {}
    for key, cell in sorted(line["cells"].items()):
        ministry, phase, cell_year = split_cell_key(key)
        if cell_year != year:
            continue
        next_key, target = cell_key(ministry, phase, year + 1), (ministry, phase, year + 1)
        previous = line["cells"].get(cell_key(ministry, phase, year - 1))
        previous_posts = cell_posts(previous) if previous is not None else {}
        carried = lapsed = 0
        for post, amounts in sorted(cell_posts(cell).items()):
            carry = close_cell(_post_year(amounts, previous_posts.get(post)), _post_terms(catalogue, year, post, amounts))
            effect += [["post", *target, post, "overfort_inn_ore", carry.carried_ore],
                       ["post", *target, post, "bortfalt_ore", carry.lapsed_ore]]
            post_rules[(next_key, post)] = carry.rule.value
            carried, lapsed = carried + carry.carried_ore, lapsed + carry.lapsed_ore
        effect += [["cell", *target, "overfort_inn_ore", carried], ["cell", *target, "bortfalt_ore", lapsed]]
        cell_rules = {rule for (cell_name, _), rule in post_rules.items() if cell_name == next_key}
        rules[next_key] = (cell_rules.pop() if len(cell_rules) == 1 else PER_POST_CARRY_RULE) if cell_rules \
            else CarryRule.BORTFALLER.value
    closing = {"event_id": message.id, "closed_by": message.source_ministry, "closed_at": rfc3339(message.time)}
    return effect, {"closing": (year, closing), "carry_rules": rules, "post_carry_rules": post_rules}


def load_commitment(store: Store, line_id: str, commitment_id: str, offset: int) -> dict[str, Any] | None:
    """A commitment as it stood before the event at `offset` (undoing that event's own write if present)."""
    record = store.get(commitment_key(line_id, commitment_id))
    if record is None:
        return None
    record = dict(record)
    if record.get("offset") == offset:
        if record.get("before_ore") is None:
            return None  # created by this very event: it did not exist before
        record["outstanding_ore"] = record["before_ore"]
    return record


def _writable_cell(cells: dict[str, Any], ministry: str, phase: str, year: int,
                   touched: set[tuple[str, str, int]]) -> dict[str, Any]:
    """The cell to change, copied on its first write: the line's cells may still be shared with the stored record."""
    key = cell_key(ministry, phase, year)
    if (ministry, phase, year) not in touched:
        cell = cells.get(key)
        cells[key] = new_cell() if cell is None else {
            **cell, "funding_posts": list(cell["funding_posts"]),
            "posts": {post: dict(amounts) for post, amounts in cell_posts(cell).items()}}
        touched.add((ministry, phase, year))
    return cells[key]


def apply_effect_to_line(line: dict[str, Any], effect: list[list[Any]],
                         extra: dict[str, Any]) -> set[tuple[str, str, int]]:
    """Apply cell and post deltas to a (copied) line record; returns the cells touched, as (ministry, phase, fiscal_year)."""
    touched: set[tuple[str, str, int]] = set()
    cells = line["cells"]
    for entry in effect:
        if entry[0] == "cell":
            _, ministry, phase, year, name, delta = entry
            _writable_cell(cells, ministry, phase, year, touched)[name] += delta
        elif entry[0] == "post":
            _, ministry, phase, year, post, name, delta = entry
            posts = _writable_cell(cells, ministry, phase, year, touched)["posts"]
            amounts = posts.get(post)
            if amounts is None:  # not setdefault: building a post per delta cost ~3 % of the worker
                amounts = posts[post] = new_post()
            amounts[name] += delta
    post = extra.get("funding_post")
    if post:
        (touched_cell,) = touched
        cell = line["cells"][cell_key(*touched_cell)]
        if post not in cell["funding_posts"]:
            cell["funding_posts"] = sorted(cell["funding_posts"] + [post])
        terms = cell["posts"][post]
        for name in ("overslagsbevilgning", "kan_overfores"):
            terms[name] = terms[name] or bool(extra.get(name))
            cell[name] = cell[name] or terms[name]
    return touched


def _transfers_for(effect: list[list[Any]], message: Message, line_id: str) -> list[Transfer]:
    return [
        Transfer(id=f"{message.id}#to", line_id=entry[1], ministry=entry[2], phase=entry[3], fiscal_year=entry[4],
                 amount_ore=entry[5],
                 origin_id=message.id, origin_line_id=line_id, source_ministry=message.source_ministry,
                 time=message.time,
                 posts=tuple((p[5], p[6]) for p in effect if p[0] == "transfer_post" and p[1:5] == entry[1:5]))
        for entry in effect if entry[0] == "transfer"
    ]


# --- the exactly-once transition ------------------------------------------------------

def process(store: Store, offset: int, message: Message, catalogue: Catalogue | None = None,
            now: datetime | None = None) -> Outcome:
    """Apply one message read at `offset` of its line's partition, exactly once."""
    line_id = message.key
    outcome = Outcome(status="applied", kind=message.kind, line_id=line_id, event_id=message.id)
    stored_line = store.get(f"line:{line_id}")
    line = copy_line(stored_line) if stored_line is not None else new_line(line_id)
    outcome.line = line
    id_key = f"id:{message.id}"
    record = store.get(id_key)

    if offset <= line["last_offset"]:
        # Already applied (redelivery after a crash): state stays. Re-send a
        # cross-line credit, since the crash may have come before its send.
        outcome.status = "redelivered"
        if record is not None and record["offset"] == offset and record["line_id"] == line_id:
            outcome.effect = record["effect"]  # lets the read model re-insert (idempotently) what a crash lost
            outcome.sends = _transfers_for(record["effect"], message, line_id)
        return outcome

    if record is not None and not (record["offset"] == offset and record["line_id"] == line_id):
        if same_content(record, message):
            outcome.status = "duplicate"
        else:
            outcome.status = "conflict"
            outcome.reasons = [f"event id {message.id} was already used for different content "
                               f"(first seen at offset {record['offset']} on line {record['line_id']})"]
        return outcome
    # Fresh, or its id write landed before a crash but the line write did not.

    try:
        effect, extra = compute_effect(store, line, message, offset, catalogue)
    except Rejected as rejected:
        outcome.status = "rejected"
        outcome.reasons = [rejected.reason]
        return outcome

    event_time = rfc3339(message.time)
    store[id_key] = {
        "digest": content_digest(message), "offset": offset, "line_id": line_id, "effect": effect, "corrected_by": None,
        "kind": message.kind, "source_ministry": message.source_ministry, "time": event_time,
    }
    for entry in effect:
        if entry[0] != "commit":
            continue
        commitment_id, ministry, phase, year = entry[1:5]
        post, delta = (entry[5], entry[6]) if len(entry) == 7 else (None, entry[5])  # 6: recorded before posts
        before = load_commitment(store, line_id, commitment_id, offset)
        before_ore = None if before is None else before["outstanding_ore"]
        store[commitment_key(line_id, commitment_id)] = {
            "ministry": ministry, "phase": phase, "fiscal_year": year, "outstanding_ore": (before_ore or 0) + delta,
            "offset": offset, "before_ore": before_ore, "post": post or (before or {}).get("post"),
        }
    if "corrects_id" in extra:
        original = dict(store.get(f"id:{extra['corrects_id']}"))
        original["corrected_by"] = message.id
        store[f"id:{extra['corrects_id']}"] = original

    # Flags before the event, of the cells it will touch (the only ones compared below).
    before_flags = {}
    for entry in effect:
        if entry[0] == "cell":
            key = cell_key(entry[1], entry[2], entry[3])
            cell = line["cells"].get(key)
            if cell is not None and key not in before_flags:
                before_flags[key] = {name: cell[name] for name in FLAGS}
    touched = apply_effect_to_line(line, effect, extra)
    if "closing" in extra:
        year, closing = extra["closing"]
        line["closed_years"] = {**line.get("closed_years", {}), str(year): closing}
        for key, rule in extra["carry_rules"].items():
            line["cells"][key]["carry_rule"] = rule  # copied on write by apply_effect_to_line: every key was touched
        for (key, post), rule in extra["post_carry_rules"].items():
            line["cells"][key]["posts"][post]["carry_rule"] = rule
    for ministry, phase, year in sorted(touched):
        key = cell_key(ministry, phase, year)
        cell = line["cells"][key]
        new_flags = cell_flags(cell)
        old_flags = before_flags.get(key, {name: False for name in FLAGS})
        for name in FLAGS:
            if new_flags[name] != old_flags[name]:
                outcome.flags.append({
                    "line_id": line_id, "ministry": ministry, "phase": phase, "fiscal_year": year, "flag": name,
                    "raised": new_flags[name], "event_id": message.id,
                    **{f: cell[f] for f in AMOUNT_FIELDS}, "disponibelt_ore": disponibelt(cell),
                })
            cell[name] = new_flags[name]
    line["last_offset"] = offset
    line["events"] += 1
    if line["last_event_time"] is None or event_time > line["last_event_time"]:
        line["last_event_time"] = event_time
    line["updated_at"] = event_time if now is None else rfc3339(now)
    store[f"line:{line_id}"] = line  # the commit point

    outcome.effect = effect
    outcome.touched = touched
    outcome.sends = _transfers_for(effect, message, line_id)
    return outcome


# --- views ------------------------------------------------------------------------------

def cell_view(ministry: str, phase: str, fiscal_year: int, cell: dict[str, Any]) -> dict[str, Any]:
    return {"ministry": ministry, "phase": phase, "fiscal_year": fiscal_year,
            **{name: cell[name] for name in AMOUNT_FIELDS}, "disponibelt_ore": disponibelt(cell)}


def sum_amounts(cells: list[dict[str, Any]]) -> dict[str, int]:
    return {name: sum(cell[name] for cell in cells) for name in TOTAL_FIELDS}


def line_cells(line: dict[str, Any], fiscal_year: int | None = None) -> list[dict[str, Any]]:
    """The line's cells as views, ordered by year, ministry and phase; only `fiscal_year`'s when given."""
    cells = [cell_view(*split_cell_key(key), cell) for key, cell in line["cells"].items()]
    if fiscal_year is not None:
        cells = [cell for cell in cells if cell["fiscal_year"] == fiscal_year]
    return sorted(cells, key=lambda c: (c["fiscal_year"], c["ministry"], c["phase"]))


def line_totals(line: dict[str, Any]) -> dict[str, Any]:
    """The totals message for one line (the shape milepael consumes): every cell with its fiscal year,
    the totals per year, and `totals` over all years (what a stage has cost so far spans its years)."""
    cells = line_cells(line)
    return {
        "line_id": line["line_id"],
        "updated_at": line["updated_at"],
        "last_event_time": line["last_event_time"],
        "cells": cells,
        "by_fiscal_year": rollups(cells)["by_fiscal_year"],
        "totals": sum_amounts(cells),
    }


def rollups(cells: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """Sums per ministry, per phase and per fiscal year (keys are text: they become JSON object keys)."""
    groups: dict[str, dict[str, list]] = {"by_ministry": {}, "by_phase": {}, "by_fiscal_year": {}}
    for cell in cells:
        groups["by_ministry"].setdefault(cell["ministry"], []).append(cell)
        groups["by_phase"].setdefault(cell["phase"], []).append(cell)
        groups["by_fiscal_year"].setdefault(str(cell["fiscal_year"]), []).append(cell)
    return {name: {key: sum_amounts(group) for key, group in sorted(by_key.items())}
            for name, by_key in groups.items()}


def effect_post_deltas(effect: list[list[Any]]) -> dict[tuple[str, str, int, str], dict[str, int]]:
    """An effect's deltas per cell and kap/post: (ministry, phase, fiscal_year, post) -> field -> delta_ore.
    A cell entry without post entries (an effect recorded before effects named posts) counts under NO_POST."""
    deltas: dict[tuple[str, str, int, str], dict[str, int]] = {}
    with_posts = {tuple(entry[1:4]) for entry in effect if entry[0] == "post"}
    for entry in effect:
        if entry[0] == "post":
            _, ministry, phase, year, post, name, delta = entry
        elif entry[0] == "cell" and tuple(entry[1:4]) not in with_posts:
            (_, ministry, phase, year, name, delta), post = entry, NO_POST
        else:
            continue
        deltas.setdefault((ministry, phase, year, post), dict.fromkeys(AMOUNT_FIELDS, 0))[name] += delta
    return deltas


def post_view(ministry: str, phase: str, fiscal_year: int, post: str, amounts: dict[str, Any]) -> dict[str, Any]:
    """One funding kap/post's share of a cell (kap 0 post 0: money booked under no post)."""
    kap, number = split_post_key(post)
    return {"ministry": ministry, "phase": phase, "fiscal_year": fiscal_year, "kap": kap, "post": number,
            **{name: amounts[name] for name in AMOUNT_FIELDS}, "disponibelt_ore": disponibelt(amounts),
            "carry_rule": amounts.get("carry_rule")}


def line_post_rows(line: dict[str, Any], fiscal_year: int | None = None) -> list[dict[str, Any]]:
    """Every cell's per-post rows (of `fiscal_year` when given), ordered like `line_cells`, then by kap/post."""
    rows = [post_view(*split_cell_key(key), post, amounts)
            for key, cell in line["cells"].items() for post, amounts in cell_posts(cell).items()]
    if fiscal_year is not None:
        rows = [row for row in rows if row["fiscal_year"] == fiscal_year]
    return sorted(rows, key=lambda r: (r["fiscal_year"], r["ministry"], r["phase"], r["kap"], r["post"]))


def post_rollups(post_rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Sums per kap/post ("kap.post" -> kap, post and the amounts) over the rows given, and per fiscal year
    and kap/post (year -> "kap.post" -> …): a post's money in one year is never added to another year's
    in the second."""
    by_post: dict[str, list] = {}
    by_year: dict[str, dict[str, list]] = {}
    for row in post_rows:
        key = post_key(row["kap"], row["post"])
        by_post.setdefault(key, []).append(row)
        by_year.setdefault(str(row["fiscal_year"]), {}).setdefault(key, []).append(row)

    def sums(groups: dict[str, list]) -> dict[str, dict[str, Any]]:
        return {key: {"kap": split_post_key(key)[0], "post": split_post_key(key)[1], **sum_amounts(rows)}
                for key, rows in sorted(groups.items(), key=lambda item: split_post_key(item[0]))}

    return {"by_post": sums(by_post),
            "by_fiscal_year_and_post": {year: sums(groups) for year, groups in sorted(by_year.items())}}


def lines_in(store: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {key.removeprefix("line:"): value for key, value in store.items() if key.startswith("line:")}


# --- an oracle: the whole log, one store (tests and replay) ---------------------------

def run_log(messages: list[Message], catalogue: Catalogue | None = None) -> tuple[dict, list[Outcome]]:
    """Process messages as one log (offset = position) into a fresh dict store.

    Derived transfers are appended to the end of the log, as the worker's
    sends are, so they are processed after everything published before them.
    """
    store: dict[str, Any] = {}
    outcomes = []
    log = list(messages)
    offset = 0
    while offset < len(log):
        outcome = process(store, offset, log[offset], catalogue)
        outcomes.append(outcome)
        if outcome.status == "applied":
            log.extend(outcome.sends)
        offset += 1
    return store, outcomes
