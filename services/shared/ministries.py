"""The ministry registry: short codes (BFD, KD, …) tied to fdep_nr per fiscal year, as data.

Loaded from a CSV (the packaged default or REFORMSPOR_MINISTRY_REGISTRY) so a
new, merged or renamed ministry is an edit, not a release. A code may have
several rows when its departement number changed: each row says which fdep_nr
the ministry had in Finansdepartementet's budget files for a range of fiscal
years (an empty fdep_nr: the ministry existed but had no number of its own that
year, as DFD in the 2024 Gul bok). A row of kind `not_a_ministry` names an
fdep_nr that the budget files use for something else ("Ymse").
"""
from __future__ import annotations

import csv
import io
import os
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

MINISTRY_KIND = "ministry"
NOT_A_MINISTRY_KIND = "not_a_ministry"


def normalise_name(name: str) -> str:
    """Names as the budget files spell them compare equal: NFC, case-folded, one space, trimmed."""
    return " ".join(unicodedata.normalize("NFC", name or "").casefold().split())


def _in_range(fiscal_year: int | None, from_year: int | None, to_year: int | None) -> bool:
    if fiscal_year is None:
        return True
    return (from_year is None or fiscal_year >= from_year) and (to_year is None or fiscal_year <= to_year)


@dataclass(frozen=True)
class FdepPeriod:
    """The departement number a ministry had in the budget files for fiscal years from_year..to_year."""

    fdep_nr: int | None
    from_year: int | None
    to_year: int | None

    def covers(self, fiscal_year: int | None) -> bool:
        return _in_range(fiscal_year, self.from_year, self.to_year)


@dataclass(frozen=True)
class Ministry:
    code: str
    name: str
    former_names: tuple[str, ...]
    periods: tuple[FdepPeriod, ...]  # sorted by from_year; the ministry exists in their union

    @property
    def valid_from_year(self) -> int | None:
        starts = [p.from_year for p in self.periods]
        return None if None in starts else min(starts)

    @property
    def valid_to_year(self) -> int | None:
        ends = [p.to_year for p in self.periods]
        return None if None in ends else max(ends)

    def valid_in(self, fiscal_year: int | None) -> bool:
        return any(p.covers(fiscal_year) for p in self.periods)

    def fdep_nr_in(self, fiscal_year: int) -> int | None:
        """The ministry's departement number in that year's budget files (None: none of its own)."""
        return next((p.fdep_nr for p in self.periods if p.covers(fiscal_year)), None)

    def known_as(self, name: str) -> bool:
        wanted = normalise_name(name)
        return any(normalise_name(n) == wanted for n in (self.name, *self.former_names))


@dataclass(frozen=True)
class NotAMinistry:
    """An fdep_nr the budget files use for items no ministry owns (fdep_nr 23 "Ymse")."""

    fdep_nr: int
    name: str
    from_year: int | None
    to_year: int | None

    def matches(self, fdep_nr: int, fiscal_year: int) -> bool:
        return fdep_nr == self.fdep_nr and _in_range(fiscal_year, self.from_year, self.to_year)


class RegistryError(ValueError):
    """The registry CSV is inconsistent; the message is one line naming the row."""


