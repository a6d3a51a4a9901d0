"""The Quix ceiling: a bare Quix Streams application that parses JSON and sums amounts in its state.

What the engine under our services costs before any of our rules: the
Application comes from the services' own `make_application` (exactly-once,
one Kafka transaction per checkpoint, the same checkpoint interval, static
membership, connection settings), reads the budget topic as raw bytes as the
services do, and keeps each line's sums in its RocksDB state (a stateful
apply: one get and one set per event, state scoped to the line's key, backed
by a changelog topic). No outputs, no sink, no rules.

Run as its own process (`python -m bench.quix_ceiling …`) so its CPU time is
its own. It stops after `--events` messages (Quix's own stop condition), which
commits the last checkpoint; only then it writes one JSON object (timing and
CPU from its first to its last message, the time the final commit took, the
per-line sums as read from state) to --out.
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from quixstreams import Application, State

from bench.ceiling_clock import CeilingClock, parse_ceiling_args
from services.shared.config import Settings
from services.shared.money import parse_nok_to_ore
from services.shared.streaming import COMMIT_INTERVAL_S, input_topic, make_application

SERVICE = "quixceiling"


class StateSums:
    """The step: add each event's amount to its line's sum in State; remember what State holds."""

    def __init__(self, events: int):
        self.events = events
        self.seen = 0
        self.clock = CeilingClock()
        # The value State returned for each (line, kind), so the oracle checks what State holds.
        self.sums: dict[str, dict[str, int]] = defaultdict(dict)
        self.measured: dict | None = None

    def __call__(self, value: bytes, state: State) -> None:
        self.clock.first_message()
        event = json.loads(value)
        data = event["data"]
        kind = event["type"].split(".")[3]
        total_ore = state.get(kind, 0) + parse_nok_to_ore(data["amount_nok"])
        state.set(kind, total_ore)
        self.sums[data["line_id"]][kind] = total_ore
        self.seen += 1
        if self.seen == self.events:
            self.measured = self.clock.result(self.seen, self.sums)


def build(settings: Settings, topic: str, events: int, state_dir: Path) -> tuple[Application, StateSums]:
    app = make_application(SERVICE, settings, state_dir=str(state_dir))
    step = StateSums(events)
    app.dataframe(input_topic(app, topic)).apply(step, stateful=True)
    return app, step


def main(argv: list[str] | None = None) -> int:
    args = parse_ceiling_args(__doc__.splitlines()[0], argv)
    settings = Settings.from_env()
    app, step = build(settings, args.topic, args.events, settings.home / "state" / SERVICE)
    app.run(count=args.events, collect=False)
    if step.measured is None:  # stopped by a signal before the last event
        print(f"quix ceiling: stopped after {step.seen} of {args.events} events", file=sys.stderr)
        return 1
    stopped_at = time.perf_counter()
    last_event_at = step.clock.started_at + step.measured["seconds_incl_startup"]
    args.out.write_text(json.dumps({**step.measured, "commit_interval_s": COMMIT_INTERVAL_S,
                                    "final_commit_and_close_s": stopped_at - last_event_at}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
