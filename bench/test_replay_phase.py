"""The bench's replay phase on one published topic (run with `.venv/bin/pytest bench/`)."""
from __future__ import annotations

from pathlib import Path

import bench.replay
from bench.run import parse_args, replay_phase


def test_several_replay_runs_report_the_median_and_list_every_run(monkeypatch, tmp_path: Path):
    seconds = iter([50.0, 30.0, 40.0])

    def fake_run(settings, oracle, timeout_s, tmp):
        assert tmp.is_dir()  # each run writes its own read model and log
        return {"events": 1_000_000, "seconds": next(seconds), "cpu_s": 80.0, "peak_rss_mb": 300.0,
                "lines_wrong": [], "events_per_s": 0.0}

    monkeypatch.setattr(bench.replay, "run_replay", fake_run)
    result = replay_phase(None, None, parse_args(["--replay-runs", "3"]), tmp_path)

    assert result["seconds"] == 40.0
    assert [run["seconds"] for run in result["runs"]] == [50.0, 30.0, 40.0]
    assert len({path.name for path in tmp_path.iterdir()}) == 3
