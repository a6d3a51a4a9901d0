"""Replay: rebuild every total from the log with `reformspor replay`, timed, with its peak RSS."""
from __future__ import annotations

import sys
from pathlib import Path

from bench.events import Oracle
from bench.procstat import run_measured
from services.shared.config import Settings


def run_replay(settings: Settings, oracle: Oracle, timeout_s: float, tmp: Path) -> dict:
    command = [sys.executable, "-m", "services.cli", "replay"]
    measured = run_measured(command, env=settings.to_env(), timeout_s=timeout_s, log_path=tmp / "replay.log")
    if measured["returncode"] != 0:
        raise RuntimeError(f"reformspor replay failed ({measured['returncode']}); see {tmp / 'replay.log'}")
    events = oracle.events
    return {
        "command": "reformspor replay",
        "events": events,
        "seconds": round(measured["seconds"], 2),
        "events_per_s": round(events / measured["seconds"], 1),
        "cpu_s": round(measured["cpu_s"], 2),
        "cpu_s_per_million": round(measured["cpu_s"] / events * 1_000_000, 1),
        "peak_rss_mb": round(measured["peak_rss_mb"], 1),
        "output_tail": measured["stdout"][-500:],
    }
