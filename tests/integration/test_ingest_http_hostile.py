"""Hostile requests at the HTTP front door: 415 for other media types, no 5xx for lone surrogates (issue 16)."""
from __future__ import annotations

import json

import pytest

from services.ingest.samples import sample_event
from services.ingest.testing import post, read_topic
from services.ingest.tokens import issue_token
from services.shared.streaming import DEAD_LETTER_REASON_HEADER

pytestmark = pytest.mark.integration


def test_content_type_and_surrogate_escapes(stack, settings):
    token = issue_token(settings, "BFD")
    stack.start_service("ingest")
    url = settings.service_url("ingest") + "/v1/events"
    body = json.dumps(sample_event(event_id="ct-1")).encode()

    for content_type in ("text/plain", "application/xml", "application/x-www-form-urlencoded", "",
                         "application/jsonx", "multipart/form-data; boundary=x"):
        status, headers, reply = post(url, body, token, headers={"Content-Type": content_type})
        assert status == 415, (content_type, reply)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert reply["status"] == 415 and "application/cloudevents+json" in reply["detail"]
    accepted = {}
    for index, content_type in enumerate(("application/json; charset=utf-8", "Application/JSON",
                                          "application/cloudevents+json", "application/cloudevents-batch+json")):
        event = sample_event(event_id=f"ct-ok-{index}")
        status, _, reply = post(url, json.dumps([event] if "batch" in content_type else event).encode(), token,
                                headers={"Content-Type": content_type})
        accepted[content_type] = status
    assert set(accepted.values()) == {202}, accepted

    text = json.dumps(sample_event(event_id="sg-template", line_id="0-24"))
    hostile = {
        "id": text.replace('"sg-template"', '"sg-\\ud800"'),
        "line_id": text.replace('"0-24"', '"0-\\ud800"'),
        "description": text.replace('"sg-template"', '"sg-desc"')[:-2] + ', "description": "x\\ud800"}}',
        "reason": json.dumps(sample_event("korrigert", event_id="sg-reason")).replace("wrong post", "\\udfff"),
        "batch": "[" + text.replace('"sg-template"', '"sg-b1"') + "," + text.replace('"sg-template"', '"\\udc80"') + "]",
    }
    for field, raw in hostile.items():
        status, headers, reply = post(url, raw.encode(), token)
        # A lone surrogate is not Unicode text (I-JSON, RFC 7493): the whole body is refused, never a 500.
        assert status == 422, (field, status, reply)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert "surrogate" in json.dumps(reply), reply

    dead = read_topic(settings, settings.topics.dead_letter, min_count=len(hostile), timeout_s=60)
    assert len(dead) == len(hostile)
    assert all(r.headers[DEAD_LETTER_REASON_HEADER] for r in dead)
    budget = read_topic(settings, settings.topics.budget, min_count=4, timeout_s=30)
    assert sorted(r.json()["id"] for r in budget) == ["ct-ok-0", "ct-ok-1", "ct-ok-2", "ct-ok-3"]
