"""The ledger's rules: pure functions on plain, JSON-able data. No I/O.

State lives in a key-value store (a dict in tests, one per line in replay, the
worker's Quix state scoped to the line in the worker) under prefixed keys, all
belonging to the line being processed:

- ``line:<line_id>``  the line's cells, flags and ``last_offset`` (the input
  offset last applied; a line's events share one partition, so offsets grow)
- ``id:<event_id>``   {hash, offset, line_id, effect, corrected_by, …}
- ``c:<line_id>:<commitment_id>``  one commitment's outstanding amount

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
    time = parse_time(document.get("time"), problems)
    event_id = document.get("id")
    if not is_event_id(event_id) or not event_id.endswith("#to"):
        problems.append(FieldProblem("id", f"an internal transfer id ends with #to ({EVENT_ID_RULE})"))
        event_id = None
    if problems or time is None:
        raise ContractError(problems, event_id=event_id)
    return Transfer(id=event_id, line_id=data["line_id"], ministry=data["ministry"], phase=data["phase"],
                    fiscal_year=data["fiscal_year"], amount_ore=amount, origin_id=data["origin_id"], origin_line_id=data["origin_line_id"],
                    source_ministry=source.removeprefix(SOURCE_PREFIX), time=time)


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


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
            "funding_posts": [], "overslagsbevilgning": False, "kan_overfores": False, "carry_rule": None}


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
    ["commit", commitment_id, ministry, phase, fiscal_year, delta_ore],
    ["transfer", line_id, ministry, phase, fiscal_year, delta_ore]. Every entry names its fiscal year, so
    a korrigert (which negates the original's entries) reverses in the year of the original.
    """
    kind = message.kind
    line_id = line["line_id"]
    extra: dict[str, Any] = {}
    if kind == TRANSFER_KIND:
        # The other half of an omdisponert already applied on its line: applied even to a closed year, since
        # refusing it would lose the money the debit took (both sides or neither).
        return [["cell", message.ministry, message.phase, message.fiscal_year, "omdisponert_ore",
                 message.amount_ore]], extra
    data = message.data
    if kind == "arsavslutning":
        return _closing_effect(line, message, catalogue)
    _refuse_closed_year(store, line, message)
    if kind == "bevilget":
        _check_post(catalogue, data.fiscal_year, data.kap, data.post, data.ministry)
        extra["funding_post"] = f"{data.kap}.{data.post}"
        if catalogue is not None and catalogue.loaded:
            item = catalogue.get(data.fiscal_year, data.kap, data.post)
            if item is not None:
                extra["overslagsbevilgning"] = item.overslagsbevilgning
                extra["kan_overfores"] = item.kan_overfores
        return [["cell", data.ministry, data.phase, data.fiscal_year, "bevilget_ore", data.amount_ore]], extra
    if kind == "omdisponert":
        return _reallocation_effect(data, line_id), extra
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
        if kind == "forpliktet":
            _check_booking(catalogue, cell, year, data.kap, data.post, data.ministry, data.phase)
            return [["commit", data.commitment_id, data.ministry, data.phase, year, data.amount_ore],
                    ["cell", data.ministry, data.phase, year, "forpliktet_ore", data.amount_ore]], extra
        if kind == "forpliktelse_frigitt":
            if commitment is None:
                raise Rejected(f"commitment {data.commitment_id} is unknown on line {line_id}")
            if data.amount_ore > commitment["outstanding_ore"]:
                raise Rejected(f"releases {data.amount_ore} øre of commitment {data.commitment_id}, "
                               f"but only {commitment['outstanding_ore']} øre is outstanding")
            return [["commit", data.commitment_id, data.ministry, data.phase, year, -data.amount_ore],
                    ["cell", data.ministry, data.phase, year, "forpliktet_ore", -data.amount_ore]], extra
        # utbetalt
        _check_booking(catalogue, cell, year, data.kap, data.post, data.ministry, data.phase)
        effect = [["cell", data.ministry, data.phase, year, "utbetalt_ore", data.amount_ore]]
        if data.commitment_id is not None:
            if commitment is None:
                raise Rejected(f"payment against commitment {data.commitment_id}, which is unknown on line {line_id}")
            drawn = min(max(data.amount_ore, 0), max(commitment["outstanding_ore"], 0))
            if drawn:
                effect += [["commit", data.commitment_id, data.ministry, data.phase, year, -drawn],
                           ["cell", data.ministry, data.phase, year, "forpliktet_ore", -drawn]]
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
        return [[entry[0], *entry[1:-1], -entry[-1]] for entry in original["effect"]], extra
    raise Rejected(f"unsupported kind {kind}")


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


def _post_terms(catalogue: Catalogue | None, fiscal_year: int, cell: dict[str, Any]) -> PostTerms:
    """The carry-over terms of the post that funded a cell: the catalogue's stikkord, else the cell's own flags."""
    if len(cell["funding_posts"]) != 1:
        # Several posts would be closed per post, which needs per-post figures the ledger does not keep; without a
        # post there is no rule that lets money carry. Either way the main rule (§ 3) applies: it lapses.
        return PostTerms(post=0)
    kap, post = (int(part) for part in cell["funding_posts"][0].split("."))
    item = catalogue.get(fiscal_year, kap, post) if catalogue is not None and catalogue.loaded else None
    if item is not None:
        return PostTerms.of(item)
    flags = (("kan overføres", cell["kan_overfores"]), ("overslagsbevilgning", cell["overslagsbevilgning"]))
    return PostTerms(post=post, stikkord=", ".join(word for word, on in flags if on))


