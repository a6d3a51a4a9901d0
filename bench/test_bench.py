"""Tests of the bench's own arithmetic (run with `.venv/bin/pytest bench/`; not part of `make test`).

A wrong oracle or a wrong percentile would make every number in RESULTS.md a
lie, so these are checked directly on plain data.
"""
from __future__ import annotations

import json
from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from bench.events import HOT_LINE, Oracle, Workload, generate
from bench.http_probe import metric_line_amount, parse_metrics
from bench.kafka_io import parse_consumer_performance
from bench.latency import latencies_from_observations, latency_lines, percentile, summarise
from bench.report import table
from services.shared.contract import parse_event


def test_every_generated_event_passes_the_contract_and_the_oracle_sums_them():
    oracle = Oracle()
    pairs = list(generate(Workload(3000), oracle))
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for key, value in pairs:
        event = parse_event(json.loads(value))
        assert event.key == key.decode()
        sums[event.key][event.kind] += event.data.amount_ore
    assert oracle.events == 3000
    for line, totals in oracle.lines.items():
        assert sums[line]["bevilget"] == totals.bevilget_ore
        assert sums[line]["forpliktet"] == totals.forpliktet_ore
        assert sums[line]["utbetalt"] == totals.utbetalt_ore


def test_the_workload_has_a_hot_line_and_unique_ids():
    pairs = list(generate(Workload(5000)))
    ids = [json.loads(value)["id"] for _, value in pairs]
    assert len(set(ids)) == len(ids)
    hot = sum(1 for key, _ in pairs if key.decode() == HOT_LINE)
    assert 0.07 * 5000 < hot < 0.13 * 5000


def test_latency_counts_from_the_first_poll_that_covers_each_event():
    scheduled = [0.0, 0.1, 0.2, 0.3]
    observations = [(0.05, 0), (0.15, 1), (0.35, 3), (0.5, 4)]
    latencies = latencies_from_observations(scheduled, observations)
    assert [round(x, 3) for x in latencies] == [0.15, 0.25, 0.15, 0.2]


def test_an_event_never_seen_has_no_latency_and_is_reported_missing():
    latencies = latencies_from_observations([0.0, 1.0], [(0.5, 1)])
    assert latencies[1] is None
    assert summarise(latencies)["visible"] == 1


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1, max_size=200),
       st.floats(min_value=1, max_value=100))
def test_percentile_is_an_observed_value_and_monotone(values, q):
    p = percentile(values, q)
    assert p in values
    assert percentile(values, 100) == max(values)
    assert p <= percentile(values, min(100, q + 1))


def test_one_latency_line_per_partition():
    from aiokafka.partitioner import DefaultPartitioner

    lines = latency_lines(4, prefix="x")
    partitioner = DefaultPartitioner()
    assert sorted(partitioner(line.encode(), [0, 1, 2, 3], [0, 1, 2, 3]) for line in lines) == [0, 1, 2, 3]


def test_consumer_performance_output_is_parsed():
    output = ("WARNING: something\nstart.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
              "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n"
              "2026-11-28 00:19:59:333, 2026-11-28 00:20:00:516, 13.2275, 11.1813, 50000, 42265.4269, 568, 615, "
              "21.5082, 81300.813\n")
    parsed = parse_consumer_performance(output)
    assert parsed["data.consumed.in.nMsg"] == 50000
    assert parsed["fetch.nMsg.sec"] == 81300.813


def test_metric_amount_sums_the_cells_of_one_line_only():
    text = "\n".join([
        "# HELP reformspor_budsjett_bevilget_ore bevilget",
        'reformspor_budsjett_bevilget_ore{line="a",ministry="BFD",phase="utredning"} 300.0',
        'reformspor_budsjett_bevilget_ore{line="a",ministry="KD",phase="utvikling"} 200.0',
        'reformspor_budsjett_bevilget_ore{line="b",ministry="KD",phase="utvikling"} 7.0',
        'reformspor_budsjett_utbetalt_ore{line="a",ministry="KD",phase="utvikling"} 99.0',
    ])
    samples = parse_metrics(text)
    assert metric_line_amount(samples, "reformspor_budsjett_bevilget_ore", "a") == 500.0
    assert metric_line_amount(samples, "reformspor_budsjett_bevilget_ore", "c") is None


