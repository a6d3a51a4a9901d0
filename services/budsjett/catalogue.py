"""The budget catalogue: Finansdepartementet's Gul bok items (kap/post) and their rules.

Pure functions, apart from the file-reading entry points: `read_rows` reads an
xlsx or CSV file through the shared tabular reader (the one `reformspor publish`
uses) as records with their spreadsheet row numbers, `import_catalogue` adds the
fiscal year (from --year or the file name, never a default), `parse_rows` turns
records into `CatalogueItem`s with each year's fdep_nr placed by the file's own
ministry names, and `Catalogue` answers the questions the ledger asks, per fiscal
year (does this kap/post exist that year, which ministry owns it, may it be
exceeded, which posts pool). The last part carries the catalogue through Kafka:
`publish_catalogue` writes a year as one record of a compacted topic, and
`CatalogueHolder` follows that topic in the services that check kap/post
(budsjett and ingest).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import Path

from services.shared.config import Settings
from services.shared.follower import FollowedRecord, TopicFollower
from services.shared.ministries import MinistryRegistry, default_registry, normalise_name
from services.shared.tabular import Record, normalize_decimal, read_table
from services.shared.usererror import UserError

log = logging.getLogger(__name__)
REQUIRED_COLUMNS = ("fdep_nr", "kap_nr", "post_nr")

# R-101 post groups (Bevilgningsreglementet / the state's chart of accounts).
POST_GROUPS = (
    (1, 29, "drift"),
    (30, 49, "nybygg_anlegg"),
    (50, 89, "overforinger"),
    (90, 99, "utlan"),
)


def post_group(post: int) -> str:
    """R-101's group of a post number: drift, nybygg_anlegg, overforinger or utlan."""
    for low, high, name in POST_GROUPS:
        if low <= post <= high:
            return name
    raise ValueError(f"post {post} is outside 1–99")


def chapter_side(kap: int) -> str:
    """Chapters below 3000 are expenditure, 3000–5999 revenue; the rest are financing/other."""
    if kap < 3000:
        return "utgift"
    if kap < 6000:
        return "inntekt"
    return "annet"


@dataclass(frozen=True)
class CatalogueItem:
    fiscal_year: int
    kap: int
    post: int
    ministry: str | None  # None when fdep_nr maps to no known ministry that year
    fdep_nr: int
    kap_navn: str = ""
    post_navn: str = ""
    stikkord: str = ""
    amount_ore: int | None = None
    overslagsbevilgning: bool = False
    kan_overfores: bool = False
    # Items this item's money may also be used under ("kan nyttes under post X").
    usable_under: frozenset[tuple[int, int]] = field(default_factory=frozenset)

    @property
    def post_group(self) -> str:
        return post_group(self.post)

    @property
    def side(self) -> str:
        return chapter_side(self.kap)


_KAN_OVERFORES = re.compile(r"kan\s+overf(?:ø|o)res", re.IGNORECASE)
_OVERSLAGSBEVILGNING = re.compile(r"overslagsbevilgning", re.IGNORECASE)


def is_kan_overfores(stikkord: str) -> bool:
    """The stikkord «kan overføres»: unspent money may carry into the next year (Bevilgningsreglementet § 5)."""
    return bool(_KAN_OVERFORES.search(stikkord or ""))


def is_overslagsbevilgning(stikkord: str) -> bool:
    """The stikkord «overslagsbevilgning»: an estimate that may be exceeded and whose unspent part lapses."""
    return bool(_OVERSLAGSBEVILGNING.search(stikkord or ""))


_USABLE_UNDER = re.compile(r"kan\s+nyttes\s+under\s+(?P<refs>.*?)(?:$|,\s*kan\s|;)", re.IGNORECASE)
_REF_TOKEN = re.compile(r"(?P<kap>kap\.?)\s*(?P<kapnr>\d+)|(?P<num>\d+)", re.IGNORECASE)


def parse_usable_under(stikkord: str, own_kap: int) -> frozenset[tuple[int, int]]:
    """Parse "kan nyttes under post 21 og 45" / "... kap. 430, post 1" into (kap, post) pairs.

    A bare post number refers to the item's own chapter unless a "kap. N" came
    before it in the same phrase.
    """
    found: set[tuple[int, int]] = set()
    for match in _USABLE_UNDER.finditer(stikkord or ""):
        current_kap = own_kap
        for token in _REF_TOKEN.finditer(match.group("refs")):
            if token.group("kap"):
                current_kap = int(token.group("kapnr"))
            else:
                found.add((current_kap, int(token.group("num"))))
    return frozenset(found)


