"""Exactly-once through failure: 20 kill -9 of the worker and a broker restart while events stream in.

The totals after recovery must equal an independent oracle (the pure core run
over the same events in one go), to the øre: over HTTP, on the totals topic
(read_committed, as milepael reads it) and in a `reformspor replay` of the log;
and the audit trail (read model) must hold every accepted event exactly once,
with deltas that add up to those totals. A restarted worker must be applying
again within seconds (static group membership), not after its predecessor's
session expires.
"""
from __future__ import annotations

import json
import queue
import random
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import select

from services.budsjett import core
from services.budsjett.readmodel import BudsjettEvent, ReadModel
from services.budsjett.replay import replay
from services.shared.contract import make_event, parse_event
from services.shared.kafka_security import ADMIN, kafka_python_options
from services.localstack.processes import free_port, wait_until
from services.localstack.stack import LocalStack

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)
LINES = ("0-24", "ung-1", "ung-2", "rus-3", "vold-4")
MINISTRIES = ("BFD", "KD", "HOD", "AID", "JD")
PHASES = ("utredning", "utvikling", "implementering")


def scenario(count: int, seed: int = 7) -> list[dict]:
    """Realistic mixed activity with ~5 % publisher retries (same id, same content)."""
    rnd = random.Random(seed)
    events: list[dict] = []
    commitments: list[tuple[str, str, str, str]] = []
    for i in range(count):
        if events and rnd.random() < 0.05:
            events.append(rnd.choice(events))
            continue
        line, ministry, phase = rnd.choice(LINES), rnd.choice(MINISTRIES), rnd.choice(PHASES)
        time = T0 + timedelta(seconds=i)
        nok = f"{rnd.randint(1, 5_000_000)}.{rnd.randint(0, 99):02d}"
        base = {"line_id": line, "ministry": ministry, "phase": phase, "fiscal_year": 2026}
        roll = rnd.random()
        if roll < 0.35:
            events.append(make_event("bevilget", ministry, {**base, "amount_nok": nok, "kap": 840, "post": 70},
                                     f"b{i}", time))
        elif roll < 0.5:
            cid = f"K{i}"
            commitments.append((line, ministry, phase, cid))
            events.append(make_event("forpliktet", ministry, {**base, "commitment_id": cid, "amount_nok": nok},
                                     f"f{i}", time))
        elif roll < 0.75:
            data = {**base, "amount_nok": nok}
            if commitments and rnd.random() < 0.5:
                line, ministry, phase, cid = rnd.choice(commitments)
                data = {"line_id": line, "ministry": ministry, "phase": phase, "fiscal_year": 2026,
                        "amount_nok": nok, "commitment_id": cid}
            events.append(make_event("utbetalt", ministry, data, f"u{i}", time))
        else:
            target_line = rnd.choice(LINES)
            to_phase = rnd.choice([p for p in PHASES if p != phase]) if target_line == line else phase
            events.append(make_event("omdisponert", ministry, {
                "line_id": line, "amount_nok": nok, "fiscal_year": 2026,
                "from": {"ministry": ministry, "phase": phase},
                "to": {"ministry": rnd.choice(MINISTRIES), "phase": to_phase, "line_id": target_line}}, f"o{i}", time))
    return events


def publish(settings, topic: str, events: list[dict]) -> None:
    producer = KafkaProducer(**kafka_python_options(settings, ADMIN), acks="all", linger_ms=20,
                             batch_size=256 * 1024)
    try:
        for event in events:
            producer.send(topic, key=event["data"]["line_id"].encode(), value=json.dumps(event).encode())
        producer.flush(60)
    finally:
        producer.close()


def oracle(events: list[dict]) -> dict[str, dict]:
    store, _ = core.run_log([parse_event(e) for e in events])
    return {line_id: line for line_id, line in core.lines_in(store).items()}


def accepted_ids(events: list[dict]) -> set[str]:
    """Ids of every event the oracle applies, derived cross-line credits included."""
    _, outcomes = core.run_log([parse_event(e) for e in events])
    return {o.event_id for o in outcomes if o.status == "applied"}


