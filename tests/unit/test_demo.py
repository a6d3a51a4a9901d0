"""`make demo` twice: the second run sends the same events and says nothing new was published."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from services.localstack.demo import budget_scenario, outcome_line, scenario_anchor


def test_a_second_run_publishes_identical_events(tmp_path):
    first_now = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
    first = budget_scenario(scenario_anchor(tmp_path, first_now))
    later = budget_scenario(scenario_anchor(tmp_path, first_now + timedelta(days=3, minutes=7)))
    assert later == first  # same ids, same times, same content: ingest answers duplicate, never conflict


def test_the_summary_says_a_rerun_sent_nothing_new():
    first_run = outcome_line({"accepted": 17, "duplicate": 1, "rejected": 1}, expected_duplicates=1)
    assert first_run == "  17 accepted, 1 duplicate, 1 rejected"
    rerun = outcome_line({"duplicate": 18, "rejected": 1}, expected_duplicates=1)
    assert rerun == "  already published on this stack: nothing new was sent (18 duplicate, 1 rejected)"
