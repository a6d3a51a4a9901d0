"""What asks milepael to re-evaluate a reform besides its own events: the clock and budsjett's totals.

Both feeds only produce a tick (key reform_id) to the ticks topic, which is
co-partitioned with the reform topic: the re-evaluation itself then runs in the
reform's own partition, against its state store, inside its Kafka transaction.
Ticks are Kafka messages, so a tick produced before a crash is still there after
the restart. A lost tick costs one period: the next one re-evaluates the reform.

Budsjett's compacted totals topic (key line_id) is read in full by every worker,
with the shared topic follower (every partition assigned, read_committed, no
group commits), into `LineTotals`; no database is shared with budsjett.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from quixstreams.kafka import Producer

from services.milepael import core
from services.milepael.readmodel import ReformLocation
from services.shared.config import Settings
from services.shared.jsonio import JsonInputError, dumps_compact, loads_strict
from services.shared.follower import FollowedRecord, TopicFollower
from services.shared.streaming import Rejection

log = logging.getLogger("reformspor.milepael")

CLOCK_ENV = "REFORMSPOR_MILEPAEL_CLOCK"
TICK_ENV = "REFORMSPOR_MILEPAEL_TICK_S"
DEFAULT_TICK_S = 60.0


def parse_utc(text: str) -> datetime:
    """An RFC 3339 time with its zone, as UTC; a time without a zone is ambiguous and refused."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"a time must carry a time zone: {text!r}")
    return moment.astimezone(timezone.utc)


class Clock:
    """'Today' for the periodic re-evaluation.

    REFORMSPOR_MILEPAEL_CLOCK unset: the real UTC time. An RFC 3339 time: that
    fixed moment (tests, demo). "file:<path>": the RFC 3339 time in that file,
    re-read on every tick, so a test can move time forward without a restart.
    """

    def __init__(self, spec: str | None = None):
        self.spec = (spec or "").strip()

    def now(self) -> datetime:
        if not self.spec:
            return datetime.now(timezone.utc)
        if self.spec.startswith("file:"):
            return parse_utc(Path(self.spec.removeprefix("file:")).read_text())
        return parse_utc(self.spec)


def tick_interval_s(text: str | None) -> float:
    """REFORMSPOR_MILEPAEL_TICK_S: seconds between periodic re-evaluations (one clear line if wrong)."""
    if not text:
        return DEFAULT_TICK_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise SystemExit(f"{TICK_ENV} must be a number of seconds above 0, not {text!r}")
    return seconds