def _clean(value: object) -> str:
    if value is None:
        return ""
    return re.sub(r"\s+", " ", str(value)).strip()


def _int_or_none(value: object) -> int | None:
    text = _clean(value)
    if not text:
        return None
    try:
        number = Decimal(normalize_decimal(text).replace("\u00a0", "").replace(" ", ""))
    except InvalidOperation:
        return None
    if number != number.to_integral_value():
        return None
    return int(number)


def read_rows(path: Path | str) -> list[Record]:
    """The Gul bok data file (xlsx sheet "Data", or CSV as Excel saves it) as records under its header row.

    Column names are lower-cased; each record keeps its spreadsheet row number.
    """
    table = read_table(Path(path), required_columns=REQUIRED_COLUMNS, sheet="Data")
    return [Record(r.number, {name.lower(): value for name, value in r.values.items()}) for r in table.records]


# --- the fiscal year of a file ----------------------------------------------------

class FiscalYearError(UserError, ValueError):
    """The fiscal year of a catalogue file cannot be told; the message is one line for the CLI."""


_DIGIT_RUN = re.compile(r"\d+")
_PLAUSIBLE_YEARS = range(2000, 2101)  # the event contract's fiscal years


def fiscal_year_from_name(name: str) -> int:
    """The fiscal year a Gul bok file name states, when it states exactly one.

    `gul_bok_2024_datagrunnlag.xlsx` → 2024, `2026_gulbok_datagrunnlag.xlsx` →
    2026. A longer run of digits such as `20241002_…` is a publication date,
    and a budget published in 2024 is the budget for 2025: rather than guess,
    such a name (or one with no year, or two) needs --year.
    """
    stem = Path(name).name.split(".")[0]
    runs = _DIGIT_RUN.findall(stem)
    long_runs = [run for run in runs if len(run) > 4]
    if long_runs:
        raise FiscalYearError(
            f"{Path(name).name}: {long_runs[0]} looks like a publication date, and a budget published in one year "
            f"is for the next; give the fiscal year with --year")
    years = sorted({int(run) for run in runs if len(run) == 4 and int(run) in _PLAUSIBLE_YEARS})
    if len(years) != 1:
        found = f"names the years {', '.join(map(str, years))}" if years else "names no fiscal year"
        raise FiscalYearError(f"{Path(name).name} {found}; give the fiscal year with --year")
    return years[0]


def resolve_fiscal_year(name: str, given_year: int | None) -> int:
    """--year when given (it must agree with a year the name states), else the name's year; never a default."""
    if given_year is None:
        return fiscal_year_from_name(name)
    if given_year not in _PLAUSIBLE_YEARS:
        raise FiscalYearError(f"--year {given_year} is outside {_PLAUSIBLE_YEARS[0]}–{_PLAUSIBLE_YEARS[-1]}")
    try:
        named = fiscal_year_from_name(name)
    except FiscalYearError:
        return given_year  # the name is no help: --year decides
    if named != given_year:
        raise FiscalYearError(f"{Path(name).name} names {named} but --year says {given_year}; "
                              f"rename the file or give the year it holds")
    return given_year


# --- each year's fdep_nr → ministry, learned from the file ----------------------------

@dataclass(frozen=True)
class UnplacedFdep:
    fdep_nr: int
    names: tuple[str, ...]  # the file's fdep_navn for this number (trimmed)
    reason: str


@dataclass(frozen=True)
class FdepMapping:
    """Which ministry each fdep_nr of one year's file belongs to, and which numbers could not be placed."""

    fiscal_year: int
    placed: dict[int, str]  # fdep_nr → ministry code
    not_ministries: dict[int, str]  # fdep_nr → name, e.g. 23 → "Ymse": items kept, owned by no ministry
    unplaced: tuple[UnplacedFdep, ...]

    def report_lines(self) -> list[str]:
        """One line per number that is not a ministry or could not be placed (for the CLI)."""
        lines = [f"fdep_nr {nr} ({name}) is not a ministry: its items are kept, but no ministry may book them"
                 for nr, name in sorted(self.not_ministries.items())]
        return lines + [f"fdep_nr {u.fdep_nr} ({' / '.join(u.names) or 'no name'}): {u.reason}" for u in self.unplaced]


