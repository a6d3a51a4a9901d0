"""The event contract: CloudEvents 1.0 envelope plus every budget and reform type.

`parse_event(document)` turns one decoded JSON object into an `Event` or raises
`ContractError` listing every problem found, each with the field path and a
reason a ministry's integration team can act on. Nothing here does I/O.

Input money arrives as `amount_nok` (decimal string or integer) and is held as
integer øre in `amount_ore`; `Event.to_wire()` renders the canonical envelope
back (money as decimal strings) so what goes onto Kafka is itself valid input.

Hostile text is refused field by field, whatever the transport: identifiers and
codes match their pattern over the *whole* string (no trailing newline), numbers
are ASCII digits only, free text may hold tab and line breaks but no other
control character (NUL above all: PostgreSQL text cannot hold it), and a lone
surrogate is refused everywhere. `decode_event(raw)` reads bytes too; from bytes
to the last field every refusal is a `ContractError`.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    ValidationError,
    model_validator,
)

from services.shared.jsonio import dumps_compact, loads_strict
from services.shared.ministries import default_registry
from services.shared.money import format_ore, parse_nok_to_ore
from services.shared.problems import SURROGATE_REASON, ContractError, FieldProblem, printable_key

TYPE_PREFIX = "no.reformspor."
SOURCE_PREFIX = "urn:no:dep:"
MAX_ID_LENGTH = 64
MAX_TEXT_LENGTH = 500

BUDGET_KINDS = ("bevilget", "omdisponert", "forpliktet", "forpliktelse_frigitt", "utbetalt", "korrigert",
                "arsavslutning")
REFORM_KINDS = (
    "reform_registrert",
    "milepael_startet",
    "milepael_fullfort",
    "milepael_forsinket",
    "indikator_malt",
    "port_beslutning",
    "plan_justert",
)
PHASES = ("utredning", "utvikling", "implementering")


def event_type(kind: str) -> str:
    """The CloudEvents `type` for a short kind name ("bevilget" → no.reformspor.budsjett.bevilget.v1)."""
    domain = "budsjett" if kind in BUDGET_KINDS else "reform"
    return f"{TYPE_PREFIX}{domain}.{kind}.v1"


KIND_BY_TYPE = {event_type(kind): kind for kind in BUDGET_KINDS + REFORM_KINDS}


# --- field types -------------------------------------------------------------

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
MAX_EVENT_ID_LENGTH = 128
# Free text (reason, description, names, titles) may span lines, so tab, LF and
# CR stay; every other C0/C1 control character and DEL is refused.
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_DECIMAL_PATTERN = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]{1,4})?")  # a short exponent: Decimal() raises on huge ones
MAX_DECIMAL_PLACES = 30
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


IDENTIFIER_RULE = f"1 to {MAX_ID_LENGTH} ASCII letters, digits and . _ : / -, starting with a letter or digit"
EVENT_ID_RULE = f"1 to {MAX_EVENT_ID_LENGTH} printable characters"


def is_identifier(value: object) -> bool:
    """A line, reform, stage, milestone, commitment or indicator id (fullmatch: "$" would let "0-24\n" through)."""
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and _ID_PATTERN.fullmatch(value) is not None


def is_event_id(value: object) -> bool:
    """An event id (the idempotency key): printable, so no control character and no lone surrogate."""
    return isinstance(value, str) and 1 <= len(value) <= MAX_EVENT_ID_LENGTH and value.isprintable()


def _check_identifier(value: str) -> str:
    if not is_identifier(value):
        raise ValueError("use ASCII letters, digits and . _ : / - only, starting with a letter or digit")
    return value


def _check_event_id(value: str) -> str:
    if not is_event_id(value):
        raise ValueError(f"must be {EVENT_ID_RULE} (an event id)")
    return value


def _check_text(value: str) -> str:
    found = _TEXT_CONTROL.search(value)
    if found:
        raise ValueError(f"holds the control character U+{ord(found.group()):04X} at position {found.start()}; "
                         "text may hold tabs and line breaks but no other control character")
    return value


def _check_ministry(value: str) -> str:
    if value not in default_registry():
        raise ValueError(f"unknown ministry code {value[:20]!r}; known: {', '.join(default_registry().codes())}")
    return value


def _money(value: object) -> int:
    return parse_nok_to_ore(value)


def _iso_date(value: object) -> object:
    # pydantic alone would also take 1780099200 or "2026-05-30T00:00:00" as a date.
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        return value  # pydantic checks the month and day
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raise ValueError("must be a date as YYYY-MM-DD")


def _decimal_value(value: object) -> str:
    # KPI values and weights may be JSON numbers: we read them as exact decimals.
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, float):
        raise ValueError("must be a decimal string or a JSON number, not a binary float")
    if isinstance(value, (int, str)):
        text = str(value).strip(" ")
        # Decimal() alone would take other scripts' digits, "1_000", "NaN" and " 5\n".
        if not _DECIMAL_PATTERN.fullmatch(text):
            raise ValueError(f"{text[:30]!r} is not a number (ASCII digits 0-9, optional - . and exponent)")
        number = Decimal(text)
        if abs(number) > Decimal(10) ** 15:
            raise ValueError("is beyond ±10^15")
        if number.normalize().as_tuple().exponent < -MAX_DECIMAL_PLACES:  # "1e-999999999" would render a billion zeros
            raise ValueError(f"has more than {MAX_DECIMAL_PLACES} decimal places")
        return format(number.normalize(), "f")
    raise ValueError(f"must be a number, got {type(value).__name__}")


Identifier = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_check_identifier)]
Text = Annotated[str, Strict(), Field(max_length=MAX_TEXT_LENGTH), AfterValidator(_check_text)]
EventId = Annotated[str, Strict(), AfterValidator(_check_event_id)]
MinistryCode = Annotated[str, Strict(), Field(max_length=8), AfterValidator(_check_ministry)]
Ore = Annotated[int, BeforeValidator(_money), PlainSerializer(format_ore, return_type=str, when_used="json")]
PositiveOre = Annotated[Ore, Field(gt=0)]
ExactDecimal = Annotated[str, BeforeValidator(_decimal_value)]
StrictInt = Annotated[int, Strict()]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Phase = Literal["utredning", "utvikling", "implementering"]
Kap = Annotated[int, Strict(), Field(ge=1, le=9999)]
Post = Annotated[int, Strict(), Field(ge=1, le=99)]
FiscalYear = Annotated[int, Strict(), Field(ge=2000, le=2100)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    def owner_ministries(self) -> set[str]:
        """Ministries whose money or milestones this event speaks for."""
        return set()


# --- budget events (key: line_id) ---------------------------------------------

class _CellEvent(_Data):
    """Money booked to one cell of a line: line × ministry × phase, owned by that ministry."""

    line_id: Identifier
    ministry: MinistryCode
    phase: Phase
    fiscal_year: FiscalYear

    def owner_ministries(self) -> set[str]:
        return {self.ministry}


class Bevilget(_CellEvent):
    amount_ore: Ore = Field(alias="amount_nok")  # negative appropriations exist
    kap: Kap
    post: Post


class Side(_Data):
    line_id: Identifier | None = None
    ministry: MinistryCode
    phase: Phase
    fiscal_year: FiscalYear | None = None  # if given, must be the event's: money moves within one budget year


class Omdisponert(_Data):
    """Move money between phases, ministries or lines: both sides or neither."""

    line_id: Identifier
    amount_ore: PositiveOre = Field(alias="amount_nok")
    from_: Side = Field(alias="from")
    to: Side
    fiscal_year: FiscalYear
    reason: Text = ""

    @model_validator(mode="after")
    def _sides_differ(self) -> "Omdisponert":
        if self.from_.line_id not in (None, self.line_id):
            raise ValueError("from.line_id must be the event's line_id (the line the money leaves)")
        for name, side in (("from", self.from_), ("to", self.to)):
            if side.fiscal_year not in (None, self.fiscal_year):
                raise ValueError(f"omdisponert may not cross fiscal years: {name}.fiscal_year {side.fiscal_year} is "
                                 f"not the event's fiscal_year {self.fiscal_year} (bevilgningsreglementet § 3: the "
                                 f"budget is per year; unspent money moves on only at the year-end closing)")
        target_line = self.to.line_id or self.line_id
        if (target_line, self.to.ministry, self.to.phase) == (self.line_id, self.from_.ministry, self.from_.phase):
            raise ValueError("from and to are the same line, ministry and phase: nothing would move")
        return self

    @property
    def to_line_id(self) -> str:
        return self.to.line_id or self.line_id

    def owner_ministries(self) -> set[str]:
        return {self.from_.ministry}


class Forpliktet(_CellEvent):
    commitment_id: Identifier
    amount_ore: PositiveOre = Field(alias="amount_nok")
    kap: Kap | None = None
    post: Post | None = None
    description: Text = ""


class ForpliktelseFrigitt(_CellEvent):
    commitment_id: Identifier
    amount_ore: PositiveOre = Field(alias="amount_nok")


class Utbetalt(_CellEvent):
    amount_ore: Ore = Field(alias="amount_nok")  # negative = a refund
    commitment_id: Identifier | None = None
    kap: Kap | None = None
    post: Post | None = None
    description: Text = ""


class Korrigert(_Data):
    line_id: Identifier
    corrects_id: EventId
    reason: Text


class Arsavslutning(_Data):
    """Year-end closing of one line's fiscal year. Who may publish it (FIN, or the line's sole funder that
    year) depends on the line's state, so budsjett decides it, not the contract."""

    line_id: Identifier
    fiscal_year: FiscalYear
    reason: Text = ""


