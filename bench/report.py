"""The results table (Markdown, so the same text goes into RESULTS.md and the README)."""
from __future__ import annotations


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
        table.append(("Faust ceiling (bare agent + json, no table)", _num(faust_rate),
                      _num(faust["cpu_s_per_million"], 1), _ratio(faust_rate, ceiling),
                      f"{_num(faust['seconds'], 1)} s after {_num(faust['seconds_incl_startup'] - faust['seconds'], 1)} s "
                      f"start-up; peak RSS {_num(faust.get('peak_rss_mb'))} MB"))
    if (batched := phases.get("faust_ceiling_batched")):
        table.append(("Faust ceiling, batches as budsjett", _num(batched["events_per_s"]),
                      _num(batched["cpu_s_per_million"], 1), _ratio(batched["events_per_s"], ceiling),
                      f"{_num(batched['seconds'], 1)} s; peak RSS {_num(batched.get('peak_rss_mb'))} MB"))
    for key, label in (("budsjett_1_worker", "budsjett end-to-end, 1 worker"),
                       ("budsjett_2_workers", "budsjett end-to-end, 2 workers")):
        if (run := phases.get(key)):
            rss = ", ".join(f"{_num(v)}" for v in run["peak_rss_mb"].values())
            table.append((label, _num(run["events_per_s"]), _num(run["cpu_s_per_million"], 1),
                          _ratio(run["events_per_s"], ceiling),
                          f"{_num(run['seconds'], 1)} s after {_num(run['startup_s'], 1)} s start-up; peak RSS {rss} MB"
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
    return "\n".join(lines)