def _place_fdep(fdep_nr: int, names: tuple[str, ...], fiscal_year: int,
                registry: MinistryRegistry) -> str | UnplacedFdep:
    """The ministry code for one fdep_nr of a year's file, or why it cannot be placed."""
    if names:
        codes = {m.code if m else None for m in (registry.for_name(n, fiscal_year) for n in names)}
        if len(codes) == 1 and None not in codes:
            return codes.pop()
        if None not in codes:
            return UnplacedFdep(fdep_nr, names, f"the file's names point to {', '.join(sorted(codes))}")
        return UnplacedFdep(fdep_nr, names, f"no ministry valid in {fiscal_year} has this name or former name "
                                            f"in the registry; add it to departementer.csv")
    ministry = registry.for_fdep_nr(fdep_nr, fiscal_year)  # the file gives no name: the registry's number
    if ministry:
        return ministry.code
    return UnplacedFdep(fdep_nr, names, f"the file gives no fdep_navn and the registry has no ministry "
                                        f"with this number in {fiscal_year}")


def learn_fdep_mapping(rows: list[dict[str, object]], fiscal_year: int,
                       registry: MinistryRegistry | None = None) -> FdepMapping:
    """Each fdep_nr's ministry from the file's own fdep_navn (trimmed), matched against names and former names."""
    registry = registry or default_registry()
    names_by_nr: dict[int, dict[str, None]] = {}
    for row in rows:
        fdep_nr = _int_or_none(row.get("fdep_nr"))
        if fdep_nr is not None:
            name = _clean(row.get("fdep_navn"))
            names_by_nr.setdefault(fdep_nr, {}).update({name: None} if name else {})
    placed, not_ministries, unplaced = {}, {}, []
    for fdep_nr, names in sorted(names_by_nr.items()):
        other = registry.not_a_ministry(fdep_nr, fiscal_year)
        if other and (not names or any(normalise_name(n) == normalise_name(other.name) for n in names)):
            not_ministries[fdep_nr] = other.name
            continue
        placement = _place_fdep(fdep_nr, tuple(names), fiscal_year, registry)
        if isinstance(placement, UnplacedFdep):
            unplaced.append(placement)
        else:
            placed[fdep_nr] = placement
    return FdepMapping(fiscal_year, placed, not_ministries, tuple(unplaced))


@dataclass(frozen=True)
class ParseResult:
    items: list[CatalogueItem]
    skipped: list[str]  # one human-readable reason per row not taken
    ministries: FdepMapping | None = None  # how this year's fdep_nr were placed

    @property
    def fiscal_year(self) -> int | None:
        return self.ministries.fiscal_year if self.ministries else None


def parse_rows(records: list[Record], fiscal_year: int,
               registry: MinistryRegistry | None = None) -> ParseResult:
    """Turn records into catalogue items; rows without kap/post/fdep_nr are skipped with a reason.

    Each item's ministry comes from this year's own fdep_navn (see learn_fdep_mapping).
    """
    ministries = learn_fdep_mapping([record.values for record in records], fiscal_year, registry)
    items: dict[tuple[int, int], CatalogueItem] = {}
    skipped = []
    for record in records:
        number, row = record.number, record.values
        fdep_nr, kap, post = (_int_or_none(row.get(c)) for c in REQUIRED_COLUMNS)
        if fdep_nr is None or kap is None or post is None:
            skipped.append(f"row {number}: fdep_nr, kap_nr and post_nr must be whole numbers")
            continue
        if not (1 <= post <= 99) or not (1 <= kap <= 9999):
            skipped.append(f"row {number}: kap {kap} post {post} is out of range")
            continue
        stikkord = _clean(row.get("stikkord"))
        amount_nok = _int_or_none(row.get("beløp", row.get("belop")))
        items[(kap, post)] = CatalogueItem(
            fiscal_year=fiscal_year,
            kap=kap,
            post=post,
            ministry=ministries.placed.get(fdep_nr),
            fdep_nr=fdep_nr,
            kap_navn=_clean(row.get("kap_navn")),
            post_navn=_clean(row.get("post_navn")),
            stikkord=stikkord,
            amount_ore=amount_nok * 100 if amount_nok is not None else None,
            overslagsbevilgning=is_overslagsbevilgning(stikkord),
            kan_overfores=is_kan_overfores(stikkord),
            usable_under=parse_usable_under(stikkord, kap),
        )
    return ParseResult(items=sorted(items.values(), key=lambda i: (i.kap, i.post)), skipped=skipped,
                       ministries=ministries)


