"""budsjett as a real process on a real broker: totals over HTTP and /metrics, duplicates, dead letters."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest
from kafka import KafkaConsumer, KafkaProducer

from services.shared.kafka_security import ADMIN, kafka_python_options
from services.shared.contract import make_event
from services.localstack.processes import wait_until
from services.shared.streaming import DEAD_LETTER_REASON_HEADER

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


def grant(event_id, ministry, phase, nok, line="0-24", minute=0):
    return make_event("bevilget", ministry, {"line_id": line, "ministry": ministry, "phase": phase, "amount_nok": nok,
                                             "kap": 840, "post": 70, "fiscal_year": 2026},
                      event_id, T0.replace(minute=minute))


def publish(settings, events, raw=()):
    producer = KafkaProducer(**kafka_python_options(settings, ADMIN), acks="all")
    try:
        for event in events:
            producer.send(settings.topics.budget, key=event["data"]["line_id"].encode(),
                          value=json.dumps(event).encode())
        for key, value in raw:
            producer.send(settings.topics.budget, key=key, value=value)
        producer.flush(30)
    finally:
        producer.close()


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def metrics_text(settings):
    with urllib.request.urlopen(f"{settings.service_url('budsjett')}/metrics", timeout=5) as response:
        return response.read().decode()


def test_totals_over_http_and_metrics_with_duplicate_and_dead_letter(stack, settings):
    base = settings.service_url("budsjett")
    events = [
        grant("bfd-1", "BFD", "utredning", "1250000.00"),
        grant("kd-1", "KD", "utredning", "500000.50", minute=5),
        grant("bfd-1", "BFD", "utredning", "1250000.00"),  # publisher retry: same id, same content
        make_event("forpliktet", "KD", {"line_id": "0-24", "ministry": "KD", "phase": "utredning",
                                        "commitment_id": "K1", "amount_nok": "600000.00", "fiscal_year": 2026},
                   "kd-f1", T0.replace(minute=10)),
        make_event("utbetalt", "KD", {"line_id": "0-24", "ministry": "KD", "phase": "utredning",
                                      "commitment_id": "K1", "amount_nok": "100000.00", "fiscal_year": 2026},
                   "kd-u1", T0.replace(minute=20)),
    ]
    invalid = json.dumps({**grant("bad-1", "BFD", "utredning", "1"), "data": {
        "line_id": "0-24", "ministry": "BFD", "phase": "utredning", "amount_nok": "1.005", "kap": 840, "post": 70,
        "fiscal_year": 2026}}).encode()
    publish(settings, events, raw=[(b"0-24", invalid)])
    stack.start_service("budsjett")

    def settled():
        status, body = get_json(f"{base}/v1/lines/0-24")
        return status == 200 and body["events_applied"] == 4 and body

    line = wait_until(settled, 60, "budsjett applied the four distinct events")
    assert line["totals"]["bevilget_ore"] == 125000000 + 50000050  # the duplicate counted once
    assert line["totals"]["bevilget_nok"] == "1750000.50"
    kd = line["by_ministry"]["KD"]
    assert kd["forpliktet_ore"] == 50000000 and kd["utbetalt_ore"] == 10000000
    assert kd["disponibelt_ore"] == 50000050 - 50000000 - 10000000
    assert kd["disponibelt_ore"] < 0 and {"ministry": "KD", "phase": "utredning", "flag": "overcommitted"} in line["flags"]

    text = wait_until(lambda: (t := metrics_text(settings)) and 'outcome="duplicate",type="bevilget"} 1.0' in t and t,
                      30, "duplicate counted in /metrics")
    assert 'reformspor_budsjett_bevilget_ore{line="0-24",ministry="BFD",phase="utredning"} 125000000\n' in text  # exact øre
    assert 'reformspor_budsjett_overcommitted{line="0-24",ministry="KD",phase="utredning"} 1\n' in text
    assert 'reformspor_dead_letters_total{reason="invalid",service="budsjett"} 1.0' in text
    lag_series = f'service="budsjett",topic="{settings.topics.budget}"}}'

    def lag_lines() -> list[str]:
        return [l for l in metrics_text(settings).splitlines()
                if l.startswith("reformspor_consumer_lag_messages{") and lag_series in l]

    # Everything published has been processed: the lag reads 0 once the group's commit is seen.
    try:
        wait_until(lambda: (lag := lag_lines()) and all(l.endswith(" 0.0") for l in lag), 15,
                   "consumer lag 0 on the budget topic")
    except TimeoutError as error:
        raise AssertionError(f"{error}: {lag_lines()}") from None

    consumer = KafkaConsumer(settings.topics.dead_letter, **kafka_python_options(settings, ADMIN),
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    try:
        letters = [m for m in consumer]
    finally:
        consumer.close()
    assert len(letters) == 1
    reason = dict(letters[0].headers)[DEAD_LETTER_REASON_HEADER].decode()
    assert "more than two decimals" in reason

    # The audit trail behind the number, and the totals as they stood before KD's grant.
    def audited():
        status, body = get_json(f"{base}/v1/lines/0-24/events")
        return status == 200 and len(body["events"]) == 4 and body

    trail = wait_until(audited, 20, "read model has the audit trail")
    assert [e["event_id"] for e in trail["events"]] == ["bfd-1", "kd-1", "kd-f1", "kd-u1"]
    status, earlier = get_json(f"{base}/v1/lines/0-24?as_of=2026-03-01T10:02:00Z")
    assert status == 200 and earlier["totals"]["bevilget_ore"] == 125000000
    status, missing = get_json(f"{base}/v1/lines/nope")
    assert status == 404 and "nope" in missing["detail"]
    status, bad = get_json(f"{base}/v1/lines/0-24?as_of=yesterday")
    assert status == 400 and "RFC 3339" in bad["detail"]

    # Replay from the Kafka log reaches the same totals as live, and status prints them readably.
    from services.budsjett.cli import render_status
    from services.budsjett.replay import replay

    summary = replay(settings, f"sqlite:///{settings.home / 'replay.db'}", progress=lambda _text: None)
    replayed, = summary["lines"]
    assert replayed["totals"] == {k: v for k, v in line["totals"].items() if k.endswith("_ore")}
    status_code, listing = get_json(f"{base}/v1/lines")
    table = render_status(listing)
    assert "1\u00a0250\u00a0000,00" in table and "overforpliktet" in table
    assert "no catalogue loaded" in table
