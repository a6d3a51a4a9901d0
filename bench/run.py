"""Reformspor benchmarks: throughput, ceilings, latency, ingest, replay and scale in one run.

Starts its own Kafka broker (home under bench/results/tmp, free ports), so it
never collides with a running stack or the tests, and stops every process it
started, by pid, when it ends. Prints a table and writes the numbers as JSON.

    .venv/bin/python bench/run.py --quick           # 50 k events, a smoke run
    .venv/bin/python bench/run.py                   # 1 M events
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/run.py` puts bench/, not the repo, on sys.path
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.events import Oracle, Workload, generate  # noqa: E402
from bench.kafka_io import broker_ceiling, load_file, write_events_file  # noqa: E402
from bench.procstat import machine_load, peak_rss_mb, run_measured  # noqa: E402
from services.shared.config import Settings  # noqa: E402
from services.localstack.kafka_local import LocalKafka  # noqa: E402
from services.localstack.processes import free_port  # noqa: E402
from services.localstack.stack import LocalStack  # noqa: E402
from services.shared.topics import ensure_topics  # noqa: E402

ALL_PHASES = ("broker", "python", "faust", "quix", "budsjett", "latency", "milepael", "replay", "scale", "ingest")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark Reformspor on a real local Kafka broker against a bare-consumer baseline "
                    "measured in the same run. Prints a table and writes JSON.")
    parser.add_argument("--events", type=int, default=1_000_000, help="budget events to publish (default 1000000)")
    parser.add_argument("--budsjett-events", type=int,
                        help="events for the budsjett, latency and scale phases (default: --events; replay always uses "
                             "all --events); the first N of "
                             "the same stream, on their own topic, so a 1 M ceiling run can sit beside a shorter "
                             "budsjett run on a slow machine")
    parser.add_argument("--quick", action="store_true", help="a 50 k-event smoke run with a short latency phase")
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results/<timestamp>.json)")
    parser.add_argument("--phases", nargs="+", choices=ALL_PHASES, default=list(ALL_PHASES),
                        help="which measurements to run (default: all that the checkout supports)")
    parser.add_argument("--rate", type=float, nargs="+", default=[1000.0],
                        help="latency phase: offered events/s, one run per value (default 1000)")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="latency phase: duration (default 30)")
    parser.add_argument("--loader", choices=["kcat", "kafka-python"], default="kcat",
                        help="how to load the topic (kcat is faster; falls back to kafka-python without kcat)")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per-phase time limit (default 1800)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the 1-worker budsjett run with py-spy; collapsed stacks next to the JSON")
    parser.add_argument("--replay-runs", type=int, default=1,
                        help="replay phase: runs on the same published topic (default 1); the median run is reported, "
                             "every run listed")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the broker's data under bench/results/tmp")
    args = parser.parse_args(argv)
    if args.quick:
        args.events = 50_000 if args.events == 1_000_000 else args.events
        args.latency_seconds = min(args.latency_seconds, 10.0)
    return args


def scenario_settings(broker: LocalKafka, home: Path, prefix: str) -> Settings:
    return Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix, partitions=4, home=home / prefix.rstrip("."),
                    ingest_port=free_port(), budsjett_port=free_port(), milepael_port=free_port(), log_level="warn",
                    kafka_security_protocol="PLAINTEXT")


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results_dir = REPO / "bench" / "results"
    tmp = results_dir / "tmp" / stamp
    out = args.out or results_dir / f"{stamp}.json"
    command = " ".join([".venv/bin/python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    results: dict = {
        "command": command,
        "started_at": stamp,
        "events": args.events,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "load_at_start": machine_load()},
        "phases": {},
        "skipped": {},
    }
    budsjett_ready = has_module("services.budsjett.app")
    ingest_ready = has_module("services.ingest.app")
    # An open broker on loopback: the ceilings' clients (aiokafka, Faust, kcat, Kafka's own
    # ConsumerPerformance) have no SASL settings, and SCRAM costs only at connect time.
    broker = LocalKafka(tmp / "kafka", port=free_port(), controller_port=free_port(), secured=False)
    stacks: list[LocalStack] = []
    try:
        progress(f"starting Kafka on {broker.bootstrap} (data under {tmp})")
        broker.start()
        phases = results["phases"]

        progress(f"generating {args.events} events")
        oracle = Oracle()
        started = time.perf_counter()
        events_file = tmp / "events.tsv"
        count, size = write_events_file(events_file, generate(Workload(args.events), oracle))
        phases["generate"] = {"events": count, "seconds": round(time.perf_counter() - started, 2),
                              "mean_event_bytes": round(size / count, 1), "lines": len(oracle.lines)}

        main_settings = scenario_settings(broker, tmp, "bm1.")
        ensure_topics(main_settings)
        topic = main_settings.topics.budget
        progress(f"loading {count} events into {topic}")
        phases["load"] = load_file(broker.bootstrap, topic, events_file, count, prefer=args.loader)
        progress(f"loaded at {phases['load']['events_per_s']:.0f} events/s with {phases['load']['loader']}")

        if "broker" in args.phases:
            progress("broker ceiling: Kafka's ConsumerPerformance")
            phases["broker_ceiling"] = broker_ceiling(broker.bootstrap, topic, count)

        if "python" in args.phases:
            progress("Python ceiling: bare aiokafka consumer (parse JSON, sum amounts)")
            phases["python_ceiling"] = python_ceiling(broker.bootstrap, topic, main_settings.partitions, count, oracle, args.timeout_s, tmp)

        if "faust" in args.phases:
            progress("Faust ceiling: a bare Faust agent (parse JSON, sum amounts, no table)")
            phases["faust_ceiling"] = engine_ceiling("faust", main_settings, topic, count, oracle, args.timeout_s, tmp)
            progress(f"Faust ceiling: {phases['faust_ceiling']['events_per_s']:.0f} events/s")

        if "quix" in args.phases:
            progress("Quix ceiling: a bare Quix Streams app (parse JSON, sum amounts in RocksDB state, exactly-once)")
            phases["quix_ceiling"] = engine_ceiling("quix", main_settings, topic, count, oracle, args.timeout_s, tmp)
            progress(f"Quix ceiling: {phases['quix_ceiling']['events_per_s']:.0f} events/s")

        # Replay rebuilds from the whole log: it runs on the full --events topic (its target is 1 M events).
        full_settings, full_oracle = main_settings, oracle
        budsjett_count = min(args.budsjett_events or count, count)
        if budsjett_count < count:
            # The same seed gives the same stream, so these are the first N events of the ceiling run.
            oracle = Oracle()
            events_file = tmp / "events-budsjett.tsv"
            write_events_file(events_file, generate(Workload(budsjett_count), oracle))
            main_settings = scenario_settings(broker, tmp, "bm1b.")
            ensure_topics(main_settings)
            progress(f"loading the first {budsjett_count} events into {main_settings.topics.budget} for budsjett")
            phases["load_budsjett"] = load_file(broker.bootstrap, main_settings.topics.budget, events_file,
                                                budsjett_count, prefer=args.loader)
        count = budsjett_count
        results["budsjett_events"] = budsjett_count
        main_stack = LocalStack(main_settings)
        stacks.append(main_stack)
        if not budsjett_ready:
            for phase in ("budsjett", "latency", "replay", "scale"):
                results["skipped"][phase] = "services.budsjett.app is not in this checkout"
        # Replay before the phases that publish more budget events (latency, milepael's funding): when
        # budsjett runs on the full topic, those would land in the log replay is checked against.
        if budsjett_ready and "replay" in args.phases:
            phases["replay"] = replay_phase(full_settings, full_oracle, args, tmp)

        if budsjett_ready and "budsjett" in args.phases:
            from bench.budsjett_bench import run_to_oracle

            progress("budsjett end-to-end, 1 worker")
            phases["budsjett_1_worker"] = run_to_oracle(main_stack, oracle, [("budsjett", None)],
                                                        [main_settings.service_url("budsjett")], args.timeout_s,
                                                        profile_to=out.with_suffix(".budsjett.folded") if args.profile
                                                        else None)
            progress(f"budsjett: {phases['budsjett_1_worker']['events_per_s']:.0f} events/s")
            if budsjett_ready and "latency" in args.phases:
                phases["latency"] = latency_phase(main_settings, args)
            if "milepael" in args.phases:
                from bench.milepael_bench import run_milepael

                progress("milepael: one staged reform per line, beside the running budsjett")
                phases["milepael"] = run_milepael(main_stack, sorted(oracle.lines), args.timeout_s)
            pid = main_stack.pid_file("budsjett").running_pid()
            phases["budsjett_1_worker"]["peak_rss_mb_after_latency"] = round(peak_rss_mb(pid) or 0, 1) if pid else None
            main_stack.stop_service("budsjett")

        if budsjett_ready and "scale" in args.phases:
            from bench.budsjett_bench import run_to_oracle

            scale_settings = scenario_settings(broker, tmp, "bm2.")
            ensure_topics(scale_settings)
            progress(f"scale: loading {count} events into {scale_settings.topics.budget}")
            load_file(broker.bootstrap, scale_settings.topics.budget, events_file, count, prefer=args.loader)
            scale_stack = LocalStack(scale_settings)
            stacks.append(scale_stack)
            progress("budsjett end-to-end, 2 workers")
            second_port = free_port()
            phases["budsjett_2_workers"] = run_to_oracle(
                scale_stack, oracle, [("budsjett", None), ("budsjett-2", second_port)],
                [scale_settings.service_url("budsjett"), f"http://127.0.0.1:{second_port}"], args.timeout_s)
            for name in ("budsjett-2", "budsjett"):
                scale_stack.stop_service(name)

        if "ingest" in args.phases:
            if ingest_ready:
                ingest_settings = scenario_settings(broker, tmp, "bm3.")
                ensure_topics(ingest_settings)
                ingest_stack = LocalStack(ingest_settings)
                stacks.append(ingest_stack)
                phases["ingest"] = ingest_phase(ingest_stack, args)
            else:
                results["skipped"]["ingest"] = "services.ingest.app is not in this checkout"
    finally:
        for stack in stacks:
            stack.down(progress=lambda message: None)
        broker.stop()
        results["machine"]["load_at_end"] = machine_load()
        if not args.keep_tmp and sys.exc_info()[0] is None:  # keep the logs when a phase failed
            shutil.rmtree(tmp, ignore_errors=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(report.table(results))
    print(f"\nJSON: {out}")
    return 0


def python_ceiling(bootstrap: str, topic: str, partitions: int, count: int, oracle: Oracle, timeout_s: float,
                   tmp: Path) -> dict:
    measured = run_measured([sys.executable, "-m", "bench.bare_consumer", "--bootstrap", bootstrap, "--topic", topic,
                             "--partitions", str(partitions),
                             "--events", str(count), "--timeout-s", str(timeout_s)],
                            env={"PYTHONPATH": str(REPO)}, timeout_s=timeout_s + 60, log_path=tmp / "bare.log")
    if measured["returncode"] != 0:
        raise RuntimeError(f"bare consumer failed: {measured['stdout'][-500:]}; see {tmp / 'bare.log'}")
    result = json.loads(measured["stdout"])
    check_sums_against_oracle("bare consumer", result.pop("sums"), oracle)
    result.update({"process_cpu_s": round(measured["cpu_s"], 2), "peak_rss_mb": round(measured["peak_rss_mb"], 1),
                   "sums_match_oracle": True})
    return result


def check_sums_against_oracle(who: str, sums: dict, oracle: Oracle) -> None:
    """A ceiling only counts if it really summed every event: its per-line sums must equal the oracle's."""
    wrong = [line for line, totals in oracle.lines.items()
             if any(sums.get(line, {}).get(kind, 0) != getattr(totals, f"{kind}_ore")
                    for kind in ("bevilget", "forpliktet", "utbetalt"))]
    if wrong:
        raise RuntimeError(f"{who} sums differ from the oracle on {len(wrong)} lines, e.g. {wrong[:3]}")