def test_table_renders_partial_results_and_names_skipped_phases():
    results = {"events": 10, "machine": {"load_at_start": {"cpus": 2, "loadavg_1m": 1.0}},
               "phases": {"python_ceiling": {"events_per_s": 1000.0, "cpu_s_per_million": 5.0, "peak_rss_mb": 60}},
               "skipped": {"replay": "no replay command"}}
    text = table(results)
    assert "Python ceiling" in text and "100 %" in text
    assert "skipped replay: no replay command" in text


def test_budsjett_is_reported_against_both_the_python_and_the_faust_ceiling():
    results = {"events": 10, "machine": {},
               "phases": {"python_ceiling": {"events_per_s": 10000.0, "cpu_s_per_million": 5.0},
                          "faust_ceiling": {"events_per_s": 2000.0, "cpu_s_per_million": 400.0, "seconds": 5.0,
                                            "seconds_incl_startup": 7.0},
                          "budsjett_1_worker": {"events": 10, "events_per_s": 1000.0, "cpu_s_per_million": 900.0, "seconds": 10.0,
                                                "startup_s": 3.0, "peak_rss_mb": {"budsjett": 100}}}}
    text = table(results)
    faust_row = next(line for line in text.splitlines() if line.startswith("| Faust ceiling"))
    assert "| 2 000 |" in faust_row and "| 20 % |" in faust_row
    budsjett_row = next(line for line in text.splitlines() if line.startswith("| budsjett end-to-end, 1 worker"))
    assert "| 10 % |" in budsjett_row and "50 % of the Faust ceiling" in budsjett_row


def test_each_line_gets_its_own_reform_and_every_completed_milestone_is_waited_for():
    from datetime import datetime, timezone

    from bench.milepael_bench import reform_events_for

    events, completed = reform_events_for(["l1", "l2"], datetime(2026, 11, 28, 12, tzinfo=timezone.utc))
    assert len(completed) == 2 and all(count > 0 for count in completed.values())
    assert len({e["id"] for e in events}) == len(events), "two reforms must not share event ids"
    for event in events:
        parse_event(event)  # every event passes the contract


def test_every_services_peak_memory_is_in_the_table():
    text = table({"events": 10, "phases": {
        "milepael": {"reforms": 51, "events": 900, "seconds": 4.2, "cpu_s": 3.0, "peak_rss_mb": 91.0},
        "ingest": {"peak_rss_mb": 77.0, "batch_100": {"concurrency": 4, "events_per_s": 1.0, "p50_ms": 1,
                                                      "p99_ms": 2, "statuses": {"202": 1}}}}, "skipped": {}})
    assert "milepael: 51 reforms" in text and "peak RSS 91 MB" in text
    assert "ingest peak RSS 77 MB" in text


def _full_run(**overrides) -> dict:
    """A 1 M-event run's phases as bench/run.py records them (only the fields the report reads)."""
    latency_summary = {"events": 30000, "visible": 30000, "p50_ms": 90.0, "p99_ms": 300.0, "max_ms": 400.0}
    phases = {
        "python_ceiling": {"events_per_s": 100_000.0, "cpu_s_per_million": 7.0},
        "quix_ceiling": {"events_per_s": 25_000.0, "cpu_s_per_million": 40.0, "seconds": 40.0,
                         "seconds_incl_startup": 43.0, "commit_interval_s": 0.1, "final_commit_and_close_s": 0.2},
        "budsjett_1_worker": {"events": 1_000_000, "events_per_s": 12_000.0, "cpu_s_per_million": 90.0,
                              "seconds": 83.3, "startup_s": 3.0, "peak_rss_mb": {"budsjett": 250.0},
                              "memory_at_milestone": {"events_committed": 200_100, "rss_mb": {"budsjett": 230.0},
                                                      "peak_rss_mb": {"budsjett": 240.0}}},
        "budsjett_2_workers": {"events": 1_000_000, "events_per_s": 21_000.0, "cpu_s_per_million": 95.0,
                               "seconds": 47.6, "startup_s": 3.0, "peak_rss_mb": {"budsjett": 200.0, "budsjett-2": 190.0}},
        "replay": {"events": 1_000_000, "seconds": 25.0, "events_per_s": 40_000.0, "cpu_s_per_million": 20.0,
                   "peak_rss_mb": 200.0, "lines_wrong": []},
        "latency": [{"offered_rate_per_s": 1000.0, "achieved_send_rate_per_s": 990.0,
                     "http": latency_summary, "metrics": {**latency_summary, "p99_ms": 650.0}}],
    }
    phases.update(overrides)
    return {"events": 1_000_000, "machine": {}, "phases": phases, "skipped": {}}


