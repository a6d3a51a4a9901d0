"""The results table and the targets of issue 12 (Markdown, so the same text goes into RESULTS.md and the README)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# Issue 12's targets, on this 2-core machine, in one run.
TARGET_BUDSJETT_EVENTS_PER_S = 10_000
TARGET_SHARE_OF_QUIX_CEILING = 0.40
TARGET_PEAK_RSS_MB = 300
TARGET_RSS_AT_EVENTS = 1_000_000
# "Flat as events grow", read here as: the peak at the end is at most this multiple of the peak
# at the first reading (200 k of 1 M events), while the events applied grew five-fold.
TARGET_RSS_GROWTH_MAX = 1.25
TARGET_REPLAY_S = 30.0
TARGET_REPLAY_EVENTS = 1_000_000
TARGET_P99_MS = 500.0
TARGET_LATENCY_RATE_PER_S = 1000.0
TARGET_SCALE_FACTOR = 1.7


def _num(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}".replace(",", " ")
    return str(value)


def _ratio(value, base) -> str:
    if not value or not base:
        return "–"
    share = 100 * value / base
    return f"{share:.1f} %" if share < 10 else f"{share:.0f} %"


def rows(results: dict) -> list[tuple[str, str, str, str, str]]:
    phases = results.get("phases", {})
    python = phases.get("python_ceiling", {})
    ceiling = python.get("events_per_s")
    table = []
    if (load := phases.get("load")):
        table.append((f"load topic ({load['loader']})", _num(load["events_per_s"]), "–", "–",
                      f"{_num(load['seconds'], 1)} s for {_num(load['events'])} events"))
    if (broker := phases.get("broker_ceiling")):
        rate = broker.get("fetch_events_per_s") or broker["events_per_s"]
        table.append(("broker ceiling (ConsumerPerformance, fetch rate)", _num(rate), "–", _ratio(rate, ceiling),
                      f"{_num(broker['events_per_s'])}/s incl. group join; JVM process {_num(broker['jvm_wall_s'], 1)} s"))
    if python:
        table.append(("Python ceiling (bare aiokafka + json)", _num(ceiling), _num(python["cpu_s_per_million"], 1),
                      "100 %", f"peak RSS {_num(python.get('peak_rss_mb'))} MB"))
    faust = phases.get("faust_ceiling", {})
    faust_rate = faust.get("events_per_s")
    if faust:
        table.append(_engine_ceiling_row("Faust ceiling (bare agent + json, no table)", faust, ceiling))
    quix = phases.get("quix_ceiling", {})
    quix_rate = quix.get("events_per_s")
    if quix:
        table.append(_engine_ceiling_row(
            "Quix ceiling (bare app + json, RocksDB state, exactly-once)", quix, ceiling,
            f"checkpoint every {_num(quix.get('commit_interval_s', 0) * 1000)} ms, last commit "
            f"and close {_num(quix.get('final_commit_and_close_s'), 1)} s; "))
    for key, label in (("budsjett_1_worker", "budsjett end-to-end, 1 worker"),
                       ("budsjett_2_workers", "budsjett end-to-end, 2 workers")):
        if (run := phases.get(key)):
            rss = ", ".join(f"{_num(v)}" for v in run["peak_rss_mb"].values())
            table.append((label, _num(run["events_per_s"]), _num(run["cpu_s_per_million"], 1),
                          _ratio(run["events_per_s"], ceiling),
                          f"{_num(run['seconds'], 1)} s after {_num(run['startup_s'], 1)} s start-up; peak RSS {rss} MB"
                          + _memory_note(run)
                          + (f"; {_ratio(run['events_per_s'], quix_rate)} of the Quix ceiling" if quix_rate else "")
                          + (f"; {_ratio(run['events_per_s'], faust_rate)} of the Faust ceiling" if faust_rate else "")
                          + (f"; {run['events_per_s'] / one['events_per_s']:.2f}× one worker"
                             if key == "budsjett_2_workers" and (one := phases.get("budsjett_1_worker")) else "")))
    latency_runs = phases.get("latency") or []
    for latency in latency_runs if isinstance(latency_runs, list) else [latency_runs]:
        for channel in ("http", "metrics"):
            summary = latency.get(channel)
            if summary:
                table.append((f"publish→visible via {'HTTP' if channel == 'http' else '/metrics'} "
                              f"@ {_num(latency['offered_rate_per_s'])}/s",
                              _num(latency["achieved_send_rate_per_s"]), "–", "–",
                              f"p50 {_num(summary['p50_ms'])} ms, p99 {_num(summary['p99_ms'])} ms, "
                              f"max {_num(summary['max_ms'])} ms ({summary['visible']}/{summary['events']} seen)"))
    if (milepael := phases.get("milepael")):
        table.append((f"milepael: {milepael['reforms']} reforms evaluated beside budsjett", "–", "–", "–",
                      f"{_num(milepael['events'])} events in {_num(milepael['seconds'], 1)} s, "
                      f"{_num(milepael['cpu_s'], 1)} CPU s; peak RSS {_num(milepael['peak_rss_mb'])} MB"))
    if (ingest := phases.get("ingest")):
        for key, label in (("single", "ingest HTTP, single POSTs"), ("batch_100", "ingest HTTP, 100-event batches")):
            if (run := ingest.get(key)):
                table.append((f"{label} ×{run['concurrency']} clients", _num(run["events_per_s"]), "–", "–",
                              f"p50 {_num(run['p50_ms'])} ms, p99 {_num(run['p99_ms'])} ms; statuses {run['statuses']}"
                              + (f"; ingest peak RSS {_num(ingest['peak_rss_mb'])} MB"
                                 if key == "batch_100" and ingest.get("peak_rss_mb") else "")))
    if (replay := phases.get("replay")):
        table.append(("replay (rebuild all totals from the log)", _num(replay.get("events_per_s")),
                      _num(replay.get("cpu_s_per_million"), 1), _ratio(replay.get("events_per_s"), ceiling),
                      f"{_num(replay.get('seconds'), 1)} s for {_num(replay.get('events'))} events; peak RSS "
                      f"{_num(replay.get('peak_rss_mb'))} MB (largest process); lines wrong: "
                      f"{len(replay.get('lines_wrong', []))}"))
    return table


def _memory_note(run: dict) -> str:
    sample = run.get("memory_at_milestone")
    if not sample:
        return ""
    peaks = ", ".join(_num(v) for v in sample["peak_rss_mb"].values())
    return f" ({peaks} MB at {_num(sample['events_committed'])} events committed)"


class Verdict(Enum):
    MET = "met"
    MISSED = "missed"
    NOT_MEASURED = "not measured"
    NOT_JUDGED = "not judged"


@dataclass(frozen=True)
class TargetCheck:
    target: str
    measured: str
    verdict: Verdict
    why: str = ""  # for NOT_JUDGED: what the run lacked


def _judge(target: str, measured: str, holds: bool) -> TargetCheck:
    return TargetCheck(target, measured, Verdict.MET if holds else Verdict.MISSED)


def _missing(target: str, phase: str) -> TargetCheck:
    return TargetCheck(target, "–", Verdict.NOT_MEASURED, f"no {phase} in this run")


def _budsjett_checks(phases: dict) -> list[TargetCheck]:
    one = phases.get("budsjett_1_worker")
    rate_target = f"budsjett end-to-end, 1 worker ≥ {_num(TARGET_BUDSJETT_EVENTS_PER_S)} events/s"
    share_target = f"budsjett ≥ {TARGET_SHARE_OF_QUIX_CEILING * 100:.0f} % of the Quix ceiling (same run)"
    rss_target = f"budsjett peak RSS ≤ {TARGET_PEAK_RSS_MB} MB after {_num(TARGET_RSS_AT_EVENTS)} events"
    flat_target = f"budsjett memory flat as events grow (end peak ≤ {TARGET_RSS_GROWTH_MAX}× the first reading)"
    if not one:
        return [_missing(name, "budsjett phase") for name in (rate_target, share_target, rss_target, flat_target)]
    rate = one["events_per_s"]
    checks = [_judge(rate_target, f"{_num(rate)} events/s", rate >= TARGET_BUDSJETT_EVENTS_PER_S)]
    quix_rate = phases.get("quix_ceiling", {}).get("events_per_s")
    checks.append(_judge(share_target, f"{_ratio(rate, quix_rate)} ({_num(rate)} of {_num(quix_rate)} events/s)",
                         rate >= TARGET_SHARE_OF_QUIX_CEILING * quix_rate) if quix_rate
                  else _missing(share_target, "quix phase"))
    peak = max(one["peak_rss_mb"].values(), default=0)
    if one["events"] >= TARGET_RSS_AT_EVENTS:
        checks.append(_judge(rss_target, f"{_num(peak)} MB after {_num(one['events'])} events",
                             peak <= TARGET_PEAK_RSS_MB))
    else:
        checks.append(TargetCheck(rss_target, f"{_num(peak)} MB after {_num(one['events'])} events",
                                  Verdict.NOT_JUDGED, f"the run had fewer than {_num(TARGET_RSS_AT_EVENTS)} events"))
    sample = one.get("memory_at_milestone")
    if sample:
        first = max(sample["peak_rss_mb"].values(), default=0)
        growth = peak / first if first else float("inf")
        checks.append(_judge(flat_target, f"{_num(first)} MB at {_num(sample['events_committed'])} → {_num(peak)} MB "
                                          f"at {_num(one['events'])} events ({growth:.2f}×)",
                             growth <= TARGET_RSS_GROWTH_MAX))
    else:
        checks.append(TargetCheck(flat_target, "–", Verdict.NOT_MEASURED, "no memory reading before the end"))
    return checks


def _replay_check(phases: dict) -> TargetCheck:
    target = f"replay of {_num(TARGET_REPLAY_EVENTS)} events ≤ {_num(TARGET_REPLAY_S)} s, every line right"
    replay = phases.get("replay")
    if not replay:
        return _missing(target, "replay phase")
    wrong = len(replay.get("lines_wrong", []))
    measured = f"{_num(replay['seconds'], 1)} s for {_num(replay['events'])} events; lines wrong: {wrong}"
    if wrong or replay["events"] >= TARGET_REPLAY_EVENTS:
        return _judge(target, measured, not wrong and replay["seconds"] <= TARGET_REPLAY_S)
    return TargetCheck(target, measured, Verdict.NOT_JUDGED,
                       f"the run had fewer than {_num(TARGET_REPLAY_EVENTS)} events")


def _latency_checks(phases: dict) -> list[TargetCheck]:
    runs = phases.get("latency") or []
    runs = runs if isinstance(runs, list) else [runs]
    at_rate = next((run for run in runs if run.get("offered_rate_per_s") == TARGET_LATENCY_RATE_PER_S), None)
    checks = []
    for channel, label in (("http", "HTTP"), ("metrics", "/metrics")):
        target = f"p99 publish→visible via {label} ≤ {_num(TARGET_P99_MS)} ms at {_num(TARGET_LATENCY_RATE_PER_S)} events/s"
        summary = (at_rate or {}).get(channel)
        if not summary:
            checks.append(_missing(target, f"latency run at {_num(TARGET_LATENCY_RATE_PER_S)} events/s"))
            continue
        all_seen = summary["visible"] == summary["events"]
        p99 = summary["p99_ms"]
        checks.append(_judge(target, f"p99 {_num(p99)} ms ({summary['visible']}/{summary['events']} seen)",
                             all_seen and p99 is not None and p99 <= TARGET_P99_MS))
    return checks


def _scale_check(phases: dict) -> TargetCheck:
    target = f"two workers on four partitions ≥ {TARGET_SCALE_FACTOR}× one"
    one, two = phases.get("budsjett_1_worker"), phases.get("budsjett_2_workers")
    if not (one and two):
        return _missing(target, "budsjett and scale phases")
    factor = two["events_per_s"] / one["events_per_s"]
    return _judge(target, f"{factor:.2f}× ({_num(two['events_per_s'])} vs {_num(one['events_per_s'])} events/s)",
                  factor >= TARGET_SCALE_FACTOR)


def target_checks(results: dict) -> list[TargetCheck]:
    """Every target of issue 12 against this run: met, missed, or why it could not be judged."""
    phases = results.get("phases", {})
    return [*_budsjett_checks(phases), _replay_check(phases), *_latency_checks(phases), _scale_check(phases)]


def targets_table(results: dict) -> str:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for check in target_checks(results):
        verdict = check.verdict.value + (f" ({check.why})" if check.why else "")
        if check.verdict in (Verdict.MET, Verdict.MISSED):
            verdict = f"**{verdict}**"
        lines.append(f"| {check.target} | {check.measured} | {verdict} |")
    return "\n".join(lines)


def table(results: dict) -> str:
    header = ("measurement", "events/s", "CPU s / 1M events", "vs Python ceiling", "notes")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    machine = results.get("machine", {})
    start, end = machine.get("load_at_start", {}), machine.get("load_at_end", {})
    lines.append("")
    budsjett_events = results.get("budsjett_events")
    scope = (f"{_num(results.get('events'))} events for the load, ceilings and replay, {_num(budsjett_events)} for "
             f"budsjett and scale" if budsjett_events and budsjett_events != results.get("events")
             else f"{_num(results.get('events'))} events")
    lines.append(f"{scope}; {start.get('cpus')} CPUs; load average "
                 f"{_num(start.get('loadavg_1m'), 2)} at start, {_num(end.get('loadavg_1m'), 2)} at end.")
    for phase, reason in results.get("skipped", {}).items():
        lines.append(f"skipped {phase}: {reason}")
    lines += ["", "Against the targets of issue 12:", "", targets_table(results)]
    return "\n".join(lines)


def _engine_ceiling_row(label: str, result: dict, ceiling: float | None, extra: str = "") -> tuple:
    """A bare-engine ceiling's row: rate, CPU, share of the Python ceiling, time and start-up, memory."""
    rate = result.get("events_per_s")
    startup_s = result["seconds_incl_startup"] - result["seconds"]
    return (label, _num(rate), _num(result["cpu_s_per_million"], 1), _ratio(rate, ceiling),
            f"{_num(result['seconds'], 1)} s after {_num(startup_s, 1)} s start-up; {extra}"
            f"peak RSS {_num(result.get('peak_rss_mb'))} MB")
