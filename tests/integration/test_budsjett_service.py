"""budsjett as a real process on a real broker: totals over HTTP and /metrics, duplicates, dead letters."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
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


def grant(event_id, ministry, phase, nok, line="0-24", minute=0, year=2026):
    return make_event("bevilget", ministry, {"line_id": line, "ministry": ministry, "phase": phase, "amount_nok": nok,
                                             "kap": 840, "post": 70, "fiscal_year": year},
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
        grant("bfd-27", "BFD", "utredning", "3000000.00", minute=30, year=2027),  # next year: a cell of its own
    ]
    invalid = json.dumps({**grant("bad-1", "BFD", "utredning", "1"), "data": {
        "line_id": "0-24", "ministry": "BFD", "phase": "utredning", "amount_nok": "1.005", "kap": 840, "post": 70,
        "fiscal_year": 2026}}).encode()
    publish(settings, events, raw=[(b"0-24", invalid)])
    stack.start_service("budsjett")

    def settled():
        status, body = get_json(f"{base}/v1/lines/0-24")
        return status == 200 and body["events_applied"] == 5 and body

    wait_until(settled, 60, "budsjett applied the five distinct events")
    status, line = get_json(f"{base}/v1/lines/0-24?fiscal_year=2026")
    assert status == 200 and line["fiscal_year"] == 2026
    assert line["totals"]["bevilget_ore"] == 125000000 + 50000050  # the duplicate counted once, 2027 not at all
    assert line["totals"]["bevilget_nok"] == "1750000.50"
    assert {c["fiscal_year"] for c in line["cells"]} == {2026}
    status, all_years = get_json(f"{base}/v1/lines/0-24")
    assert {year: t["bevilget_ore"] for year, t in all_years["by_fiscal_year"].items()} == {
        "2026": 175000050, "2027": 300000000}
    status, only_2027 = get_json(f"{base}/v1/lines/0-24?fiscal_year=2027")
    assert only_2027["totals"]["disponibelt_ore"] == 300000000 and only_2027["flags"] == []
    kd = line["by_ministry"]["KD"]
    assert kd["forpliktet_ore"] == 50000000 and kd["utbetalt_ore"] == 10000000
    assert kd["disponibelt_ore"] == 50000050 - 50000000 - 10000000
    assert kd["disponibelt_ore"] < 0
    assert {"ministry": "KD", "phase": "utredning", "fiscal_year": 2026, "flag": "overcommitted"} in line["flags"]

    text = wait_until(lambda: (t := metrics_text(settings)) and 'outcome="duplicate",type="bevilget"} 1.0' in t and t,
                      30, "duplicate counted in /metrics")
    assert 'reformspor_budsjett_bevilget_ore{line="0-24",ministry="BFD",phase="utredning",fiscal_year="2026"} 125000000\n' in text  # exact øre
    assert 'reformspor_budsjett_overcommitted{line="0-24",ministry="KD",phase="utredning",fiscal_year="2026"} 1\n' in text
    assert 'reformspor_budsjett_bevilget_ore{line="0-24",ministry="BFD",phase="utredning",fiscal_year="2027"} 300000000\n' \
        in text
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
        return status == 200 and len(body["events"]) == 5 and body

    trail = wait_until(audited, 20, "read model has the audit trail")
    assert [(e["event_id"], e["fiscal_year"]) for e in trail["events"]] == [
        ("bfd-1", 2026), ("kd-1", 2026), ("kd-f1", 2026), ("kd-u1", 2026), ("bfd-27", 2027)]
    status, earlier = get_json(f"{base}/v1/lines/0-24?as_of=2026-03-01T10:02:00Z")
    assert status == 200 and earlier["totals"]["bevilget_ore"] == 125000000
    status, later = get_json(f"{base}/v1/lines/0-24?as_of=2026-03-01T10:45:00Z&fiscal_year=2027")
    assert status == 200 and later["totals"]["bevilget_ore"] == 300000000
    # Per kap/post (issue 15): the served by_post adds up to the totals, live and as of a moment.
    for document in (line, all_years, earlier, later):
        for name in ("bevilget_ore", "forpliktet_ore", "utbetalt_ore", "disponibelt_ore"):
            assert sum(p[name] for p in document["by_post"].values()) == document["totals"][name], name
    assert {key: p["bevilget_nok"] for key, p in line["by_post"].items()} == {"840.70": "1750000.50"}
    for bad_year in ("26", "year", "2026.0", "1999", "٢٠٢٦"):
        request = urllib.request.Request(f"{base}/v1/lines/0-24?fiscal_year={urllib.parse.quote(bad_year)}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 400
        assert refused.value.headers["Content-Type"].startswith("application/problem+json")
        assert "fiscal_year must be a fiscal year" in json.loads(refused.value.read())["detail"]
    status, missing = get_json(f"{base}/v1/lines/nope")
    assert status == 404 and "nope" in missing["detail"]
    status, bad = get_json(f"{base}/v1/lines/0-24?as_of=yesterday")
    assert status == 400 and "RFC 3339" in bad["detail"]

    # The live service pages the trail, serves its lists as CSV for Excel, and documents all of it.
    status, page = get_json(f"{base}/v1/lines/0-24/events?limit=2&offset=2")
    assert page["total"] == 5 and page["next"] == "/v1/lines/0-24/events?limit=2&offset=4"
    assert [e["event_id"] for e in page["events"]] == ["kd-f1", "kd-u1"]
    with urllib.request.urlopen(f"{base}/v1/lines?as_of=2026-03-01&format=csv", timeout=5) as response:
        assert response.headers["Content-Disposition"] == 'attachment; filename="budsjettlinjer-per-2026-03-01.csv"'
        csv_rows = [row.split(";") for row in response.read().decode("utf-8-sig").split("\r\n") if row]
    assert csv_rows[0][:2] == ["Linje", "Bevilget"] and csv_rows[1][:2] == ["0-24", "4750000,50"]
    status, spec = get_json(f"{base}/openapi.json")
    assert status == 200 and "/v1/lines/{line_id}/events" in spec["paths"]

    # Replay from the Kafka log reaches the same totals as live, and status prints them readably.
    from services.budsjett.cli import fetch_lines, render_status
    from services.budsjett.replay import replay

    summary = replay(settings, f"sqlite:///{settings.home / 'replay.db'}", progress=lambda _text: None)
    replayed, = summary["lines"]
    assert replayed["totals"] == {k: v for k, v in all_years["totals"].items() if k.endswith("_ore")}
    assert replayed["by_fiscal_year"] == {year: {k: v for k, v in t.items() if k.endswith("_ore")}
                                          for year, t in all_years["by_fiscal_year"].items()}
    documents, catalogue = fetch_lines(base)  # what `reformspor status` shows: a row per cell and year, sum per year
    table = render_status({"lines": documents, "catalogue": catalogue})
    rows = [[cell for cell in row.split(" ") if cell] for row in table.splitlines()]
    assert ["0-24", "2026", "sum", "1\u00a0750\u00a0000,50"] == rows[[r[:3] for r in rows].index(["0-24", "2026", "sum"])][:4]
    assert ["0-24", "2027", "sum", "3\u00a0000\u00a0000,00"] == rows[[r[:3] for r in rows].index(["0-24", "2027", "sum"])][:4]
    assert "overforpliktet" in table and "no catalogue loaded" in table

    # FIN closes 2026: the unspent money lapses (no catalogue: no rule lets it carry), shown in 2027 as
    # figures of their own; a late 2026 payment is refused with the closing named in the dead letter.
    year_end = datetime(2027, 1, 15, 12, 0, tzinfo=timezone.utc)
    publish(settings, [
        make_event("arsavslutning", "FIN", {"line_id": "0-24", "fiscal_year": 2026}, "fin-close-2026", year_end),
        make_event("utbetalt", "KD", {"line_id": "0-24", "ministry": "KD", "phase": "utredning",
                                      "amount_nok": "1.00", "fiscal_year": 2026}, "kd-late", year_end),
    ])
    closed = wait_until(lambda: (d := get_json(f"{base}/v1/lines/0-24?fiscal_year=2027")[1]) and
                        d.get("closed_years", {}).get("2026") and d, 30, "the closing applied")
    assert closed["closed_years"]["2026"]["closed_by"] == "FIN"
    cells = {c["ministry"]: c for c in closed["cells"]}
    assert cells["KD"]["bortfalt_ore"] == 50000050 - 10000000 and cells["KD"]["carry_rule"] == "bortfaller"
    assert cells["BFD"]["bortfalt_ore"] == 125000000 and cells["BFD"]["bevilget_ore"] == 300000000
    assert cells["BFD"]["disponibelt_ore"] == 300000000  # lapsed money is not available

    def late_letter():
        consumer = KafkaConsumer(settings.topics.dead_letter, **kafka_python_options(settings, ADMIN),
                                 auto_offset_reset="earliest", consumer_timeout_ms=3000)
        try:
            reasons = [dict(m.headers)[DEAD_LETTER_REASON_HEADER].decode() for m in consumer]
        finally:
            consumer.close()
        return next((r for r in reasons if "fiscal year 2026 of line 0-24 is closed" in r), None)

    reason = wait_until(late_letter, 30, "the late 2026 payment dead-lettered")
    assert "closing fin-close-2026 by FIN" in reason
