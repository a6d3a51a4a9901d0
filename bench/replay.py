"""Replay: rebuild every total from the log with `reformspor replay`, timed, with its peak RSS.

The command runs as its own process (what a user types), into a fresh SQLite
read model; the bench then reads that read model's cells and checks every
line against the oracle, so a fast but wrong replay does not count.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from bench.events import Oracle
from bench.procstat import run_measured
from services.shared.config import Settings


def run_replay(settings: Settings, oracle: Oracle, timeout_s: float, tmp: Path) -> dict:
    db_url = f"sqlite:///{tmp / 'replay.db'}"
    command = [sys.executable, "-m", "services.cli", "replay", "--db-url", db_url]
    measured = run_measured(command, env=settings.to_env(), timeout_s=timeout_s, log_path=tmp / "replay.log")
    if measured["returncode"] != 0:
        raise RuntimeError(f"reformspor replay failed ({measured['returncode']}); see {tmp / 'replay.log'}")
    events = oracle.events
    return {
        "command": "reformspor replay --db-url sqlite:///…",
        "events": events,
        "seconds": round(measured["seconds"], 2),
        "events_per_s": round(events / measured["seconds"], 1),
        "cpu_s": round(measured["cpu_s"], 2),
        "cpu_s_per_million": round(measured["cpu_s"] / events * 1_000_000, 1),
        "peak_rss_mb": round(measured["peak_rss_mb"], 1),
        "lines_wrong": lines_wrong(db_url, oracle),
        # Each replay process's own account (rules CPU s, read-model write s), from its log.
        "processes": [line.strip() for line in (tmp / "replay.log").read_text().splitlines() if "CPU s" in line],
    }


def lines_wrong(db_url: str, oracle: Oracle) -> list[str]:
    """Lines whose rebuilt read-model totals differ from the oracle (only the bench's own lines)."""
    from services.budsjett.readmodel import ReadModel

    model = ReadModel(db_url)
    try:
        sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for cell in model.cells():
            for name in ("bevilget_ore", "forpliktet_ore", "utbetalt_ore"):
                sums[cell["line_id"]][name] += int(cell[name])
    finally:
        model.close()
    return sorted(line for line, totals in oracle.lines.items()
                  if any(sums[line][name] != value for name, value in totals.as_dict().items() if name != "events"))