# --- reform events (key: reform_id) -------------------------------------------

class MilestonePlan(_Data):
    milestone_id: Identifier
    name: Text
    weight: Annotated[int, Strict(), Field(ge=1, le=1000)]
    due: IsoDate
    required: bool = True
    responsible: MinistryCode


class KpiCriterion(_Data):
    indicator: Identifier
    op: Literal[">=", "<=", ">", "<"]
    threshold: ExactDecimal


class WarningCritical(_Data):
    warning: Annotated[int, Strict(), Field(ge=0)]
    critical: Annotated[int, Strict(), Field(ge=0)]

    @model_validator(mode="after")
    def _ordered(self) -> "WarningCritical":
        if self.critical < self.warning:
            raise ValueError("critical must be at least warning")
        return self


class MoneyWarningCritical(_Data):
    warning_ore: Annotated[Ore, Field(ge=0)] = Field(alias="warning_nok")
    critical_ore: Annotated[Ore, Field(ge=0)] = Field(alias="critical_nok")


class Tolerances(_Data):
    time_days: WarningCritical
    cost_pct: WarningCritical
    cost_nok: MoneyWarningCritical | None = None


class Gate(_Data):
    required_milestones: list[Identifier] = Field(default_factory=list, max_length=200)
    kpis: list[KpiCriterion] = Field(default_factory=list, max_length=50)