@dataclass(frozen=True)
class Tick:
    """A request to re-evaluate one reform (the key) as of `now`."""

    now: datetime
    why: str  # clock | totals

    def to_bytes(self) -> bytes:
        return dumps_compact({"now": self.now.strftime("%Y-%m-%dT%H:%M:%SZ"), "why": self.why})

    @classmethod
    def from_bytes(cls, value: bytes | None) -> Tick:
        """Raises ValueError for anything that is not a tick."""
        try:
            payload = loads_strict(value or b"")
            return cls(now=parse_utc(payload["now"]), why=str(payload.get("why", "")))
        except (JsonInputError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a tick: {error}") from None


class Ticker:
    """Produces ticks with a plain producer, each to the partition that holds the reform's state.

    The partition is named, not left to the partitioner: a reform topic written with another
    client's default partitioner would otherwise send ticks where the reform's state is not.
    """

    def __init__(self, producer: Producer, topic: str, clock: Clock):
        self.producer = producer
        self.topic = topic
        self.clock = clock

    def send(self, reforms: Iterable[ReformLocation], why: str) -> None:
        try:
            payload = Tick(self.clock.now(), why).to_bytes()
        except (OSError, ValueError) as error:
            log.error("clock unreadable (%s): skipping re-evaluation", error)
            return
        for reform in reforms:
            self.producer.produce(topic=self.topic, key=reform.reform_id.encode("utf-8"), value=payload,
                                  partition=reform.partition, on_delivery=_log_delivery_error)


def _log_delivery_error(error, message) -> None:
    if error is not None:
        log.warning("tick not delivered (%s); the next period repeats it", error)


def tick_periodically(ticker: Ticker, reforms: Callable[[], list[ReformLocation]], interval_s: float,
                      stop: threading.Event) -> None:
    """Every interval, a tick for every known reform: catches milestones that became overdue with no new event."""
    while not stop.wait(interval_s):
        try:
            ticker.send(reforms(), "clock")
        except Exception:  # noqa: BLE001 - a failed period is logged; the next one tries again
            log.exception("periodic re-evaluation failed this time")


class FundedReforms:
    """Which budget lines fund which reform, and the partition that holds each reform's state.

    The stream notes a reform here before it reads the totals for an evaluation; the totals
    follower looks here after it has stored new totals. So a change of totals is either seen
    by that evaluation or ticks the reform afterwards: never lost in between. Seeded at start
    from the read model.
    """

    def __init__(self, funding: dict[ReformLocation, frozenset[str]] | None = None):
        self.lock = threading.Lock()
        self.lines_by_reform: dict[ReformLocation, frozenset[str]] = dict(funding or {})

    def note(self, reform: ReformLocation, line_ids: Iterable[str]) -> None:
        with self.lock:
            self.lines_by_reform[reform] = frozenset(line_ids)

    def funded_by(self, line_ids: set[str]) -> list[ReformLocation]:
        with self.lock:
            return sorted((reform for reform, lines in self.lines_by_reform.items() if lines & line_ids),
                          key=lambda reform: reform.reform_id)


class LineTotals:
    """The latest totals summary per line (core.totals_summary), written by the follower, read by the stream."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_line: dict[str, dict] = {}
        self.loaded = threading.Event()

    def update(self, summary: dict) -> None:
        with self.lock:
            self.by_line[summary["line_id"]] = summary

    def for_lines(self, line_ids: Iterable[str]) -> dict[str, dict]:
        with self.lock:
            return {line_id: self.by_line[line_id] for line_id in line_ids if line_id in self.by_line}

    def wait_loaded(self, timeout_s: float) -> None:
        """Block until the whole topic has been read once: evaluating against half-loaded totals
        after a restart would clear and re-raise adjustments."""
        if not self.loaded.wait(timeout_s):
            raise RuntimeError(f"budsjett's totals topic was not loaded within {timeout_s:.0f} s")


class TotalsFollower:
    """Reads the compacted totals topic in full, then follows it (services.shared.follower); the lines changed
    by each batch read go to `on_change`.

    Invalid totals messages go to `dead_letter` (the topic is budsjett's output, so this
    means a bug or a foreign writer); every worker reads the whole topic, so each reports them.
    """

    def __init__(self, settings: Settings, totals: LineTotals, on_change: Callable[[set[str]], None],
                 dead_letter: Callable[[bytes | None, bytes | None, Rejection], None]):
        self.totals = totals
        self.on_change = on_change
        self.dead_letter = dead_letter
        self.changed: set[str] = set()  # lines changed by the batch being read (the follower's thread only)
        self.follower = TopicFollower(settings, "milepael", settings.topics.totals, self.take, name="totals",
                                      after_batch=self.batch_read)

    def start(self) -> None:
        self.follower.start(0.0)
        threading.Thread(target=self.mark_loaded, name="milepael-totals-loaded", daemon=True).start()

    def mark_loaded(self) -> None:
        self.follower.caught_up.wait()
        self.totals.loaded.set()

    def stop(self) -> None:
        self.follower.stop()

    def problems(self) -> list[str]:
        found = [] if self.totals.loaded.is_set() else ["budsjett's totals topic is not loaded yet"]
        return found + ([f"totals topic: {self.follower.error}"] if self.follower.error else [])

    def take(self, record: FollowedRecord) -> None:
        try:
            summary = core.totals_summary(loads_strict(record.value or b""))
        except (JsonInputError, ValueError, TypeError) as error:
            self.dead_letter(record.value, record.key, Rejection([f"totals message: {error}"], "invalid_totals"))
            return
        self.totals.update(summary)
        self.changed.add(summary["line_id"])

    def batch_read(self) -> None:
        changed, self.changed = self.changed, set()
        if changed:
            self.on_change(changed)
