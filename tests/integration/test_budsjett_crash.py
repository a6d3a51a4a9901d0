"""Exactly-once through failure: kill -9 the worker, or restart the broker, mid-stream.

The totals after recovery must equal an independent oracle (the pure core run
over the same events in one go), to the øre; and the audit trail (read model)
must hold every accepted event exactly once, with deltas that add up to those
totals, without a `reformspor replay`.
"""
from __future__ import annotations

import json
import random
import urllib.request
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from sqlalchemy import select

from services.budsjett import core
from services.budsjett.readmodel import BudsjettEvent, ReadModel
from services.shared.contract import make_event, parse_event
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


def publish(bootstrap: str, topic: str, events: list[dict]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
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
            cells = {(c["ministry"], c["phase"]): c for c in read_model.cells_as_of(line_id, far_future)}
            for cell in core.line_totals(line)["cells"]:
                summed = cells.get((cell["ministry"], cell["phase"]))
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
    return [{k: c[k] for k in ("ministry", "phase", *core.TOTAL_FIELDS)} for c in cells]


def assert_equals_oracle(settings, expected: dict[str, dict], stack=None) -> None:
    target = sum(line["events"] for line in expected.values())
    try:
        wait_until(lambda: applied_so_far(settings) == target, 240,
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


def committed_offsets(admin: KafkaAdminClient, settings) -> int:
    """Sum of the budget offsets budsjett's consumer group has committed."""
    group = f"{settings.topic_prefix}budsjett"
    offsets = admin.list_group_offsets({group: None}).get(group, {})
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == settings.topics.budget and meta.offset > 0)


def test_kill_9_mid_stream_gives_oracle_totals_to_the_ore(stack, settings):
    events = scenario(20_000)
    expected = oracle(events)
    publish(settings.kafka_bootstrap, settings.topics.budget, events)
    stack.start_service("budsjett")
    # Kill right after an offset commit: the moment when events Faust considers done are
    # most likely to lack their audit rows if rows were written later than offsets commit.
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        seen = {"committed": 0}

        def just_committed() -> bool:
            committed = committed_offsets(admin, settings)
            fresh = committed != seen["committed"]
            seen["committed"] = committed
            return fresh and committed > 1_000

        wait_until(just_committed, 120, "an offset commit past 1000 events", interval_s=0.02)
        stack.stop_service("budsjett", hard=True)
    finally:
        admin.close()
    before_kill = seen["committed"]
    assert before_kill < sum(line["events"] for line in expected.values()), "crash must come mid-stream"
    stack.start_service("budsjett")
    assert_equals_oracle(settings, expected, stack)
    assert_audit_trail_complete(settings, events, expected)


def test_broker_restart_mid_stream_gives_oracle_totals(settings, tmp_path):
    # Our own broker: the session broker is shared with every other test.
    own = replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}", home=tmp_path / "own-home")
    local = LocalStack(own)
    events = scenario(5_000, seed=11)
    expected = oracle(events)
    try:
        local.start_kafka()
        publish(own.kafka_bootstrap, own.topics.budget, events[:2_500])
        local.start_service("budsjett")
        wait_until(lambda: applied_so_far(own) > 500, 120, "some events applied")
        local.kafka.kill()
        local.kafka.start()
        publish(own.kafka_bootstrap, own.topics.budget, events[2_500:])
        assert_equals_oracle(own, expected, local)
        assert_audit_trail_complete(own, events, expected)
    finally:
        local.down(progress=lambda _text: None)
