"""The ministry registry: short codes (BFD, KD, …) tied to fdep_nr, as data.

Loaded from a CSV (the packaged default or REFORMSPOR_MINISTRY_REGISTRY) so a
new, merged or renamed ministry is an edit, not a release.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Ministry:
    code: str
    fdep_nr: int | None
    name: str
    valid_from_year: int | None
    valid_to_year: int | None
    former_names: tuple[str, ...]

    def valid_in(self, fiscal_year: int | None) -> bool:
        if fiscal_year is None:
            return True
        if self.valid_from_year is not None and fiscal_year < self.valid_from_year:
            return False
        if self.valid_to_year is not None and fiscal_year > self.valid_to_year:
            return False
        return True


class MinistryRegistry:
    def __init__(self, ministries: list[Ministry]):
        self._by_code = {ministry.code: ministry for ministry in ministries}

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str) -> Ministry | None:
        return self._by_code.get(code)

    def codes(self) -> list[str]:
        return sorted(self._by_code)

    def for_fdep_nr(self, fdep_nr: int, fiscal_year: int | None = None) -> Ministry | None:
        """The ministry that owned a departement number in a given fiscal year."""
        candidates = [m for m in self._by_code.values() if m.fdep_nr == fdep_nr and m.valid_in(fiscal_year)]
        return candidates[0] if len(candidates) == 1 else None

    @classmethod
    def from_csv_text(cls, text: str) -> "MinistryRegistry":
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        ministries = []
        for row in csv.DictReader(io.StringIO("\n".join(lines))):
            def optional_int(name: str) -> int | None:
                value = (row.get(name) or "").strip()
                return int(value) if value else None

            ministries.append(
                Ministry(
                    code=row["code"].strip().upper(),
                    fdep_nr=optional_int("fdep_nr"),
                    name=row["name"].strip(),
                    valid_from_year=optional_int("valid_from"),
                    valid_to_year=optional_int("valid_to"),
                    former_names=tuple(n.strip() for n in (row.get("former_names") or "").split(";") if n.strip()),
                )
            )
        return cls(ministries)


@lru_cache(maxsize=1)
def default_registry() -> MinistryRegistry:
    override = os.environ.get("REFORMSPOR_MINISTRY_REGISTRY")
    if override:
        return MinistryRegistry.from_csv_text(Path(override).read_text(encoding="utf-8"))
    text = resources.files("services.shared").joinpath("data/departementer.csv").read_text(encoding="utf-8")
    return MinistryRegistry.from_csv_text(text)
