"""The Faust ceiling: a bare Faust agent that parses JSON and sums amounts, nothing else.

Built with the project's own `make_app` (memory store, acks=all, raw bytes
topic), so it pays exactly what any of our Faust services pays for Faust's
per-event stream machinery and offset commits, and nothing for our rules,
tables, changelogs or read models. No table: sums live in a plain dict.

Run as its own process (`python -m bench.faust_ceiling …`) so its CPU time is
its own. When it has seen every event it writes one JSON object (timing, CPU
from its first to its last message, the sums) to --out and exits.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

from services.shared.config import Settings
from services.shared.money import parse_nok_to_ore
from services.localstack.processes import free_port
from services.shared.service import make_app, raw_topic, run_worker, take_batches


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build(settings: Settings, topic: str, events: int, out: Path, batch: int | None = None):
    app = make_app(f"faustceiling{batch or ''}", settings, web_port=free_port())
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    state = {"seen": 0, "first_at": None, "first_cpu": None, "started": time.perf_counter()}

    async def values(stream):
        if batch is None:
            async for value in stream:
                yield value
        else:  # as budsjett consumes: batches of events, acked when the next batch is asked for
            async for taken in take_batches(stream, batch, 0.1):
                for event in taken:
                    yield event.value

    @app.agent(raw_topic(app, topic))
    async def add_up(stream):
        async for value in values(stream):
            if state["first_at"] is None:
                state["first_at"], state["first_cpu"] = time.perf_counter(), _cpu_s()
            event = json.loads(value)
            data = event["data"]
            sums[data["line_id"]][event["type"].split(".")[3]] += parse_nok_to_ore(data["amount_nok"])
            state["seen"] += 1
            if state["seen"] >= events:
                done_at, done_cpu = time.perf_counter(), _cpu_s()
                seconds = max(done_at - state["first_at"], 1e-9)
                out.write_text(json.dumps({
                    "events": state["seen"], "seconds": seconds,
                    "seconds_incl_startup": done_at - state["started"],
                    "events_per_s": state["seen"] / seconds, "cpu_s": done_cpu - state["first_cpu"],
                    "cpu_s_per_million": (done_cpu - state["first_cpu"]) / state["seen"] * 1_000_000,
                    "sums": {line: dict(kinds) for line, kinds in sums.items()},
                }))
                # Measured and written: leave at once (a graceful Faust shutdown takes seconds and measures nothing).
                sys.stdout.flush()
                os._exit(0)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True, help="the full topic name to read")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, help="consume in batches of BATCH (take_batches), as budsjett does")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)  # Faust creates its data dir, not the parents
    app = build(settings, args.topic, args.events, args.out, args.batch)
    run_worker(app, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