class Catalogue:
    """Lookup over loaded items, keyed by fiscal year. Empty catalogue = checks are skipped.

    A year is checked only against its own catalogue: kap/post numbers and
    their owners change between years (DFD's chapters moved from KDD in
    2024/2025), so a year with no catalogue is reported as such, never checked
    against another year's items.
    """

    def __init__(self, items: list[CatalogueItem] | None = None):
        self._items: dict[tuple[int, int, int], CatalogueItem] = {}
        for item in items or []:
            self._items[(item.fiscal_year, item.kap, item.post)] = item
        self.years = sorted({year for year, _, _ in self._items})

    def __len__(self) -> int:
        return len(self._items)

    @property
    def loaded(self) -> bool:
        return bool(self._items)

    def has_year(self, fiscal_year: int) -> bool:
        return fiscal_year in self.years

    def coverage(self, fiscal_year: int) -> str:
        """One line for status and rejections: is this year's kap/post checked, and against what."""
        if self.has_year(fiscal_year):
            return f"kap/post for {fiscal_year} checked against the {fiscal_year} budget catalogue"
        loaded = f" (loaded: {', '.join(map(str, self.years))})" if self.years else ""
        return f"no budget catalogue for {fiscal_year}{loaded}: kap/post for {fiscal_year} are not checked"

    def get(self, fiscal_year: int, kap: int, post: int) -> CatalogueItem | None:
        return self._items.get((fiscal_year, kap, post))

    def problems(self, fiscal_year: int, kap: int, post: int, ministry: str) -> list[str]:
        """Why an event may not name this kap/post for this ministry (empty list = fine or not checkable)."""
        rejection = check_post(self, fiscal_year, ministry, kap, post)
        return [rejection.reason] if rejection and rejection.refuses else []

    def pooled(self, fiscal_year: int, first: tuple[int, int], second: tuple[int, int]) -> bool:
        """True when money under one item may fund what is booked under the other."""
        if first == second:
            return True
        a = self.get(fiscal_year, *first)
        b = self.get(fiscal_year, *second)
        return bool((a and second in a.usable_under) or (b and first in b.usable_under))


class PostRejectionKind(Enum):
    UNKNOWN_POST = "unknown_post"
    ANOTHER_MINISTRYS_POST = "another_ministrys_post"
    NO_CATALOGUE_FOR_YEAR = "no_catalogue_for_year"


@dataclass(frozen=True)
class PostRejection:
    kind: PostRejectionKind
    reason: str

    @property
    def refuses(self) -> bool:
        """Unknown and other ministries' posts are refused; a year without a catalogue is only unchecked."""
        return self.kind is not PostRejectionKind.NO_CATALOGUE_FOR_YEAR


def check_post(catalogue: Catalogue, fiscal_year: int, ministry: str, kap: int, post: int) -> PostRejection | None:
    """May this ministry book money under this kap/post in this year? None = yes, as the year's catalogue says.

    NO_CATALOGUE_FOR_YEAR does not refuse (see PostRejection.refuses): without
    the year's catalogue there is nothing to check against, as with no
    catalogue at all; callers report it.
    """
    if not catalogue.has_year(fiscal_year):
        return PostRejection(PostRejectionKind.NO_CATALOGUE_FOR_YEAR, catalogue.coverage(fiscal_year))
    item = catalogue.get(fiscal_year, kap, post)
    if item is None:
        return PostRejection(PostRejectionKind.UNKNOWN_POST,
                             f"kap {kap} post {post} does not exist in the {fiscal_year} budget catalogue")
    if item.ministry != ministry:
        owner = item.ministry or f"fdep_nr {item.fdep_nr}, no ministry"
        return PostRejection(PostRejectionKind.ANOTHER_MINISTRYS_POST,
                             f"kap {kap} post {post} ({item.post_navn or item.kap_navn}) belongs to {owner}, "
                             f"not {ministry}, in the {fiscal_year} budget catalogue")
    return None


