"""Publish → visible latency at a fixed offered load, with an open-loop generator.

Event i of the run is *scheduled* at t0 + i/rate and its latency is counted
from that scheduled time, so a generator or broker that falls behind shows up
as latency instead of quietly lowering the load (no coordinated omission).

Each latency line only ever receives bevilget events of exactly 1.00 NOK, so
a line's bevilget total in øre divided by 100 is the number of its events
applied; a line's events are on one partition and applied in order, so when
a poll shows count k, events 1..k of that line are visible at that moment.
One line per partition, so every partition is exercised.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from bisect import bisect_left
from datetime import datetime, timezone

from bench.events import single_event
from bench.http_probe import metric_line_amount, parse_metrics

AMOUNT_ORE = 100


def latency_lines(partitions: int, prefix: str = "bench-lat") -> list[str]:
    """One line id per partition, by the same murmur2 partitioner the producers use."""
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    chosen: dict[int, str] = {}
    for n in range(10_000):
        line_id = f"{prefix}-{n}"
        partition = partitioner(line_id.encode(), list(range(partitions)), list(range(partitions)))
        chosen.setdefault(partition, line_id)
        if len(chosen) == partitions:
            break
    return [chosen[p] for p in sorted(chosen)]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def latencies_from_observations(scheduled: list[float], observations: list[tuple[float, int]]) -> list[float | None]:
    """For each event (in line order) the first observation whose count covers it, minus its scheduled time."""
    observations = sorted(observations)
    # Counts only grow, so the first time count >= i is found by bisect over a running max.
    times, counts, best = [], [], 0
    for moment, count in observations:
        if count > best:
            best = count
            times.append(moment)
            counts.append(count)
    result: list[float | None] = []
    for index, sent_at in enumerate(scheduled, start=1):
        position = bisect_left(counts, index)
        result.append(times[position] - sent_at if position < len(counts) else None)
    return result


def summarise(latencies_s: list[float | None]) -> dict:
    seen = [value for value in latencies_s if value is not None]
    return {
        "events": len(latencies_s),
        "visible": len(seen),
        "p50_ms": _ms(percentile(seen, 50)),
        "p90_ms": _ms(percentile(seen, 90)),
        "p99_ms": _ms(percentile(seen, 99)),
        "max_ms": _ms(max(seen) if seen else None),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def run_latency(bootstrap: str, topic: str, base_urls: list[str], partitions: int, rate_per_s: float,
                      duration_s: float, run_id: str, metric_name_part: str | None, drain_timeout_s: float = 30.0,
                      http_poll_interval_s: float = 0.005, metrics_poll_interval_s: float = 0.1) -> dict:
    import aiohttp
    from aiokafka import AIOKafkaProducer

    lines = latency_lines(partitions, prefix=f"{run_id}-lat")
    total = int(rate_per_s * duration_s)
    scheduled: dict[str, list[float]] = {line: [] for line in lines}
    http_obs: dict[str, list[tuple[float, int]]] = {line: [] for line in lines}
    metric_obs: dict[str, list[tuple[float, int]]] = {line: [] for line in lines}
    sent_done = asyncio.Event()
    stop = asyncio.Event()
    now_wall = datetime.now(timezone.utc)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()

    async def generate() -> None:
        t0 = time.perf_counter() + 0.2
        pending = []
        for i in range(total):
            due = t0 + i / rate_per_s
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            line = lines[i % len(lines)]
            n = len(scheduled[line]) + 1
            event = single_event(line, n, AMOUNT_ORE, f"{run_id}-lat-{line}", now_wall)
            scheduled[line].append(due)
            pending.append(await producer.send(topic, key=line.encode(),
                                               value=json.dumps(event, separators=(",", ":")).encode()))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        sent_done.set()

    async def poll_http(session, line: str, base_url: str) -> None:
        url = f"{base_url}/v1/lines/{line}"
        while not stop.is_set():
            try:
                async with session.get(url) as response:
                    body = await response.json() if response.status == 200 else None
                at = time.perf_counter()
                if body:
                    totals = body.get("totals", body)
                    http_obs[line].append((at, int(totals.get("bevilget_ore", 0)) // AMOUNT_ORE))
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(http_poll_interval_s)

    async def poll_metrics(session, base_url: str) -> None:
        while not stop.is_set() and metric_name_part:
            try:
                async with session.get(f"{base_url}/metrics") as response:
                    text = await response.text()
                at = time.perf_counter()
                # Parse only the rows of our series: the generator shares the machine with the worker.
                samples = parse_metrics("\n".join(row for row in text.splitlines()
                                                  if metric_name_part in row and latency_row(row)))
                for line in lines:
                    amount = metric_line_amount(samples, metric_name_part, line)
                    if amount is not None:
                        metric_obs[line].append((at, int(round(amount * metric_scale)) // AMOUNT_ORE))
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(metrics_poll_interval_s)

    quoted_lines = [f'"{line}"' for line in lines]

    def latency_row(row: str) -> bool:
        return any(quoted in row for quoted in quoted_lines)

    metric_scale = 100 if metric_name_part and metric_name_part.endswith("nok") else 1

    def all_visible() -> bool:
        return all(http_obs[line] and max(c for _, c in http_obs[line]) >= len(scheduled[line]) for line in lines)

    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        # With several workers each line is asked of every worker; the freshest answer counts.
        pollers = [asyncio.create_task(poll_http(session, line, url)) for line in lines for url in base_urls]
        pollers += [asyncio.create_task(poll_metrics(session, url)) for url in base_urls]
        generator = asyncio.create_task(generate())
        last_report = time.perf_counter()
        while not sent_done.is_set():
            await asyncio.sleep(0.5)
            if time.perf_counter() - last_report > 5:
                last_report = time.perf_counter()
                print(f"  latency: {sum(map(len, scheduled.values()))}/{total} sent", file=sys.stderr, flush=True)
        await generator
        send_finished = time.perf_counter()
        drain_deadline = time.perf_counter() + drain_timeout_s
        while time.perf_counter() < drain_deadline and not all_visible():
            await asyncio.sleep(0.05)
        await asyncio.sleep(max(metrics_poll_interval_s * 3, 0.3))  # let /metrics catch the last counts too
        stop.set()
        await asyncio.gather(*pollers, return_exceptions=True)
    await producer.stop()

    http_all: list[float | None] = []
    metric_all: list[float | None] = []
    for line in lines:
        http_all += latencies_from_observations(scheduled[line], http_obs[line])
        metric_all += latencies_from_observations(scheduled[line], metric_obs[line])
    send_seconds = send_finished - started
    return {
        "offered_rate_per_s": rate_per_s,
        "duration_s": duration_s,
        "achieved_send_rate_per_s": round(total / send_seconds, 1),
        "lines": lines,
        "http": summarise(http_all),
        "metrics": summarise(metric_all) if metric_name_part else None,
        "http_polls": sum(map(len, http_obs.values())),
        "metrics_polls": sum(map(len, metric_obs.values())),
        "http_poll_interval_ms": http_poll_interval_s * 1000,
        "metrics_poll_interval_ms": metrics_poll_interval_s * 1000,
    }
