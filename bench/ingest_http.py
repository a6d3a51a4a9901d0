"""Ingest over HTTP: events/s and latency for single and batched POST /v1/events.

Closed loop with a fixed number of concurrent clients, a bounded number of
requests and a time limit: this measures capacity, not latency at a given load.
"""
from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone

from bench.events import single_event
from bench.latency import percentile


async def post_load(base_url: str, token: str, ministry: str, run_id: str, requests: int, batch_size: int,
                    concurrency: int, time_limit_s: float) -> dict:
    import aiohttp

    now = datetime.now(timezone.utc)
    counter = iter(range(requests))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    accepted_events = 0
    deadline = time.perf_counter() + time_limit_s
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def body_for(request_no: int) -> bytes:
        events = [single_event(f"{run_id}-ingest", request_no * batch_size + i, 100, f"{run_id}-ingest", now,
                               ministry=ministry) for i in range(batch_size)]
        return json.dumps(events[0] if batch_size == 1 else events, separators=(",", ":")).encode()

    async def client(session) -> None:
        nonlocal accepted_events
        for request_no in counter:
            if time.perf_counter() > deadline:
                return
            body = body_for(request_no)
            started = time.perf_counter()
            async with session.post(f"{base_url}/v1/events", data=body, headers=headers) as response:
                await response.read()
                latencies.append(time.perf_counter() - started)
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status == 202:
                    accepted_events += batch_size

    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return {
        "batch_size": batch_size,
        "concurrency": concurrency,
        "requests": len(latencies),
        "accepted_events": accepted_events,
        "seconds": round(seconds, 2),
        "events_per_s": round(accepted_events / seconds, 1),
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }
