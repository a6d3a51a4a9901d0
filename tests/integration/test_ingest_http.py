"""ingest over HTTP against a real broker: status codes, bodies, topics, dead letters, restarts."""
from __future__ import annotations

import json
import re
import urllib.request

import pytest

from services.ingest.samples import sample_event
from services.ingest.store import IngestStore
from services.ingest.testing import post, read_topic
from services.ingest.tokens import issue_token
from services.shared.streaming import DEAD_LETTER_REASON_HEADER

pytestmark = pytest.mark.integration


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_front_door_end_to_end(stack, settings):
    bfd = issue_token(settings, "BFD", name="BFD økonomisystem")
    kd = issue_token(settings, "KD")
    stack.start_service("ingest")
    url = settings.service_url("ingest") + "/v1/events"

    def send(document, token=bfd, raw=None, query=""):
        return post(url + query, raw if raw is not None else json.dumps(document).encode(), token)

    # valid → 202, on the budget topic keyed by line_id; a reform event → reform topic
    status, _, body = send(sample_event(event_id="bfd-1", line_id="0-24"))
    assert (status, body["status"]) == (202, "accepted")
    status, _, body = send(sample_event("milepael_fullfort", event_id="bfd-m1"))
    assert status == 202
    # duplicate → 200 duplicate; same id, other content → 409 problem
    status, _, body = send(sample_event(event_id="bfd-1", line_id="0-24"))
    assert (status, body["status"]) == (200, "duplicate")
    status, headers, body = send(sample_event(event_id="bfd-1", line_id="0-24", amount_nok="1.00"))
    assert status == 409 and headers["Content-Type"].startswith("application/problem+json")
    assert body["errors"][0]["path"] == "id"

    # invalid → 422 with every field error, raw input on the dead-letter topic with the reason
    bad = json.dumps(sample_event(event_id="bfd-bad")).replace('"1250000.00"', "1250000.5")
    status, headers, body = send(None, raw=bad.encode())
    assert status == 422 and headers["Content-Type"].startswith("application/problem+json")
    assert body["title"] == "Invalid event" and body["errors"][0]["path"] == "data.amount_nok"
    assert "float" in body["errors"][0]["reason"]

    # another ministry's numbers → 403, through the source or through the data
    status, _, body = send(sample_event(ministry="KD", event_id="kd-by-bfd"))
    assert status == 403 and "urn:no:dep:KD" in body["detail"]
    sneaky = sample_event(event_id="bfd-for-kd")
    sneaky["data"]["ministry"] = "KD"
    assert send(sneaky)[0] == 403
    assert send(sample_event(ministry="KD", event_id="kd-1", line_id="0-24"), token=kd)[0] == 202

    # authentication
    status, headers, body = send(sample_event(event_id="x"), token=None)
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert send(sample_event(event_id="x"), token="rfs_bfd_guess")[0] == 401

    # batch: good ones accepted, bad one reported by index; atomic: nothing sent
    batch = [sample_event(event_id="b-1"), sample_event(event_id="b-2", phase="planlegging"), sample_event(event_id="b-3")]
    status, _, body = send(batch)
    assert status == 207 and [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    atomic = [sample_event(event_id="a-1"), sample_event(event_id="a-2", kap="840")]
    status, _, body = send(atomic, query="?atomic=true")
    assert status == 422 and [e["index"] for e in body["errors"]] == [1]
    assert body["results"][0]["code"] == "not_sent"

    # limits: never a 5xx, never a hang
    assert send(None, raw=b" " * (1_048_576 + 10))[0] == 413
    assert send([sample_event(event_id=f"many-{i}") for i in range(501)])[0] == 413
    assert send(None, raw=b"[" * 5000 + b"]" * 5000)[0] == 422
    assert send(None, raw=b'{"id": ' + b"9" * 400 + b"}")[0] == 422
    assert send(None, raw=b"{not json")[0] == 400
    assert send(sample_event(event_id="long", description="x" * 5000))[0] == 422
    assert send(sample_event("utbetalt", event_id="huge", description="x" * 1_000_000))[0] == 422

    # what reached Kafka: each accepted event exactly once, keyed, with the publisher header
    budget = read_topic(settings, settings.topics.budget, min_count=4)
    ids = sorted(r.json()["id"] for r in budget)
    assert ids == ["b-1", "b-3", "bfd-1", "kd-1"]
    by_id = {r.json()["id"]: r for r in budget}
    assert by_id["bfd-1"].key == b"0-24" and by_id["bfd-1"].headers["reformspor-publisher"] == b"BFD"
    assert by_id["bfd-1"].json()["data"]["amount_nok"] == "1250000.00"
    assert "__faust" not in by_id["bfd-1"].value.decode()
    reform = read_topic(settings, settings.topics.reform, min_count=1)
    assert [(r.key, r.json()["id"]) for r in reform] == [(b"R-1", "bfd-m1")]

    dead = read_topic(settings, settings.topics.dead_letter, min_count=10)
    reasons = {r.value[:200]: r.headers[DEAD_LETTER_REASON_HEADER].decode() for r in dead}
    float_letter = next(r for r in dead if b'"bfd-bad"' in r.value)
    assert b"1250000.5" in float_letter.value  # the raw float, not a string
    assert "float" in float_letter.headers[DEAD_LETTER_REASON_HEADER].decode()
    assert any("urn:no:dep:KD" in reason for reason in reasons.values())
    assert any("already accepted with different content" in reason for reason in reasons.values())
    huge = next(r for r in dead if b'"huge"' in r.value[:300])
    assert "message cut from" in huge.headers[DEAD_LETTER_REASON_HEADER].decode()

    # metrics a user (and an alert) relies on
    text = urllib.request.urlopen(settings.service_url("ingest") + "/metrics", timeout=5).read().decode()
    assert metric(text, "reformspor_ingest_events_total", channel="http", outcome="accepted") == 5
    assert metric(text, "reformspor_ingest_events_total", channel="http", outcome="forbidden") == 2
    assert metric(text, "reformspor_ingest_events_total", channel="http", outcome="conflict") == 1
    assert metric(text, "reformspor_ingest_last_event_timestamp_seconds", ministry="BFD") > 0
    assert metric(text, "reformspor_dead_letters_total", service="ingest", reason="invalid") >= 3
    assert metric(text, "reformspor_ingest_request_seconds_count", route="/v1/events") == 19

    # OpenAPI matches the route
    spec = json.loads(urllib.request.urlopen(settings.service_url("ingest") + "/openapi.json", timeout=5).read())
    assert spec["openapi"].startswith("3.1") and "413" in spec["paths"]["/v1/events"]["post"]["responses"]

    # restart: the same id gives the same answer (duplicate / conflict), nothing produced twice
    stack.stop_service("ingest")
    stack.start_service("ingest")
    status, _, body = send(sample_event(event_id="bfd-1", line_id="0-24"))
    assert (status, body["status"]) == (200, "duplicate")
    assert send(sample_event(event_id="bfd-1", line_id="0-24", amount_nok="1.00"))[0] == 409
    assert sorted(r.json()["id"] for r in read_topic(settings, settings.topics.budget, min_count=4)) == ids

    # a revoked token is refused
    store = IngestStore(settings.db_url("ingest"))
    [kd_credential] = [c for c in store.list_credentials() if c.ministry == "KD"]
    assert store.revoke(kd_credential.id)
    assert send(sample_event(ministry="KD", event_id="kd-2"), token=kd)[0] == 401
