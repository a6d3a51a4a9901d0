"""budsjett in its consumer group: committed offsets follow what was applied, and /readyz
says ready only once the worker holds partitions."""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from services.shared.kafka_security import ADMIN, kafka_python_options
from services.budsjett.readmodel import ReadModel
from services.localstack.processes import free_port, spawn, stop_pid, wait_until
from services.shared.contract import make_event
from tests.integration.test_budsjett_service import metrics_text, publish

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=timezone.utc)


def grants(count: int) -> list[dict]:
    """Grants on 8 lines (all four partitions), no cross-line moves: the budget topic holds only
    these events, so its log-end offsets are exactly what there is to apply."""
    return [make_event("bevilget", "BFD", {"line_id": f"g-{i % 8}", "ministry": "BFD", "phase": "utredning",
                                           "amount_nok": f"{100 + i}.00", "kap": 840, "post": 70,
                                           "fiscal_year": 2026}, f"g{i}", T0 + timedelta(seconds=i))
            for i in range(count)]


def log_end_offsets(settings) -> dict[int, int]:
    consumer = KafkaConsumer(**kafka_python_options(settings, ADMIN))
    try:
        partitions = [TopicPartition(settings.topics.budget, p) for p in range(settings.partitions)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def committed_offsets(admin: KafkaAdminClient, settings) -> dict[int, int]:
    group = f"{settings.topic_prefix}budsjett"
    offsets = admin.list_group_offsets({group: None}).get(group, {})
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == settings.topics.budget}


def test_committed_offsets_reach_the_log_end_once_everything_is_applied(stack, settings):
    events = grants(400)
    publish(settings, events)
    stack.start_service("budsjett")
    read_model = ReadModel(settings.db_url("budsjett"))
    admin = KafkaAdminClient(**kafka_python_options(settings, ADMIN))
    try:
        wait_until(lambda: read_model.event_count() == len(events), 60, "every event applied")
        ends = log_end_offsets(settings)
        assert sum(ends.values()) == len(events) and all(ends.values())
        # The commit follows the checkpoint that wrote the read model (100 ms); 5 s leaves room for a busy machine.
        try:
            wait_until(lambda: committed_offsets(admin, settings) == ends, 5, "committed offsets at the log end")
        except TimeoutError as error:
            raise AssertionError(f"{error}: committed {committed_offsets(admin, settings)}, log end {ends}") from None
        lag_series = f'service="budsjett",topic="{settings.topics.budget}"}}'
        wait_until(lambda: (lag := [line for line in metrics_text(settings).splitlines()
                                    if line.startswith("reformspor_consumer_lag_messages{") and lag_series in line])
                   and len(lag) == settings.partitions and all(line.endswith(" 0.0") for line in lag),
                   5, "the lag metric to read 0 on every partition")

        # After a restart with nothing new to apply, every line's gauges are served again (from the read model).
        stack.stop_service("budsjett")
        stack.start_service("budsjett")
        wait_until(lambda: all(f'reformspor_budsjett_bevilget_ore{{line="g-{n}",ministry="BFD",phase="utredning",fiscal_year="2026"}}'
                               in metrics_text(settings) for n in range(8)), 30, "every line's gauges after a restart")
        assert read_model.event_count() == len(events)
    finally:
        admin.close()
        read_model.close()


def readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def member_partitions(settings, client_id: str) -> int:
    """Budget-topic partitions the member holds (its changelog partitions, for recovery, not counted)."""
    admin = KafkaAdminClient(**kafka_python_options(settings, ADMIN))
    try:
        group = f"{settings.topic_prefix}budsjett"
        described = admin.describe_groups([group]).get(group, {})
        return sum(len(assigned.get("partitions", []))
                   for member in described.get("members", []) if member.get("client_id") == client_id
                   for assigned in (member.get("member_assignment") or {}).get("assigned_partitions", [])
                   if assigned.get("topic") == settings.topics.budget)
    finally:
        admin.close()


def test_readyz_waits_until_the_worker_holds_partitions(stack, settings):
    # Worker "x" holds every partition, then dies by kill -9. Its static membership keeps them
    # until its session expires (10 s), so a new worker "y" holds none for that long.
    publish(settings, grants(8))
    stack.start_service("budsjett", instance="x")
    stack.stop_service("x", hard=True)
    port = free_port()
    env = {**settings.model_copy(update={"budsjett_port": port}).to_env(), "REFORMSPOR_INSTANCE": "y"}
    process = spawn([sys.executable, "-m", "services.cli", "budsjett"], stack.log_path("y"), env=env)
    try:
        answers = []

        def ready() -> bool:
            status, body = readyz(port)
            answers.append((status, body["problems"]))
            return status == 200

        wait_until(ready, 60, "y ready", interval_s=0.2)
        assert member_partitions(settings, "budsjett:y") > 0, "ready while holding no partitions"
        waiting = [problems for status, problems in answers if status == 503]
        assert waiting, "y said ready before it could hold partitions"
        assert any("holds no partitions" in problem for problems in waiting for problem in problems), waiting
    finally:
        stop_pid(process.pid, 20)