def _verdicts(results: dict) -> dict[str, str]:
    from bench.report import target_checks

    return {check.target: check.verdict.value for check in target_checks(results)}


def test_every_target_of_issue_12_is_printed_with_met_or_missed():
    from bench.report import table

    text = table(_full_run())
    targets = text.split("Against the targets of issue 12:")[1]
    rows = [line for line in targets.splitlines() if line.startswith("| ") and "verdict" not in line]
    assert len(rows) == 8
    assert "| budsjett end-to-end, 1 worker ≥ 10 000 events/s | 12 000 events/s | **met** |" in rows
    assert any(row.startswith("| budsjett ≥ 40 % of the Quix ceiling") and "48 %" in row and "**met**" in row
               for row in rows)
    assert any(row.startswith("| p99 publish→visible via /metrics") and "p99 650 ms" in row and "**missed**" in row
               for row in rows)
    assert any(row.startswith("| two workers on four partitions") and "1.75×" in row and "**met**" in row
               for row in rows)


def test_memory_that_grows_with_the_events_misses_the_flat_target():
    one = _full_run()["phases"]["budsjett_1_worker"]
    verdicts = _verdicts(_full_run(budsjett_1_worker={**one, "peak_rss_mb": {"budsjett": 420.0}}))
    assert verdicts["budsjett peak RSS ≤ 300 MB after 1 000 000 events"] == "missed"
    assert verdicts["budsjett memory flat as events grow (end peak ≤ 1.25× the first reading)"] == "missed"
    assert _verdicts(_full_run())["budsjett memory flat as events grow (end peak ≤ 1.25× the first reading)"] == "met"


def test_a_short_run_does_not_judge_the_one_million_event_targets():
    short = _full_run()
    short["phases"]["budsjett_1_worker"] = {**short["phases"]["budsjett_1_worker"], "events": 50_000}
    short["phases"]["replay"] = {**short["phases"]["replay"], "events": 50_000, "seconds": 2.0}
    verdicts = _verdicts(short)
    assert verdicts["budsjett peak RSS ≤ 300 MB after 1 000 000 events"] == "not judged"
    assert verdicts["replay of 1 000 000 events ≤ 30 s, every line right"] == "not judged"


def test_a_wrong_replay_misses_however_fast_or_short():
    results = _full_run(replay={"events": 50_000, "seconds": 1.0, "events_per_s": 50_000.0,
                                "cpu_s_per_million": 1.0, "peak_rss_mb": 1.0, "lines_wrong": ["bench-001"]})
    assert _verdicts(results)["replay of 1 000 000 events ≤ 30 s, every line right"] == "missed"


def test_latency_with_events_never_seen_misses_the_target():
    summary = {"events": 100, "visible": 99, "p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 3.0}
    results = _full_run(latency=[{"offered_rate_per_s": 1000.0, "achieved_send_rate_per_s": 1000.0,
                                  "http": summary, "metrics": summary}])
    assert _verdicts(results)["p99 publish→visible via HTTP ≤ 500 ms at 1 000 events/s"] == "missed"


def test_budsjett_is_reported_against_the_quix_ceiling_and_its_memory_at_200k():
    from bench.report import table

    row = next(line for line in table(_full_run()).splitlines()
               if line.startswith("| budsjett end-to-end, 1 worker"))
    assert "48 % of the Quix ceiling" in row and "240 MB at 200 100 events committed" in row


def test_memory_is_read_first_at_200k_of_a_million_and_at_a_fifth_of_a_short_run():
    from bench.budsjett_bench import memory_milestone

    assert memory_milestone(1_000_000) == 200_000
    assert memory_milestone(50_000) == 10_000