def engine_ceiling(engine: str, settings: Settings, topic: str, count: int, oracle: Oracle, timeout_s: float,
                   tmp: Path) -> dict:
    """bench/<engine>_ceiling.py as its own process, on the same topic; its sums checked against the oracle."""
    out = tmp / f"{engine}-ceiling.json"
    log_path = tmp / f"{engine}-ceiling.log"
    measured = run_measured([sys.executable, "-m", f"bench.{engine}_ceiling", "--topic", topic, "--events", str(count),
                             "--out", str(out)],
                            env={**settings.to_env(), "PYTHONPATH": str(REPO)}, timeout_s=timeout_s + 60,
                            log_path=log_path)
    if measured["returncode"] != 0 or not out.exists():
        raise RuntimeError(f"{engine} ceiling failed ({measured['returncode']}); see {log_path}")
    result = json.loads(out.read_text())
    check_sums_against_oracle(f"{engine} ceiling", result.pop("sums"), oracle)
    result.update({"process_cpu_s": round(measured["cpu_s"], 2), "peak_rss_mb": round(measured["peak_rss_mb"], 1),
                   "process_seconds": round(measured["seconds"], 2), "sums_match_oracle": True})
    return result


def latency_phase(settings: Settings, args: argparse.Namespace) -> list[dict]:
    from bench.latency import run_latency

    runs = []
    for number, rate in enumerate(args.rate):
        progress(f"latency: {rate:.0f} events/s for {args.latency_seconds:.0f}s, open loop")
        runs.append(asyncio.run(run_latency(settings.kafka_bootstrap, settings.topics.budget,
                                            [settings.service_url("budsjett")], settings.partitions, rate,
                                            args.latency_seconds, run_id=f"bm{number}",
                                            metric_name_part=metric_for_bevilget(),
                                            drain_timeout_s=max(30.0, args.latency_seconds * 2))))
    return runs


