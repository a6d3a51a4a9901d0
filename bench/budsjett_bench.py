"""budsjett end-to-end: workers start on a pre-loaded topic; how long until every total is right.

"Right" means every line's bevilget/forpliktet/utbetalt over HTTP equals the
oracle's sums of the published events, so the clock stops only when the last
event is visible to a user. The rate is taken from the first moment any total
is visible (so start-up and state recovery are reported separately, not
averaged in), and CPU is read from /proc over the same interval.

Memory is read twice: each worker's RSS once the group has committed a first
share of the events (200 k of 1 M), and the peak at the end, so a state that
grows with every event ever applied shows as a rising peak.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.events import HOT_LINE, Oracle
from bench.http_probe import line_totals, matches
from bench.kafka_io import committed_events
from bench.procstat import cpu_seconds, peak_rss_mb, rss_mb
from services.localstack.stack import LocalStack
from services.shared.streaming import consumer_group

MEMORY_POLL_INTERVAL_S = 0.5


def memory_milestone(events: int) -> int:
    """When to read memory the first time: at 200 k events of a 1 M run, a fifth of a shorter one."""
    return min(200_000, max(events // 5, 1))


@dataclass
class MemoryWatch:
    """Each worker's RSS and peak RSS at the moment its group has committed `at_events` input events.

    Committed offsets come from the broker (kafka-python's admin client), so the
    workers are not asked for anything while they are measured.
    """

    bootstrap: str
    group: str
    topic: str
    at_events: int
    sample: dict | None = None
    checked_at: float = 0.0
    admin: object | None = field(default=None, repr=False)

    def poll(self, pids: dict[str, int]) -> None:
        now = time.perf_counter()
        if self.sample is not None or now - self.checked_at < MEMORY_POLL_INTERVAL_S or not pids:
            return
        self.checked_at = now
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            self.admin = self.admin or KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                                        client_id="bench-memory-watch")
            committed = committed_events(self.admin, self.group, self.topic)
        except KafkaError:  # the group is still forming: read again at the next poll
            return
        if committed >= self.at_events:
            self.sample = {"events_committed": committed,
                           "rss_mb": {name: round(rss_mb(pid) or 0, 1) for name, pid in pids.items()},
                           "peak_rss_mb": {name: round(peak_rss_mb(pid) or 0, 1) for name, pid in pids.items()}}

    def close(self) -> None:
        if self.admin is not None:
            self.admin.close()


def start_workers(stack: LocalStack, workers: list[tuple[str, int | None]]):
    """Start workers concurrently, each in a thread that waits for its /readyz.

    Returns (name → pid as each becomes ready, the threads, errors raised in them).
    """
    pids: dict[str, int] = {}
    errors: list[BaseException] = []

    def start(name: str, port: int | None) -> None:
        try:
            # Static group membership: each worker needs its own instance id (and gets its own state dir).
            pids[name] = stack.start_service("budsjett", instance=None if name == "budsjett" else name, port=port,
                                             timeout_s=180, extra_env={"REFORMSPOR_INSTANCE": name})
        except BaseException as error:  # reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=start, args=worker, daemon=True) for worker in workers]
    for thread in threads:
        thread.start()
    return pids, threads, errors


def run_to_oracle(stack: LocalStack, oracle: Oracle, workers: list[tuple[str, int | None]], base_urls: list[str],
                  timeout_s: float, poll_interval_s: float = 0.25, profile_to: Path | None = None) -> dict:
    memory = MemoryWatch(stack.settings.kafka_bootstrap, consumer_group(stack.settings, "budsjett"),
                         stack.settings.topics.budget, memory_milestone(oracle.events))
    try:
        return _run_to_oracle(stack, oracle, workers, base_urls, timeout_s, poll_interval_s, profile_to, memory)
    finally:
        memory.close()


def _run_to_oracle(stack: LocalStack, oracle: Oracle, workers: list[tuple[str, int | None]], base_urls: list[str],
                   timeout_s: float, poll_interval_s: float, profile_to: Path | None, memory: MemoryWatch) -> dict:
    expected = {line: totals.as_dict() for line, totals in oracle.lines.items()}
    spawn_at = time.perf_counter()
    pids, threads, errors = start_workers(stack, workers)
    pending = set(expected)
    first_at = None
    first_cpu: dict[str, float] = {}
    profiler = None
    ready_at = None
    deadline = spawn_at + timeout_s
    last_report = spawn_at
    while pending and time.perf_counter() < deadline:
        if errors:
            raise errors[0]
        if ready_at is None and not any(t.is_alive() for t in threads):
            ready_at = time.perf_counter()
        # Every GET builds a whole line document in the worker: ask only the hot line (10 % of
        # the traffic, so it completes near the end) until it is right, then the rest.
        to_check = sorted(pending) if HOT_LINE not in pending else [HOT_LINE]
        for line in to_check:
            for url in base_urls:
                try:
                    actual = line_totals(url, line)
                except OSError:
                    actual = None
                if actual and first_at is None and any(actual.values()):
                    first_at = time.perf_counter()
                    first_cpu = {name: cpu_seconds(pid) for name, pid in _pids(stack, workers).items()}
                    if profile_to is not None:
                        profiler = start_profiler(_pids(stack, workers)[workers[0][0]], profile_to)
                if matches(expected[line], actual):
                    pending.discard(line)
                    break
        memory.poll(_pids(stack, workers))
        now = time.perf_counter()
        if now - last_report > 10:
            last_report = now
            print(f"  budsjett: {len(expected) - len(pending)}/{len(expected)} lines complete after "
                  f"{now - spawn_at:.0f}s", file=sys.stderr, flush=True)
        if pending:
            time.sleep(poll_interval_s)
    done_at = time.perf_counter()
    if profiler is not None:
        stop_profiler(profiler)
    if pending:
        raise TimeoutError(f"budsjett did not reach the oracle totals within {timeout_s:.0f}s "
                           f"({len(pending)} lines still behind, e.g. {sorted(pending)[:3]})")
    pids = _pids(stack, workers)
    cpu_total = sum(cpu_seconds(pid) - first_cpu.get(name, 0.0) for name, pid in pids.items())
    first_at = first_at or done_at
    seconds = max(done_at - first_at, 1e-9)
    events = oracle.events
    return {
        "workers": len(workers),
        "events": events,
        "startup_s": round(first_at - spawn_at, 2),
        "seconds": round(seconds, 2),
        "seconds_incl_startup": round(done_at - spawn_at, 2),
        "events_per_s": round(events / seconds, 1),
        "cpu_s": round(cpu_total, 2),
        "cpu_s_per_million": round(cpu_total / events * 1_000_000, 1),
        "peak_rss_mb": {name: round(peak_rss_mb(pid) or 0, 1) for name, pid in pids.items()},
        "memory_at_milestone": memory.sample,
        "memory_milestone_events": memory.at_events,
        "pids": pids,
    }


def _pids(stack: LocalStack, workers: list[tuple[str, int | None]]) -> dict[str, int]:
    found = {}
    for name, _ in workers:
        pid = stack.pid_file(name).running_pid()
        if pid:
            found[name] = pid
    return found


def start_profiler(pid: int, output: Path) -> subprocess.Popen | None:
    """py-spy (the `bench` extra) sampling the worker, as collapsed stacks, until stopped."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(py_spy):
        print("  (py-spy not installed: pip install -e '.[bench]'; no profile)", file=sys.stderr)
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(output),
                             "--rate", "50", "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def top_functions(folded: Path, limit: int = 25) -> list[tuple[str, float, float]]:
    """(function, inclusive %, self %) from py-spy's collapsed stacks, by inclusive share."""
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    return [(frame, 100 * n / total, 100 * own[frame] / total) for frame, n in inclusive.most_common(limit)]
