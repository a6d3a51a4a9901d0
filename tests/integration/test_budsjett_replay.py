"""`reformspor replay`: one process per partition gives the same read model as one process for the whole log,
and both decide as the live worker does (state per line, read_committed)."""
from __future__ import annotations

import gc
import json
from datetime import datetime, timedelta, timezone

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from services.shared.kafka_security import ADMIN, kafka_python_options
from services.budsjett import core
from services.budsjett.readmodel import ReadModel
from services.budsjett.replay import replay
from services.shared.contract import make_event, parse_event
from services.shared.topics import ensure_topics

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
# On 4 partitions (murmur2): 0-24 -> 2, ung-1 -> 3, l-1 -> 0, l-4 -> 1, l-6 -> 0.
LINES = ("0-24", "ung-1", "l-1", "l-4", "l-6")
MINISTRIES = ("BFD", "KD", "HOD")


def event(kind, ministry, data, event_id, minute):
    return make_event(kind, ministry, data, event_id, T0 + timedelta(minutes=minute))


def ledger_log() -> list[dict]:
    """Grants, commitments, payments, a retry, a conflict, cross-line reallocations and corrections, on 5 lines."""
    log, minute = [], 0
    for n, line in enumerate(LINES):
        for ministry in MINISTRIES:
            minute += 1
            log.append(event("bevilget", ministry, {"line_id": line, "ministry": ministry, "phase": "utredning",
                                                    "amount_nok": f"{1000 + 37 * n}.25", "kap": 840, "post": 70,
                                                    "fiscal_year": 2026}, f"b-{line}-{ministry}", minute))
            log.append(event("forpliktet", ministry, {"line_id": line, "ministry": ministry, "phase": "utredning",
                                                      "commitment_id": f"K-{ministry}", "amount_nok": "300.10",
                                                      "fiscal_year": 2026}, f"f-{line}-{ministry}", minute))
            log.append(event("utbetalt", ministry, {"line_id": line, "ministry": ministry, "phase": "utredning",
                                                    "commitment_id": f"K-{ministry}", "amount_nok": "120.05",
                                                    "fiscal_year": 2026}, f"u-{line}-{ministry}", minute))
    log.append(log[0])  # a publisher's retry: same id, same content
    log.append({**log[1], "data": {**log[1]["data"], "amount_nok": "999.99"}})  # same id, other content: conflict
    for n, (source, target) in enumerate(zip(LINES, LINES[1:] + LINES[:1])):
        log.append(event("omdisponert", "BFD", {"line_id": source, "amount_nok": f"{50 + n}.00",
                                                "from": {"ministry": "BFD", "phase": "utredning"},
                                                "to": {"ministry": "BFD", "phase": "utvikling", "line_id": target},
                                                "fiscal_year": 2026}, f"o-{source}", 100 + n))
    log.append(event("korrigert", "BFD", {"line_id": "0-24", "corrects_id": "o-0-24", "reason": "feilføring"},
                     "k-o-0-24", 200))
    log.append(event("korrigert", "KD", {"line_id": "l-4", "corrects_id": "u-l-4-KD", "reason": "feilføring"},
                     "k-u-l-4", 201))
    return log


def publish_with_credits(settings, log: list[dict]) -> dict:
    """Publish the log, then the cross-line credits the live worker sends; return the expected store."""
    store, outcomes = core.run_log([parse_event(document) for document in log])
    credits = [send.to_wire() for outcome in outcomes if outcome.status == "applied" for send in outcome.sends]
    assert credits, "the log must contain cross-line reallocations"
    producer = KafkaProducer(**kafka_python_options(settings, ADMIN), acks="all")
    try:
        for document in log + credits:
            producer.send(settings.topics.budget, key=document["data"]["line_id"].encode(),
                          value=json.dumps(document).encode())
        producer.flush(30)
    finally:
        producer.close()
    return store


def partitions_used(settings) -> int:
    consumer = KafkaConsumer(**kafka_python_options(settings, ADMIN), )
    try:
        ends = consumer.end_offsets([TopicPartition(settings.topics.budget, p) for p in range(settings.partitions)])
        return sum(1 for offset in ends.values() if offset > 0)
    finally:
        consumer.close()