def import_catalogue(path: Path | str, given_year: int | None = None,
                     registry: MinistryRegistry | None = None) -> ParseResult:
    """The file-reading entry point: a Gul bok file's items, its fiscal year and its fdep_nr mapping.

    The year is --year or the one the file name states; there is no default.
    Raises FiscalYearError or ValueError with one line the CLI can print.
    """
    if not Path(path).is_file():
        raise UserError(f"{path}: No such file or directory" if not Path(path).exists() else f"{path}: not a file")
    fiscal_year = resolve_fiscal_year(Path(path).name, given_year)
    return parse_rows(read_rows(path), fiscal_year, registry)


# --- the catalogue on Kafka: one record per fiscal year on a compacted topic --------------------
#
# `reformspor catalogue import` publishes a year's items as one record (key: the fiscal year), so a
# re-import replaces that year whole and compaction keeps only the latest per year. budsjett and
# ingest follow the topic from the beginning; no service reads another's database for it.

# A year of the real Gul bok is ~340 kB of JSON (1 567 items in 2024), ~40 kB gzipped. Kafka's default
# limits are ~1 MB per message on the producer (librdkafka message.max.bytes, checked before
# compression) and on the broker; a year's record must stay under both, with room to spare.
CATALOGUE_MAX_BYTES = 900_000
CATALOGUE_PUBLISH_TIMEOUT_S = 30.0
# How long a service waits at start for the catalogue before it applies anything without it.
CATCH_UP_TIMEOUT_S = 20.0


class CatalogueRecordError(ValueError):
    """A record on the catalogue topic that cannot be read; the follower reports it and keeps the rest."""


@dataclass(frozen=True)
class YearCatalogue:
    """One fiscal year's catalogue as it travels on the topic."""

    fiscal_year: int
    items: tuple[CatalogueItem, ...]
    source_file: str = ""
    imported_at: str = ""  # RFC 3339, UTC


def _item_wire(item: CatalogueItem) -> dict[str, object]:
    return {"kap": item.kap, "post": item.post, "ministry": item.ministry, "fdep_nr": item.fdep_nr,
            "kap_navn": item.kap_navn, "post_navn": item.post_navn, "stikkord": item.stikkord,
            "amount_ore": item.amount_ore, "overslagsbevilgning": item.overslagsbevilgning,
            "kan_overfores": item.kan_overfores, "usable_under": sorted(item.usable_under)}


def _item_from_wire(fiscal_year: int, wire: dict) -> CatalogueItem:
    return CatalogueItem(
        fiscal_year=fiscal_year, kap=int(wire["kap"]), post=int(wire["post"]), ministry=wire.get("ministry"),
        fdep_nr=int(wire["fdep_nr"]), kap_navn=wire.get("kap_navn", ""), post_navn=wire.get("post_navn", ""),
        stikkord=wire.get("stikkord", ""), amount_ore=wire.get("amount_ore"),
        overslagsbevilgning=bool(wire.get("overslagsbevilgning")), kan_overfores=bool(wire.get("kan_overfores")),
        usable_under=frozenset((int(kap), int(post)) for kap, post in wire.get("usable_under", [])))