def _closing_effect(line: dict[str, Any], message: Event,
                    catalogue: Catalogue | None) -> tuple[list[list[Any]], dict[str, Any]]:
    """An årsavslutning: each of the year's cells carries or lapses into the next year (yearend.close_cell:
    Bevilgningsreglementet § 5 and R-110); refused unless FIN or the year's sole funder closes (decide_closing)."""
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
    for key, cell in sorted(line["cells"].items()):
        ministry, phase, cell_year = split_cell_key(key)
        if cell_year != year:
            continue
        previous = line["cells"].get(cell_key(ministry, phase, year - 1))
        figures = CellYear(bevilget_ore=cell["bevilget_ore"], omdisponert_ore=cell["omdisponert_ore"],
                           forpliktet_ore=cell["forpliktet_ore"], utbetalt_ore=cell["utbetalt_ore"],
                           previous_year_appropriation_ore=0 if previous is None
                           else previous["bevilget_ore"] + previous["omdisponert_ore"],
                           carried_in_ore=cell["overfort_inn_ore"])
        carry = close_cell(figures, _post_terms(catalogue, year, cell))
        effect += [["cell", ministry, phase, year + 1, "overfort_inn_ore", carry.carried_ore],
                   ["cell", ministry, phase, year + 1, "bortfalt_ore", carry.lapsed_ore]]
        rules[cell_key(ministry, phase, year + 1)] = carry.rule.value
    closing = {"event_id": message.id, "closed_by": message.source_ministry, "closed_at": rfc3339(message.time)}
    return effect, {"closing": (year, closing), "carry_rules": rules}


def _reallocation_effect(data: Any, line_id: str) -> list[list[Any]]:
    """An omdisponert's two sides, both in the event's fiscal year (the contract refuses sides in other years)."""
    year, amount = data.fiscal_year, data.amount_ore
    effect = [["cell", data.from_.ministry, data.from_.phase, year, "omdisponert_ore", -amount]]
    if data.to_line_id == line_id:
        effect.append(["cell", data.to.ministry, data.to.phase, year, "omdisponert_ore", amount])
    else:
        effect.append(["transfer", data.to_line_id, data.to.ministry, data.to.phase, year, amount])
    return effect


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


def apply_effect_to_line(line: dict[str, Any], effect: list[list[Any]],
                         extra: dict[str, Any]) -> set[tuple[str, str, int]]:
    """Apply cell deltas to a (copied) line record; returns the cells touched, as (ministry, phase, fiscal_year)."""
    touched = set()
    cells = line["cells"]
    for entry in effect:
        if entry[0] != "cell":
            continue
        _, ministry, phase, year, name, delta = entry
        key = cell_key(ministry, phase, year)
        if (ministry, phase, year) not in touched:
            # Copy on first write: the line's cells may still be shared with the stored record.
            cell = cells.get(key)
            cells[key] = new_cell() if cell is None else {**cell, "funding_posts": list(cell["funding_posts"])}
        cells[key][name] += delta
        touched.add((ministry, phase, year))
    post = extra.get("funding_post")
    if post:
        (touched_cell,) = touched
        cell = line["cells"][cell_key(*touched_cell)]
        if post not in cell["funding_posts"]:
            cell["funding_posts"] = sorted(cell["funding_posts"] + [post])
        cell["overslagsbevilgning"] = cell["overslagsbevilgning"] or bool(extra.get("overslagsbevilgning"))
        cell["kan_overfores"] = cell["kan_overfores"] or bool(extra.get("kan_overfores"))
    return touched


def _transfers_for(effect: list[list[Any]], message: Message, line_id: str) -> list[Transfer]:
    return [
        Transfer(id=f"{message.id}#to", line_id=entry[1], ministry=entry[2], phase=entry[3], fiscal_year=entry[4],
                 amount_ore=entry[5],
                 origin_id=message.id, origin_line_id=line_id, source_ministry=message.source_ministry,
                 time=message.time)
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

    content_hash = message.content_hash
    if record is not None and not (record["offset"] == offset and record["line_id"] == line_id):
        if record["hash"] == content_hash:
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
        "hash": content_hash, "offset": offset, "line_id": line_id, "effect": effect, "corrected_by": None,
        "kind": message.kind, "source_ministry": message.source_ministry, "time": event_time,
    }
    for entry in effect:
        if entry[0] != "commit":
            continue
        _, commitment_id, ministry, phase, year, delta = entry
        before = load_commitment(store, line_id, commitment_id, offset)
        before_ore = None if before is None else before["outstanding_ore"]
        store[commitment_key(line_id, commitment_id)] = {
            "ministry": ministry, "phase": phase, "fiscal_year": year, "outstanding_ore": (before_ore or 0) + delta,
            "offset": offset, "before_ore": before_ore,
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