class Funding(_Data):
    line_id: Identifier
    phase: Phase


class StagePlan(_Data):
    stage_id: Identifier
    name: Text
    planned_start: IsoDate
    planned_finish: IsoDate
    planned_cost_ore: Annotated[Ore, Field(ge=0)] = Field(alias="planned_cost_nok")
    milestones: list[MilestonePlan] = Field(min_length=1, max_length=200)
    funding: list[Funding] = Field(default_factory=list, max_length=20)
    gate: Gate = Field(default_factory=Gate)
    tolerances: Tolerances

    @model_validator(mode="after")
    def _consistent(self) -> "StagePlan":
        if self.planned_finish <= self.planned_start:
            raise ValueError("planned_finish must be after planned_start")
        ids = [m.milestone_id for m in self.milestones]
        if len(set(ids)) != len(ids):
            raise ValueError("milestone_id values must be unique within a stage")
        unknown = set(self.gate.required_milestones) - set(ids)
        if unknown:
            raise ValueError(f"gate.required_milestones names unknown milestones: {', '.join(sorted(unknown))}")
        return self


class ReformRegistrert(_Data):
    reform_id: Identifier
    title: Text
    owner: MinistryCode
    stages: list[StagePlan] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _unique_stages(self) -> "ReformRegistrert":
        ids = [s.stage_id for s in self.stages]
        if len(set(ids)) != len(ids):
            raise ValueError("stage_id values must be unique within a reform")
        return self

    def owner_ministries(self) -> set[str]:
        return {self.owner}


class _MilestoneEvent(_Data):
    reform_id: Identifier
    stage_id: Identifier
    milestone_id: Identifier
    ministry: MinistryCode

    def owner_ministries(self) -> set[str]:
        return {self.ministry}