def catalogue_record(year: YearCatalogue) -> tuple[bytes, bytes]:
    """(key, value) of a year's record; raises UserError when it would not fit in one Kafka message."""
    value = json.dumps({"fiscal_year": year.fiscal_year, "source_file": year.source_file,
                        "imported_at": year.imported_at, "items": [_item_wire(i) for i in year.items]},
                       ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(value) > CATALOGUE_MAX_BYTES:
        raise UserError(f"the {year.fiscal_year} catalogue is {len(value)} bytes as one record; the limit is "
                        f"{CATALOGUE_MAX_BYTES} (Kafka's message size): nothing was published")
    return str(year.fiscal_year).encode("ascii"), value


def year_from_record(key: bytes | None, value: bytes | None) -> tuple[int, YearCatalogue | None]:
    """(fiscal year, its catalogue) from a record; a tombstone (no value) removes the year."""
    try:
        fiscal_year = int((key or b"").decode("ascii"))
        if value is None:
            return fiscal_year, None
        document = json.loads(value.decode("utf-8"))
        if document.get("fiscal_year") != fiscal_year:
            raise ValueError(f"key {fiscal_year} but fiscal_year {document.get('fiscal_year')!r}")
        items = tuple(_item_from_wire(fiscal_year, wire) for wire in document["items"])
        return fiscal_year, YearCatalogue(fiscal_year, items, str(document.get("source_file", "")),
                                          str(document.get("imported_at", "")))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CatalogueRecordError(f"catalogue record with key {(key or b'')[:20]!r} cannot be read: {error}") from None


def catalogue_of(years: dict[int, YearCatalogue]) -> Catalogue:
    return Catalogue([item for year in years.values() for item in year.items])


def publish_catalogue(settings: Settings, year: YearCatalogue,
                      timeout_s: float = CATALOGUE_PUBLISH_TIMEOUT_S) -> str:
    """Publish a year's catalogue as the admin principal (the topic's only writer); returns the topic.

    Waits for Kafka's acknowledgement (acks=all); raises UserError with the reason otherwise.
    """
    from confluent_kafka import Producer

    from services.shared.kafka_security import ADMIN, client_config
    from services.shared.topics import create_missing_topics, open_admin

    topic = settings.topics.catalogue
    key, value = catalogue_record(year)
    admin = open_admin(settings, timeout_s)
    try:
        create_missing_topics(admin, settings, [topic], timeout_s)
    finally:
        admin.close()
    producer = Producer({**client_config(settings, ADMIN), "client.id": "reformspor-catalogue-import",
                         "acks": "all", "enable.idempotence": True, "compression.type": "gzip",
                         "message.timeout.ms": int(timeout_s * 1000)})
    failures: list[str] = []
    producer.produce(topic, key=key, value=value,
                     on_delivery=lambda error, _message: failures.append(error.str()) if error else None)
    if producer.flush(timeout_s) or failures:
        raise UserError(f"Kafka did not take the {year.fiscal_year} catalogue on {topic}: "
                        f"{failures[0] if failures else f'no acknowledgement in {timeout_s:.0f} s'}")
    return topic


class CatalogueHolder:
    """Each fiscal year's catalogue, fed by a follower of the catalogue topic (from its beginning).

    `current` is replaced whole on every record, so readers need no lock. Nothing is committed to
    Kafka: every start reads the (compacted, small) topic again.
    """

    def __init__(self, settings: Settings, principal: str):
        self.topic = settings.topics.catalogue
        self.years: dict[int, YearCatalogue] = {}
        self.current = Catalogue()
        self.record_error: str | None = None
        # principal: the service's Kafka user; the ACLs let budsjett and ingest read the topic.
        self.follower = TopicFollower(settings, principal, self.topic, self.take, name="catalogue")

    def load(self, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
        """Follow the topic (start the follower, or start it again if it stopped); the first time, wait
        until it has read everything the topic held, so nothing is checked against a half-read catalogue."""
        first = self.follower.thread is None
        if not self.follower.start(timeout_s if first else 0.0) and first:
            log.warning("the catalogue topic %s was not read to its end within %.0f s; going on with what was "
                        "read (%s)", self.topic, timeout_s, self.follower.error or "no error")

    def stop(self) -> None:
        self.follower.stop()

    def receive(self, key: bytes | None, value: bytes | None) -> None:
        """One record: replace (or, for a tombstone, drop) its year."""
        fiscal_year, year = year_from_record(key, value)
        years = dict(self.years)
        if year is None:
            years.pop(fiscal_year, None)
        else:
            years[fiscal_year] = year
        self.years, self.current = years, catalogue_of(years)

    def take(self, record: FollowedRecord) -> None:
        try:
            self.receive(record.key, record.value)
        except CatalogueRecordError as error:  # one bad record costs that record, not the catalogue
            self.record_error = str(error)
            log.error("%s", error)

    def status(self) -> dict[str, object]:
        catalogue = self.current
        return {"loaded": catalogue.loaded, "items": len(catalogue), "fiscal_years": catalogue.years,
                "checks": "kap/post checked against the catalogue" if catalogue.loaded
                else "no catalogue loaded: kap/post checks are skipped",
                "source": self.topic, "caught_up": self.follower.caught_up.is_set(),
                "error": self.follower.error or self.record_error}


def read_catalogue(settings: Settings, principal: str, timeout_s: float = CATCH_UP_TIMEOUT_S) -> Catalogue:
    """Every year's catalogue as the topic holds it now (for a one-off reader such as `reformspor replay`)."""
    holder = CatalogueHolder(settings, principal)
    holder.load(timeout_s)
    holder.stop()
    return holder.current
