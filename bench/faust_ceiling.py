"""The Faust ceiling: a bare Faust agent that parses JSON and sums amounts, nothing else.

Faust is the engine the services left for Quix Streams (issue 12); it stays in
the bench as a measured peer so every run re-checks that choice. The app is
built here, self-contained, with the settings our Faust services used (memory
store, acks=all, raw bytes topic, offsets from the earliest), so it pays what
any Faust service paid for Faust's per-event stream machinery and offset
commits, and nothing for rules, tables, changelogs or read models. No table:
sums live in a plain dict.

Run as its own process (`python -m bench.faust_ceiling …`) so its CPU time is
its own. When it has seen every event it writes one JSON object (timing, CPU
from its first to its last message, the sums) to --out and exits.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from collections import defaultdict
from pathlib import Path

import faust

from bench.ceiling_clock import CeilingClock, parse_ceiling_args
from services.shared.config import Settings
from services.shared.money import parse_nok_to_ore


def make_faust_app(settings: Settings) -> faust.App:
    return faust.App(
        f"{settings.topic_prefix}faustceiling",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=str(settings.home / "faustceiling-data"),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,  # nothing to serve: the result goes to --out
        autodiscover=False,
    )


class QuietWorker(faust.Worker):
    """faust.Worker without its terminal spinner.

    The spinner sets the root logger to DEBUG so that it spins on every log record; then every
    produce and fetch builds a record nobody reads, and the ceiling would measure logging.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        logger.setLevel(level)


def build(settings: Settings, topic: str, events: int, out: Path) -> faust.App:
    app = make_faust_app(settings)
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    clock = CeilingClock()
    seen = 0
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    @app.agent(source)
    async def add_up(stream):
        nonlocal seen
        async for value in stream:
            clock.first_message()
            event = json.loads(value)
            data = event["data"]
            sums[data["line_id"]][event["type"].split(".")[3]] += parse_nok_to_ore(data["amount_nok"])
            seen += 1
            if seen >= events:
                out.write_text(json.dumps(clock.result(seen, sums)))
                # Measured and written: leave at once (a graceful Faust shutdown takes seconds and measures nothing).
                sys.stdout.flush()
                os._exit(0)

    return app


def main(argv: list[str] | None = None) -> int:
    args = parse_ceiling_args(__doc__.splitlines()[0], argv)
    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)  # Faust creates its data dir, not the parents
    app = build(settings, args.topic, args.events, args.out)
    worker = QuietWorker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False, console_port=None)
    return worker.execute_from_commandline()


if __name__ == "__main__":
    sys.exit(main())
