"""Helpers for checking ingest from outside: read a topic, POST raw bytes. Used by tests and for debugging."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from services.shared.config import Settings
from services.shared.kafka_security import ADMIN, kafka_python_options


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]

    def json(self) -> Any:
        return json.loads(self.value)


def read_topic(settings: Settings, topic: str, min_count: int = 0, timeout_s: float = 30.0, settle_s: float = 1.0,
               principal: str = ADMIN) -> list[Record]:
    """Every committed record of a topic from the beginning; waits until at least min_count (or timeout), then settle_s more.

    read_committed: the services write in Kafka transactions, and an aborted one must not count.
    Reads as `principal` (the admin by default: tests and operators look at any topic).
    """
    consumer = KafkaConsumer(**kafka_python_options(settings, principal), enable_auto_commit=False, group_id=None,
                             isolation_level="read_committed",
                             consumer_timeout_ms=200, request_timeout_ms=30000)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + timeout_s
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Record] = []
        quiet_since = None
        while True:
            batch = consumer.poll(timeout_ms=200)
            for items in batch.values():
                for m in items:
                    records.append(Record(m.topic, m.partition, m.offset, m.key, m.value,
                                          {k: v for k, v in (m.headers or [])}))
            now = time.monotonic()
            if batch:
                quiet_since = None
            elif len(records) >= min_count:
                quiet_since = quiet_since or now
                if now - quiet_since >= settle_s:
                    return records
            if now >= deadline:
                return records
    finally:
        consumer.close()


def post(url: str, body: bytes, token: str | None = None, timeout_s: float = 60.0,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """POST bytes; returns (status, headers, decoded JSON body or raw text)."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method="POST", headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, reply_headers, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, reply_headers, payload = error.code, dict(error.headers), error.read()
    try:
        return status, reply_headers, json.loads(payload)
    except ValueError:
        return status, reply_headers, payload.decode("utf-8", "replace")
