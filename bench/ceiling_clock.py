"""What the ceilings share: a clock from their first message to their last, and their result.

Each ceiling runs as its own process, so the CPU it reads (utime + stime of
the whole process, every thread) is its own. Start-up (group join, topic
metadata) is reported apart from the rate, which runs first message → last.
"""
from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CeilingClock:
    started_at: float = field(default_factory=time.perf_counter)
    first_at: float | None = None
    first_cpu_s: float = 0.0

    def first_message(self) -> None:
        """Call on every message (or batch); only the first call starts the clock."""
        if self.first_at is None:
            self.first_at, self.first_cpu_s = time.perf_counter(), cpu_s()

    def result(self, events: int, sums: dict[str, dict[str, int]]) -> dict:
        """The measurement up to now: rate and CPU from the first message, and the per-line sums."""
        done_at, done_cpu_s = time.perf_counter(), cpu_s()
        first_at = self.first_at if self.first_at is not None else done_at
        first_cpu_s = self.first_cpu_s if self.first_at is not None else done_cpu_s
        seconds = max(done_at - first_at, 1e-9)
        return {
            "events": events,
            "seconds": seconds,
            "seconds_incl_startup": done_at - self.started_at,
            "events_per_s": events / seconds,
            "cpu_s": done_cpu_s - first_cpu_s,
            "cpu_s_per_million": (done_cpu_s - first_cpu_s) / max(events, 1) * 1_000_000,
            "sums": {line: dict(kinds) for line, kinds in sums.items()},
        }


def parse_ceiling_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line every ceiling process takes: which topic, how many events, where to write."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--topic", required=True, help="the full topic name to read")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)
