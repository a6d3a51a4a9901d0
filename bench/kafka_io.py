"""Getting the workload into Kafka fast, and the broker's own consumer ceiling.

Loading: kcat (librdkafka) from a file is the fastest producer on this
machine; kafka-python is the fallback when kcat is missing. kcat is told to
partition with murmur2, the Java/kafka-python partitioner, so a line lands on
the same partition whichever client published it (Faust tables are
co-partitioned with their source topic).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterable

from services.localstack.kafka_local import java_command


def write_events_file(path: Path, pairs: Iterable[tuple[bytes, bytes]]) -> tuple[int, int]:
    """key<TAB>value per line (compact JSON has no raw tabs or newlines); returns (count, bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = size = 0
    with open(path, "wb", buffering=1 << 20) as out:
        for key, value in pairs:
            out.write(key + b"\t" + value + b"\n")
            count += 1
            size += len(value)
    return count, size


def load_with_kcat(bootstrap: str, topic: str, path: Path, timeout_s: float = 900.0) -> None:
    command = [
        "kcat", "-P", "-q", "-b", bootstrap, "-t", topic, "-K", "\t", "-l", str(path),
        "-X", "partitioner=murmur2_random",
        "-X", "linger.ms=20",
        "-X", "batch.num.messages=10000",
        "-X", "batch.size=1000000",
        "-X", "queue.buffering.max.messages=500000",
        "-X", "acks=all",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"kcat failed ({result.returncode}): {result.stderr[-2000:]}")


def load_with_kafka_python(bootstrap: str, topic: str, path: Path) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024,
                             buffer_memory=256 * 1024 * 1024, max_in_flight_requests_per_connection=5)
    try:
        with open(path, "rb") as source:
            for line in source:
                key, _, value = line.rstrip(b"\n").partition(b"\t")
                producer.send(topic, key=key, value=value)
        producer.flush(timeout=600)
    finally:
        producer.close()


def load_file(bootstrap: str, topic: str, path: Path, count: int, prefer: str = "kcat") -> dict:
    """Publish every line of `path`; returns the loader used, seconds and events/s."""
    loader = "kcat" if prefer == "kcat" and shutil.which("kcat") else "kafka-python"
    start = time.perf_counter()
    if loader == "kcat":
        load_with_kcat(bootstrap, topic, path)
    else:
        load_with_kafka_python(bootstrap, topic, path)
    seconds = time.perf_counter() - start
    landed = topic_message_count(bootstrap, topic)
    if landed < count:
        raise RuntimeError(f"{loader} loaded {landed} of {count} events into {topic}")
    return {"loader": loader, "events": count, "seconds": seconds, "events_per_s": count / seconds}


def topic_message_count(bootstrap: str, topic: str) -> int:
    """Sum of end offsets over the topic's partitions (nothing is ever deleted here)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


_PERF_HEADER = re.compile(r"^\s*start\.time,", re.MULTILINE)


def parse_consumer_performance(output: str) -> dict:
    """Parse ConsumerPerformance's CSV (header line + one data line) into a dict of floats."""
    match = _PERF_HEADER.search(output)
    if not match:
        raise ValueError(f"no ConsumerPerformance header in output: {output[-500:]!r}")
    lines = [line for line in output[match.start():].splitlines() if line.strip()]
    names = [name.strip() for name in lines[0].split(",")]
    values = [value.strip() for value in lines[1].split(",")]
    parsed = {}
    for name, value in zip(names, values):
        try:
            parsed[name] = float(value)
        except ValueError:
            parsed[name] = value
    return parsed


def broker_ceiling(bootstrap: str, topic: str, messages: int, timeout_s: float = 600.0) -> dict:
    """Kafka's own kafka-consumer-perf-test class over the same topic."""
    command = java_command("org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", bootstrap,
                           "--topic", topic, "--messages", str(messages), "--timeout", "60000",
                           "--group", f"bench-perf-{int(time.time() * 1000)}", heap="1g")
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    wall_s = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"ConsumerPerformance failed: {result.stdout[-1000:]}{result.stderr[-2000:]}")
    parsed = parse_consumer_performance(result.stdout)
    return {
        "events": int(parsed.get("data.consumed.in.nMsg", 0)),
        "events_per_s": parsed.get("nMsg.sec"),
        "fetch_events_per_s": parsed.get("fetch.nMsg.sec"),
        "mb_per_s": parsed.get("MB.sec"),
        "jvm_wall_s": wall_s,
        "raw": parsed,
    }


def committed_events(admin, group: str, topic: str) -> int:
    """Input events a consumer group has committed on `topic`: the sum of its committed offsets.

    `admin` is a kafka-python KafkaAdminClient (kept open by the caller: this is polled).
    """
    committed = admin.list_group_offsets({group: None}).get(group, {})
    return sum(offset.offset for tp, offset in committed.items() if tp.topic == topic and offset.offset > 0)
