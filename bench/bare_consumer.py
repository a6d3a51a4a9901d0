"""The Python ceiling: a bare aiokafka consumer that parses JSON and sums amounts.

Run as its own process (`python -m bench.bare_consumer …`) so its CPU time is
its own. It reads the topic from the start without a consumer group, parses
every value with json.loads, turns amount_nok into øre with the project's
money parser and sums per line and kind. It prints one JSON object: timing,
CPU and the sums (the bench checks them against the oracle, so the ceiling is
known to have done the real work).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import defaultdict

from services.shared.money import parse_nok_to_ore


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def consume(bootstrap: str, topic: str, partition_count: int, events: int, timeout_s: float) -> dict:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
                                fetch_max_bytes=32 * 1024 * 1024)
    started = time.perf_counter()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        seen = 0
        first_at = first_cpu = None
        deadline = time.monotonic() + timeout_s
        while seen < events and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                if first_at is None and records:
                    first_at, first_cpu = time.perf_counter(), _cpu_s()
                for record in records:
                    event = json.loads(record.value)
                    data = event["data"]
                    kind = event["type"].split(".")[3]
                    sums[data["line_id"]][kind] += parse_nok_to_ore(data["amount_nok"])
                    seen += 1
        done_at, done_cpu = time.perf_counter(), _cpu_s()
    finally:
        await consumer.stop()
    first_at = first_at or done_at
    first_cpu = first_cpu if first_cpu is not None else done_cpu
    seconds = max(done_at - first_at, 1e-9)
    return {
        "events": seen,
        "seconds": seconds,
        "seconds_incl_startup": done_at - started,
        "events_per_s": seen / seconds,
        "cpu_s": done_cpu - first_cpu,
        "cpu_s_per_million": (done_cpu - first_cpu) / max(seen, 1) * 1_000_000,
        "sums": {line: dict(kinds) for line, kinds in sums.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args(argv)
    result = asyncio.run(consume(args.bootstrap, args.topic, args.partitions, args.events, args.timeout_s))
    json.dump(result, sys.stdout)
    return 0 if result["events"] >= args.events else 1


if __name__ == "__main__":
    sys.exit(main())