class MinistryRegistry:
    def __init__(self, ministries: list[Ministry], not_ministries: list[NotAMinistry] | None = None):
        self._by_code = {ministry.code: ministry for ministry in ministries}
        self.not_ministries = tuple(not_ministries or ())

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str) -> Ministry | None:
        return self._by_code.get(code)

    def codes(self) -> list[str]:
        return sorted(self._by_code)

    def for_fdep_nr(self, fdep_nr: int, fiscal_year: int | None = None) -> Ministry | None:
        """The ministry that had a departement number in a given fiscal year (None: none or ambiguous)."""
        candidates = [m for m in self._by_code.values()
                      if any(p.fdep_nr == fdep_nr and p.covers(fiscal_year) for p in m.periods)]
        return candidates[0] if len(candidates) == 1 else None

    def for_name(self, name: str, fiscal_year: int) -> Ministry | None:
        """The ministry valid in that year known by this name or a former name (None: none or ambiguous).

        The year decides between a renamed ministry's old and new code: the 2024
        Gul bok, printed before the rename, calls fdep_nr 18 "Olje- og
        energidepartementet", which in 2024 is ED's former name.
        """
        candidates = [m for m in self._by_code.values() if m.valid_in(fiscal_year) and m.known_as(name)]
        return candidates[0] if len(candidates) == 1 else None

    def not_a_ministry(self, fdep_nr: int, fiscal_year: int) -> NotAMinistry | None:
        return next((n for n in self.not_ministries if n.matches(fdep_nr, fiscal_year)), None)

    @classmethod
    def from_csv_text(cls, text: str) -> "MinistryRegistry":
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        rows_by_code: dict[str, list[dict[str, str]]] = {}
        not_ministries = []
        for number, row in enumerate(csv.DictReader(io.StringIO("\n".join(lines))), start=2):
            row = {key: (value or "").strip() for key, value in row.items() if key}
            kind = row.get("kind") or MINISTRY_KIND
            if kind == NOT_A_MINISTRY_KIND:
                not_ministries.append(NotAMinistry(_required_int(row, "fdep_nr", number), row["name"],
                                                   _optional_int(row, "valid_from", number),
                                                   _optional_int(row, "valid_to", number)))
            elif kind == MINISTRY_KIND and row.get("code"):
                rows_by_code.setdefault(row["code"].upper(), []).append({**row, "_row": str(number)})
            else:
                raise RegistryError(f"registry row {number}: a ministry needs a code, and kind is "
                                    f"{MINISTRY_KIND} or {NOT_A_MINISTRY_KIND} (got {kind!r})")
        return cls([_ministry(code, rows) for code, rows in rows_by_code.items()], not_ministries)


def _optional_int(row: dict[str, str], name: str, number: int) -> int | None:
    value = row.get(name) or ""
    if not value:
        return None
    if not value.isdigit():
        raise RegistryError(f"registry row {number}: {name} must be a whole number, got {value!r}")
    return int(value)


def _required_int(row: dict[str, str], name: str, number: int) -> int:
    value = _optional_int(row, name, number)
    if value is None:
        raise RegistryError(f"registry row {number}: {name} is required")
    return value


def _first_year(row: dict[str, str]) -> int:
    value = row.get("valid_from") or ""
    return int(value) if value.isdigit() else -1  # an open start sorts first


def _ministry(code: str, rows: list[dict[str, str]]) -> Ministry:
    """One ministry from its rows: one row per range of years with the same fdep_nr; the latest row names it."""
    rows = sorted(rows, key=_first_year)
    periods = [FdepPeriod(_optional_int(row, "fdep_nr", int(row["_row"])),
                          _optional_int(row, "valid_from", int(row["_row"])),
                          _optional_int(row, "valid_to", int(row["_row"]))) for row in rows]
    for earlier, later in zip(periods, periods[1:]):
        if earlier.to_year is None or later.from_year is None or earlier.to_year >= later.from_year:
            raise RegistryError(f"registry: {code}'s rows overlap in years ({earlier.from_year}–{earlier.to_year} "
                                f"and {later.from_year}–{later.to_year}); give each row its own range")
    current = rows[-1]["name"]
    former = [n.strip() for row in rows for n in row.get("former_names", "").split(";") if n.strip()]
    others = tuple(dict.fromkeys(n for n in [*former, *(row["name"] for row in rows)] if n != current))
    return Ministry(code=code, name=current, former_names=others, periods=tuple(periods))


@lru_cache(maxsize=1)
def default_registry() -> MinistryRegistry:
    override = os.environ.get("REFORMSPOR_MINISTRY_REGISTRY")
    if override:
        return MinistryRegistry.from_csv_text(Path(override).read_text(encoding="utf-8"))
    text = resources.files("services.shared").joinpath("data/departementer.csv").read_text(encoding="utf-8")
    return MinistryRegistry.from_csv_text(text)