class MilepaelStartet(_MilestoneEvent):
    started_on: IsoDate | None = None


class MilepaelFullfort(_MilestoneEvent):
    completed_on: IsoDate | None = None


class MilepaelForsinket(_MilestoneEvent):
    forecast_date: IsoDate
    reason: Text = ""


class IndikatorMalt(_Data):
    reform_id: Identifier
    stage_id: Identifier
    indicator: Identifier
    value: ExactDecimal
    ministry: MinistryCode
    measured_on: IsoDate | None = None

    def owner_ministries(self) -> set[str]:
        return {self.ministry}


class PortBeslutning(_Data):
    reform_id: Identifier
    stage_id: Identifier
    decision: Literal["videre", "juster", "stopp"]
    rationale: Text = ""
    ministry: MinistryCode

    def owner_ministries(self) -> set[str]:
        return {self.ministry}


class MilestoneReplan(_Data):
    milestone_id: Identifier
    due: IsoDate


class PlanJustert(_Data):
    reform_id: Identifier
    stage_id: Identifier
    planned_finish: IsoDate
    planned_cost_ore: Annotated[Ore, Field(ge=0)] = Field(alias="planned_cost_nok")
    milestones: list[MilestoneReplan] = Field(default_factory=list, max_length=200)
    reason: Text = ""
    ministry: MinistryCode

    def owner_ministries(self) -> set[str]:
        return {self.ministry}


DATA_MODELS: dict[str, type[_Data]] = {
    "bevilget": Bevilget,
    "omdisponert": Omdisponert,
    "forpliktet": Forpliktet,
    "forpliktelse_frigitt": ForpliktelseFrigitt,
    "utbetalt": Utbetalt,
    "korrigert": Korrigert,
    "arsavslutning": Arsavslutning,
    "reform_registrert": ReformRegistrert,
    "milepael_startet": MilepaelStartet,
    "milepael_fullfort": MilepaelFullfort,
    "milepael_forsinket": MilepaelForsinket,
    "indikator_malt": IndikatorMalt,
    "port_beslutning": PortBeslutning,
    "plan_justert": PlanJustert,
}


# --- envelope -------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    source: str
    source_ministry: str
    time: datetime
    data: _Data

    @property
    def type(self) -> str:
        return event_type(self.kind)

    @property
    def is_budget(self) -> bool:
        return self.kind in BUDGET_KINDS

    @property
    def key(self) -> str:
        """The Kafka key: line_id for budget events, reform_id for reform events."""
        return self.data.line_id if self.is_budget else self.data.reform_id  # type: ignore[attr-defined]

    def to_wire(self) -> dict[str, Any]:
        """The canonical CloudEvents envelope, itself valid input to parse_event."""
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "datacontenttype": "application/json",
            "data": self.data.model_dump(mode="json", by_alias=True, exclude_none=True),
        }

    @property
    def content_hash(self) -> str:
        """Hash of the canonical content: same id + same hash = duplicate, else conflict."""
        return hashlib.sha256(dumps_compact(self.to_wire())).hexdigest()

    def owner_problems(self) -> list[FieldProblem]:
        """Events may speak only for the publishing ministry's own money and milestones."""
        owners = self.data.owner_ministries()
        if owners and owners != {self.source_ministry}:
            return [
                FieldProblem(
                    "data",
                    f"source {self.source} may only publish its own money and milestones, "
                    f"but this event speaks for {', '.join(sorted(owners))}",
                )
            ]
        return []


_OPTIONAL_TEXT_ATTRIBUTES = ("subject", "dataschema")
_ENVELOPE_FIELDS = {"specversion", "id", "source", "type", "time", "datacontenttype", "subject", "data", "dataschema"}