def assert_audit_trail_complete(settings, events: list[dict], expected: dict[str, dict]) -> None:
    """Every accepted event in the read model once, and its deltas sum to the oracle's totals."""
    wanted = accepted_ids(events)
    read_model = ReadModel(settings.db_url("budsjett"))
    try:
        def recorded() -> list[str]:
            with read_model.engine.connect() as connection:
                return connection.execute(select(BudsjettEvent.event_id)).scalars().all()

        try:
            wait_until(lambda: set(recorded()) == wanted, 30, "read model holds every accepted event")
        except TimeoutError:
            have = set(recorded())
            raise AssertionError(f"audit trail: {len(wanted - have)} accepted events missing "
                                 f"(e.g. {sorted(wanted - have)[:5]}), {len(have - wanted)} unexpected") from None
        ids = recorded()
        assert len(ids) == len(set(ids)) == len(wanted)
        far_future = datetime(2100, 1, 1, tzinfo=timezone.utc)
        for line_id, line in expected.items():
            cells = {(c["ministry"], c["phase"], c["fiscal_year"]): c
                     for c in read_model.cells_as_of(line_id, far_future)}
            for cell in core.line_totals(line)["cells"]:
                summed = cells.get((cell["ministry"], cell["phase"], cell["fiscal_year"]))
                assert summed is not None and all(summed[k] == cell[k] for k in core.TOTAL_FIELDS), (line_id, cell)
    finally:
        read_model.close()


def live_lines(settings) -> dict[str, dict]:
    with urllib.request.urlopen(f"{settings.service_url('budsjett')}/v1/lines", timeout=5) as response:
        lines = json.loads(response.read())["lines"]
    return {line["line_id"]: line for line in lines}


def applied_so_far(settings) -> int:
    try:
        return sum(line["events_applied"] for line in live_lines(settings).values())
    except OSError:
        return 0


def live_cells(settings, line_id: str) -> list[dict]:
    with urllib.request.urlopen(f"{settings.service_url('budsjett')}/v1/lines/{line_id}", timeout=5) as response:
        cells = json.loads(response.read())["cells"]
    return [{k: c[k] for k in ("ministry", "phase", "fiscal_year", *core.TOTAL_FIELDS)} for c in cells]


def assert_equals_oracle(settings, expected: dict[str, dict], stack=None, supervise=lambda: True) -> None:
    target = sum(line["events"] for line in expected.values())
    try:
        wait_until(lambda: supervise() and applied_so_far(settings) == target, 120,
                   f"all {target} distinct events (incl. cross-line credits) applied")
    except TimeoutError as error:
        counts = {k: v["events_applied"] for k, v in live_lines(settings).items()}
        wanted = {k: v["events"] for k, v in expected.items()}
        log = stack.tail_log("budsjett") if stack else ""
        raise AssertionError(f"{error}: live {counts} vs oracle {wanted}\n{log}") from None
    for line_id, line in expected.items():
        assert live_cells(settings, line_id) == core.line_totals(line)["cells"], line_id
    # Nothing counted twice: a little longer and the count has not moved past the oracle.
    assert applied_so_far(settings) == target


KILLS = 20
EVENTS = 3_000
PUBLISH_PER_S = 60
BROKER_RESTART_AT = KILLS // 2  # after this many kills
# A restarted worker must apply again within this long (the bound; without static
# membership it waited ~50-65 s for its dead predecessor's session to expire).
RESTART_TO_APPLY_S = 10.0


class Publisher(threading.Thread):
    """Publishes the scenario in order, chunk by chunk as released, each event acknowledged before the next."""

    def __init__(self, settings, events: list[dict]):
        super().__init__(name="publisher", daemon=True)
        self.settings = settings
        self.chunks: queue.Queue = queue.Queue()
        self.pending = list(events)
        self.paused = threading.Lock()  # held by the test while the broker restarts
        self.error: Exception | None = None

    def release(self, count: int | None = None) -> None:
        """Stream the next `count` events (all the rest when None)."""
        count = len(self.pending) if count is None else count
        chunk, self.pending = self.pending[:count], self.pending[count:]
        self.chunks.put(chunk)

    def run(self) -> None:
        producer = KafkaProducer(**kafka_python_options(self.settings, ADMIN), acks="all", retries=20,
                                 max_in_flight_requests_per_connection=1)
        try:
            while (chunk := self.chunks.get()) is not None:
                for event in chunk:
                    with self.paused:
                        producer.send(self.settings.topics.budget, key=event["data"]["line_id"].encode(),
                                      value=json.dumps(event).encode()).get(timeout=60)
                    time.sleep(1 / PUBLISH_PER_S)  # the pace of the stream
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.error = error
        finally:
            producer.close()


def supervised(local: LocalStack) -> bool:
    """Start budsjett again if it exited, as its supervisor (systemd's Restart=always) would.

    A broker restart longer than the session timeout can fence the worker's static member a
    little later (librdkafka: "static consumer fenced"); it then exits 70 without committing.
    """
    if local.pid_file("budsjett").running_pid() is None:
        local.start_service("budsjett", timeout_s=60)
    return True


def restart_and_time_first_apply(local: LocalStack, read_model: ReadModel) -> float:
    """Start the worker; seconds from the start until it has applied an event it had not before."""
    applied_before = read_model.event_count()
    started = time.monotonic()
    local.start_service("budsjett", timeout_s=60)
    wait_until(lambda: read_model.event_count() > applied_before, 60, "the restarted worker to apply an event",
               interval_s=0.05)
    return time.monotonic() - started


