"""The budget catalogue: Finansdepartementet's Gul bok items (kap/post) and their rules.

`read_rows` reads an xlsx or CSV file through the shared tabular reader (the
one `reformspor publish` uses), `parse_rows` turns its records into
`CatalogueItem`s, and `Catalogue` answers the
questions the ledger asks (does this kap/post exist, which ministry owns it,
may it be exceeded, which posts pool). Storing items is the read model's job.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from services.shared.ministries import MinistryRegistry, default_registry
from services.shared.tabular import Record, read_table, normalize_decimal

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


@dataclass(frozen=True)
class ParseResult:
    items: list[CatalogueItem]
    skipped: list[str]  # one human-readable reason per row not taken


def parse_rows(records: list[Record], fiscal_year: int,
               registry: MinistryRegistry | None = None) -> ParseResult:
    """Turn records into catalogue items; rows without kap/post/fdep_nr are skipped with a reason."""
    registry = registry or default_registry()
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
        lowered = stikkord.lower()
        ministry = registry.for_fdep_nr(fdep_nr, fiscal_year)
        amount_nok = _int_or_none(row.get("beløp", row.get("belop")))
        items[(kap, post)] = CatalogueItem(
            fiscal_year=fiscal_year,
            kap=kap,
            post=post,
            ministry=ministry.code if ministry else None,
            fdep_nr=fdep_nr,
            kap_navn=_clean(row.get("kap_navn")),
            post_navn=_clean(row.get("post_navn")),
            stikkord=stikkord,
            amount_ore=amount_nok * 100 if amount_nok is not None else None,
            overslagsbevilgning="overslagsbevilgning" in lowered,
            kan_overfores="kan overføres" in lowered or "kan overfores" in lowered,
            usable_under=parse_usable_under(stikkord, kap),
        )
    return ParseResult(items=sorted(items.values(), key=lambda i: (i.kap, i.post)), skipped=skipped)


class Catalogue:
    """Lookup over loaded items, by fiscal year. Empty catalogue = checks are skipped."""

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

    def year_for(self, fiscal_year: int) -> int | None:
        """The catalogue year that governs an event: its own year, else the latest earlier one.

        Kap/post numbering is stable from year to year, so the latest earlier
        catalogue is the best check available until the year's own is loaded.
        """
        candidates = [year for year in self.years if year <= fiscal_year]
        return candidates[-1] if candidates else None

    def get(self, fiscal_year: int, kap: int, post: int) -> CatalogueItem | None:
        year = self.year_for(fiscal_year)
        return None if year is None else self._items.get((year, kap, post))

    def problems(self, fiscal_year: int, kap: int, post: int, ministry: str) -> list[str]:
        """Why an event may not name this kap/post for this ministry (empty list = fine)."""
        year = self.year_for(fiscal_year)
        if year is None:
            return []  # no catalogue for this year or earlier: nothing to check against
        item = self._items.get((year, kap, post))
        if item is None:
            return [f"kap {kap} post {post} does not exist in the {year} budget catalogue"]
        if item.ministry != ministry:
            owner = item.ministry or f"fdep_nr {item.fdep_nr}"
            return [f"kap {kap} post {post} ({item.post_navn or item.kap_navn}) belongs to {owner}, not {ministry}"]
        return []

    def pooled(self, fiscal_year: int, first: tuple[int, int], second: tuple[int, int]) -> bool:
        """True when money under one item may fund what is booked under the other."""
        if first == second:
            return True
        a = self.get(fiscal_year, *first)
        b = self.get(fiscal_year, *second)
        return bool((a and second in a.usable_under) or (b and first in b.usable_under))