_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?P<zone>[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


def parse_time(value: object, problems: list[FieldProblem]) -> datetime | None:
    """An RFC 3339 timestamp with zone as UTC, or None with the reason added to `problems`."""
    if not isinstance(value, str):
        problems.append(FieldProblem("time", "required: an RFC 3339 timestamp with time zone, e.g. 2026-03-01T10:00:00Z"))
        return None
    shape = _RFC3339.fullmatch(value)  # before fromisoformat, which takes ISO forms (and may take digits) beyond RFC 3339
    if shape is None:
        problems.append(FieldProblem("time", f"{value[:40]!r} is not an RFC 3339 timestamp"))
        return None
    if shape.group("zone") is None:
        problems.append(FieldProblem("time", "must carry a time zone (Z or +01:00): local times are ambiguous"))
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:  # the shape is right but a field is out of range (month 13, hour 25)
        problems.append(FieldProblem("time", f"{value!r} is not a valid date and time"))
        return None
    return parsed.astimezone(timezone.utc)


def _pydantic_problems(error: ValidationError, prefix: str) -> list[FieldProblem]:
    problems = []
    for item in error.errors(include_url=False):
        parts = [prefix, *(printable_key(part, 40) for part in item["loc"])]
        path = ".".join(parts).replace("from_", "from")
        message = item["msg"]
        if item["type"] == "string_unicode":  # a lone surrogate: pydantic's words do not say so
            message = SURROGATE_REASON
        for noise in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(noise)
        problems.append(FieldProblem(path, message))
    return problems


def parse_event(document: object) -> Event:
    """Validate one decoded JSON object against the contract."""
    if not isinstance(document, dict):
        raise ContractError([FieldProblem("", f"an event must be a JSON object, got {type(document).__name__}")])
    problems: list[FieldProblem] = []
    event_id = document.get("id")
    if not is_event_id(event_id):
        problems.append(FieldProblem("id", f"required: a string of {EVENT_ID_RULE} (the idempotency key)"))
        event_id = None
    unknown = sorted(printable_key(key) for key in set(document) - _ENVELOPE_FIELDS)
    if unknown:
        problems.append(FieldProblem("", f"unknown envelope fields: {', '.join(unknown[:5])}"))
    if document.get("specversion") != "1.0":
        problems.append(FieldProblem("specversion", 'required: "1.0" (CloudEvents 1.0)'))
    if document.get("datacontenttype", "application/json") != "application/json":
        problems.append(FieldProblem("datacontenttype", 'must be "application/json" when given'))
    for name in _OPTIONAL_TEXT_ATTRIBUTES:  # accepted, not kept by to_wire: still no hostile text
        value = document.get(name)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_TEXT_LENGTH and value.isprintable()):
            problems.append(FieldProblem(name, f"must be a string of at most {MAX_TEXT_LENGTH} printable characters"))

    source = document.get("source")
    source_ministry = ""
    if not isinstance(source, str) or not source.startswith(SOURCE_PREFIX):
        problems.append(FieldProblem("source", f"required: {SOURCE_PREFIX}<ministry code>, e.g. {SOURCE_PREFIX}BFD"))
    else:
        source_ministry = source.removeprefix(SOURCE_PREFIX)
        if source_ministry not in default_registry():
            problems.append(FieldProblem("source", f"unknown ministry code {source_ministry[:20]!r}"))

    type_name = document.get("type")
    kind = KIND_BY_TYPE.get(type_name) if isinstance(type_name, str) else None
    if kind is None:
        problems.append(
            FieldProblem("type", f"unknown event type {str(type_name)[:80]!r}; expected one of {', '.join(sorted(KIND_BY_TYPE))}")
        )

    time = parse_time(document.get("time"), problems)

    data = None
    raw_data = document.get("data")
    if not isinstance(raw_data, dict):
        problems.append(FieldProblem("data", "required: a JSON object"))
    elif kind is not None:
        try:
            data = DATA_MODELS[kind].model_validate(raw_data)
        except ValidationError as error:
            problems.extend(_pydantic_problems(error, "data"))

    if problems or data is None or time is None:
        raise ContractError(problems or [FieldProblem("", "invalid event")], event_id=event_id)
    event = Event(id=event_id, kind=kind, source=source, source_ministry=source_ministry, time=time, data=data)
    ownership = event.owner_problems()
    if ownership:
        raise ContractError(ownership, event_id=event_id)
    return event


def decode_event(raw: bytes | str) -> Event:
    """Strict JSON (see jsonio), then the contract: raw bytes in, an Event or a ContractError out."""
    return parse_event(loads_strict(raw))


def make_event(kind: str, ministry: str, data: dict[str, Any], event_id: str, time: datetime) -> dict[str, Any]:
    """Build a wire envelope (used by the demo, the publisher CLI and tests)."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": f"{SOURCE_PREFIX}{ministry}",
        "type": event_type(kind),
        "time": time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": data,
    }