def restart_broker(local: LocalStack, publisher: Publisher, read_model: ReadModel, events: int) -> bool:
    """Kill -9 the broker and start it again; True if the worker lived through it.

    `events` more are released while the broker is down, so there is something to apply
    after it is back (the last chunk may be applied in full before the broker stops).
    A worker whose transaction the broker fenced meanwhile stops (exit 70, nothing committed);
    the test then restarts it, as its supervisor would.
    """
    with publisher.paused:
        publisher.release(events)
        local.kafka.kill()
        local.kafka.start()
    applied_before = read_model.event_count()
    survived = True

    def applying() -> bool:
        nonlocal survived
        if local.pid_file("budsjett").running_pid() is None:
            survived = False
            local.start_service("budsjett", timeout_s=60)
        return read_model.event_count() > applied_before

    try:
        wait_until(applying, 90, "applying again after the broker restart", interval_s=0.2)
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{local.tail_log('budsjett', 6000)}") from None
    return survived


def totals_topic_snapshots(settings) -> dict[str, dict]:
    """The last committed totals message per line, read as milepael reads it."""
    consumer = KafkaConsumer(**kafka_python_options(settings, ADMIN), enable_auto_commit=False,
                             isolation_level="read_committed")
    try:
        partitions = [TopicPartition(settings.topics.totals, p)
                      for p in consumer.partitions_for_topic(settings.topics.totals) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        latest: dict[str, dict] = {}
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                latest.update({record.key.decode(): json.loads(record.value) for record in batch})
        return latest
    finally:
        consumer.close()


@pytest.mark.timeout(330)
def test_twenty_kill_9_and_a_broker_restart_while_events_stream_in_give_oracle_totals(settings, tmp_path):
    # Our own broker: it is restarted, and the session broker is shared with every other test.
    own = settings.model_copy(update=dict(kafka_bootstrap=f"127.0.0.1:{free_port()}", home=tmp_path / "own-home",
                                         kafka_secrets_dir="", kafka_ca_file=""))  # its own broker's credentials, under its own home
    local = LocalStack(own)
    events = scenario(EVENTS, seed=11)
    expected = oracle(events)
    publisher = Publisher(own, events)
    rnd = random.Random(3)
    read_model = None
    try:
        local.start_kafka()
        read_model = ReadModel(own.db_url("budsjett"))
        publisher.start()
        chunk = EVENTS // (KILLS + 2)
        publisher.release(chunk)
        local.start_service("budsjett")
        seconds_to_apply = []
        for kill in range(KILLS):
            # Released before the kill point is chosen, so events are on their way whatever the worker has
            # applied already (a worker that catches up in one checkpoint left none to wait for); the rest
            # of the chunk streams while the worker is dead and restarting.
            publisher.release(chunk)
            kill_at = read_model.event_count() + rnd.randint(1, 60)  # mid-stream, at a random point
            wait_until(lambda: supervised(local) and read_model.event_count() >= kill_at, 60, "more events applied")
            local.stop_service("budsjett", hard=True)
            seconds_to_apply.append(restart_and_time_first_apply(local, read_model))
            print(f"restart {kill + 1}: applying after {seconds_to_apply[-1]:.1f} s", flush=True)
            if kill == BROKER_RESTART_AT:
                survived = restart_broker(local, publisher, read_model, chunk)
                print(f"broker restarted; the worker {'lived through it' if survived else 'was restarted'}")
        publisher.release()
        publisher.chunks.put(None)
        publisher.join(120)
        assert publisher.error is None and not publisher.is_alive(), publisher.error

        assert_equals_oracle(own, expected, local, supervise=lambda: supervised(local))
        assert_audit_trail_complete(own, events, expected)
        snapshots = totals_topic_snapshots(own)
        assert {line_id: snapshots[line_id]["cells"] for line_id in expected} == {
            line_id: core.line_totals(line)["cells"] for line_id, line in expected.items()}
        replayed = replay(own, f"sqlite:///{tmp_path / 'replay.db'}", progress=lambda _text: None, workers=2)
        assert {line["line_id"]: line["totals"] for line in replayed["lines"]} == {
            line_id: core.line_totals(line)["totals"] for line_id, line in expected.items()}
        assert max(seconds_to_apply) <= RESTART_TO_APPLY_S, [round(s, 1) for s in seconds_to_apply]
        print(f"\n{KILLS} kill -9 + a broker restart; seconds from restart to first applied event: "
              f"max {max(seconds_to_apply):.1f}, median {sorted(seconds_to_apply)[KILLS // 2]:.1f}")
    finally:
        publisher.chunks.put(None)
        if read_model is not None:
            read_model.close()
        local.down(progress=lambda _text: None)
