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
import sys
import time
from collections import defaultdict

from bench.ceiling_clock import CeilingClock
from services.shared.money import parse_nok_to_ore


async def consume(bootstrap: str, topic: str, partition_count: int, events: int, timeout_s: float) -> dict:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
                                fetch_max_bytes=32 * 1024 * 1024)
    clock = CeilingClock()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        seen = 0
        deadline = time.monotonic() + timeout_s
        while seen < events and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                if records:
                    clock.first_message()
                for record in records:
                    event = json.loads(record.value)
                    data = event["data"]
                    kind = event["type"].split(".")[3]
                    sums[data["line_id"]][kind] += parse_nok_to_ore(data["amount_nok"])
                    seen += 1
        result = clock.result(seen, sums)
    finally:
        await consumer.stop()
    return result


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