def metric_for_bevilget() -> str | None:
    """The /metrics series that carries a line's bevilget amount, if budsjett exports one."""
    return os.environ.get("BENCH_BEVILGET_METRIC", "reformspor_budsjett_bevilget_ore")


def replay_phase(settings: Settings, oracle: Oracle, args: argparse.Namespace, tmp: Path) -> dict:
    from bench.replay import run_replay

    runs = []
    for number in range(max(args.replay_runs, 1)):
        progress(f"replay: rebuilding every total from the log (run {number + 1} of {max(args.replay_runs, 1)})")
        run_tmp = tmp / f"replay-{number + 1}"
        run_tmp.mkdir(parents=True, exist_ok=True)
        runs.append(run_replay(settings, oracle, args.timeout_s, run_tmp))
        progress(f"replay: {runs[-1]['seconds']} s, {runs[-1]['cpu_s']} CPU s, peak RSS {runs[-1]['peak_rss_mb']} MB")
    median = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
    return {**median, "runs": [{k: run[k] for k in ("seconds", "cpu_s", "peak_rss_mb", "lines_wrong")} for run in runs]}


def ingest_phase(stack: LocalStack, args: argparse.Namespace) -> dict:
    from bench.ingest_http import post_load
    from services.ingest.tokens import issue_token

    settings = stack.settings
    settings.home.mkdir(parents=True, exist_ok=True)
    token = issue_token(settings, "BFD", name="bench")
    progress("ingest: starting the service")
    pid = stack.start_service("ingest", timeout_s=120)
    url = settings.service_url("ingest")
    single_requests, batches = (1000, 100) if args.quick else (5000, 500)
    results = {}
    progress(f"ingest: {single_requests} single POSTs")
    results["single"] = asyncio.run(post_load(url, token, "BFD", "bm-s", single_requests, 1, 16, 120))
    progress(f"ingest: {batches} POSTs of 100 events")
    results["batch_100"] = asyncio.run(post_load(url, token, "BFD", "bm-b", batches, 100, 4, 120))
    results["peak_rss_mb"] = round(peak_rss_mb(pid) or 0, 1)
    stack.stop_service("ingest")
    return results


if __name__ == "__main__":
    sys.exit(main())
