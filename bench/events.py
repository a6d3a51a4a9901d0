"""The benchmark's workload: a realistic mix of budget events, and its oracle.

Pure functions on plain data (no I/O): `generate` yields (key, value-bytes)
pairs in publish order; `oracle` sums the same events per line, so the bench
can tell when budsjett has applied every one of them.

Mix: shared lines funded by 5 ministries in 3 phases; bevilget (large
contributions), forpliktet (commitments, each its own id) and utbetalt
(payments, not against a commitment so the oracle is a plain sum). One hot
line takes a fixed share of all traffic, as a flagship programme would.
"""
from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator

from services.shared.contract import PHASES, make_event

MINISTRIES = ("BFD", "KD", "HOD", "AID", "JD")
# Real 2024 chapter/post of each ministry's contribution (kap, post).
KAP_POST = {"BFD": (846, 21), "KD": (226, 21), "HOD": (765, 21), "AID": (621, 21), "JD": (400, 21)}
KIND_WEIGHTS = (("bevilget", 20), ("forpliktet", 30), ("utbetalt", 50))
HOT_LINE = "bench-hot"
FISCAL_YEAR = 2026
AMOUNT_FIELD = {"bevilget": "bevilget_ore", "forpliktet": "forpliktet_ore", "utbetalt": "utbetalt_ore"}


@dataclass(frozen=True)
class Workload:
    events: int
    lines: int = 50
    hot_share: float = 0.10
    seed: int = 7
    prefix: str = "bench"

    def line_ids(self) -> list[str]:
        return [f"{self.prefix}-{n:03d}" for n in range(self.lines)] + [HOT_LINE]


@dataclass
class LineTotals:
    bevilget_ore: int = 0
    forpliktet_ore: int = 0
    utbetalt_ore: int = 0
    events: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"bevilget_ore": self.bevilget_ore, "forpliktet_ore": self.forpliktet_ore,
                "utbetalt_ore": self.utbetalt_ore, "events": self.events}


@dataclass
class Oracle:
    """Expected totals per line, summed from the events the bench published."""

    lines: dict[str, LineTotals] = field(default_factory=lambda: defaultdict(LineTotals))

    def add(self, line_id: str, kind: str, amount_ore: int) -> None:
        totals = self.lines[line_id]
        setattr(totals, AMOUNT_FIELD[kind], getattr(totals, AMOUNT_FIELD[kind]) + amount_ore)
        totals.events += 1

    @property
    def events(self) -> int:
        return sum(t.events for t in self.lines.values())


def _nok(ore: int) -> str:
    return f"{ore // 100}.{ore % 100:02d}"


def generate(workload: Workload, oracle: Oracle | None = None,
             start: datetime | None = None) -> Iterator[tuple[bytes, bytes]]:
    """Yield (key, value) for `workload.events` events; optionally fill `oracle`."""
    rng = random.Random(workload.seed)
    start = start or datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)
    lines = workload.line_ids()[:-1]
    kinds = [k for k, _ in KIND_WEIGHTS]
    weights = [w for _, w in KIND_WEIGHTS]
    run = f"{workload.prefix}-{workload.seed}"
    for n in range(workload.events):
        line_id = HOT_LINE if rng.random() < workload.hot_share else lines[rng.randrange(len(lines))]
        ministry = MINISTRIES[rng.randrange(len(MINISTRIES))]
        phase = PHASES[rng.randrange(len(PHASES))]
        kind = rng.choices(kinds, weights)[0]
        if kind == "bevilget":
            amount_ore = rng.randrange(10_000, 5_000_000) * 100  # 10 k – 5 M NOK, whole kroner
            kap, post = KAP_POST[ministry]
            data = {"line_id": line_id, "ministry": ministry, "phase": phase, "amount_nok": _nok(amount_ore),
                    "kap": kap, "post": post, "fiscal_year": FISCAL_YEAR}
        elif kind == "forpliktet":
            amount_ore = rng.randrange(10_000, 20_000_000)
            data = {"line_id": line_id, "ministry": ministry, "phase": phase, "commitment_id": f"{run}-K{n}",
                    "amount_nok": _nok(amount_ore), "fiscal_year": FISCAL_YEAR}
        else:
            amount_ore = rng.randrange(100, 5_000_000)
            data = {"line_id": line_id, "ministry": ministry, "phase": phase, "amount_nok": _nok(amount_ore),
                    "fiscal_year": FISCAL_YEAR}
        event = make_event(kind, ministry, data, f"{run}-{n}", start + timedelta(seconds=n))
        if oracle is not None:
            oracle.add(line_id, kind, amount_ore)
        yield line_id.encode(), json.dumps(event, separators=(",", ":")).encode()


def single_event(line_id: str, n: int, amount_ore: int, run: str, when: datetime,
                 ministry: str = "BFD", phase: str = "utredning") -> dict:
    """One bevilget event (used by the latency and ingest phases, where amounts encode a count)."""
    kap, post = KAP_POST[ministry]
    return make_event("bevilget", ministry, {"line_id": line_id, "ministry": ministry, "phase": phase,
                                             "amount_nok": _nok(amount_ore), "kap": kap, "post": post,
                                             "fiscal_year": FISCAL_YEAR}, f"{run}-{n}", when)