def read_model(db_url: str) -> dict:
    model = ReadModel(db_url)
    try:
        cells = model.cells()
        return {"cells": cells, "events": {line: model.events(line) for line in sorted({c["line_id"] for c in cells})},
                "flags": {line: model.flags(line) for line in LINES}, "count": model.event_count()}
    finally:
        model.close()


def test_parallel_replay_equals_sequential_and_live_rules_on_several_partitions(settings):
    ensure_topics(settings)
    expected = publish_with_credits(settings, ledger_log())
    assert partitions_used(settings) == 4

    said: list[str] = []
    sequential = replay(settings, f"sqlite:///{settings.home / 'seq.db'}", progress=said.append, workers=1)
    parallel = replay(settings, f"sqlite:///{settings.home / 'par.db'}", progress=lambda _text: None, workers=2)

    # The user sees where a slow replay's time went (rules, read model, the rest), and an in-process replay
    # leaves the caller's garbage collector as it found it.
    assert any(text.startswith("  partitions 0, 1, 2, 3:") and "rules" in text and "read model" in text for text in said)
    assert gc.isenabled()
    assert parallel["workers"] == 2
    assert parallel["lines"] == sequential["lines"]
    assert parallel["counts"] == sequential["counts"]
    assert sequential["counts"]["duplicate"] == 1 and sequential["counts"]["conflict"] == 1
    # Totals to the øre equal the pure core's over the same log (transfers applied once, never re-sent).
    assert {line["line_id"]: line["totals"] for line in parallel["lines"]} == {
        line_id: core.line_totals(line)["totals"] for line_id, line in core.lines_in(expected).items()}
    seq_model = read_model(f"sqlite:///{settings.home / 'seq.db'}")
    par_model = read_model(f"sqlite:///{settings.home / 'par.db'}")
    assert par_model == seq_model
    assert par_model["count"] == sequential["counts"]["applied"]
    corrected = [e for e in par_model["events"]["0-24"] if e["event_id"] == "o-0-24"]
    assert corrected and corrected[0]["corrected_by"] == "k-o-0-24"


def test_an_event_id_reused_on_a_line_of_another_partition_is_judged_per_line(settings):
    # The live worker keeps a line's id records under the line (ingest refuses an id reused with other
    # content before it reaches the budget topic); replay, in parallel or not, decides the same way.
    ensure_topics(settings)
    grant = event("bevilget", "BFD", {"line_id": "l-1", "ministry": "BFD", "phase": "utredning",
                                      "amount_nok": "10.00", "kap": 840, "post": 70, "fiscal_year": 2026}, "same-id", 1)
    reused = {**grant, "data": {**grant["data"], "line_id": "l-4"}}  # l-1 is on partition 0, l-4 on partition 1
    other = event("bevilget", "KD", {"line_id": "0-24", "ministry": "KD", "phase": "utredning",
                                     "amount_nok": "5.00", "kap": 840, "post": 70, "fiscal_year": 2026}, "other", 2)
    documents = [grant, reused, grant, other]  # the second grant on l-1 is a publisher's retry
    producer = KafkaProducer(**kafka_python_options(settings, ADMIN), acks="all")
    try:
        for document in documents:
            producer.send(settings.topics.budget, key=document["data"]["line_id"].encode(),
                          value=json.dumps(document).encode())
        producer.flush(30)
    finally:
        producer.close()

    parallel = replay(settings, f"sqlite:///{settings.home / 'par.db'}", progress=lambda _text: None, workers=2)
    sequential = replay(settings, f"sqlite:///{settings.home / 'seq.db'}", progress=lambda _text: None, workers=1)

    assert parallel["counts"] == sequential["counts"] == {"applied": 3, "duplicate": 1}
    applied = {line["line_id"]: line["totals"]["bevilget_ore"] for line in parallel["lines"]}
    assert applied == {"l-1": 1000, "l-4": 1000, "0-24": 500}
    assert parallel["lines"] == sequential["lines"]
