"""Fuzz the live service: >1000 generated malformed events get only 4xx/DLQ with reasons; valid ones land once."""
from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from services.shared.jsonio import dumps_raw
from services.ingest.samples import sample_event
from services.ingest.testing import post, read_topic
from services.ingest.tokens import issue_token
from services.shared.contract import BUDGET_KINDS, REFORM_KINDS, ContractError, parse_event
from services.shared.jsonio import loads_strict
from services.shared.money import FloatToken
from services.shared.streaming import DEAD_LETTER_REASON_HEADER

pytestmark = pytest.mark.integration

KINDS = BUDGET_KINDS + REFORM_KINDS
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20), _text,
    st.sampled_from([FloatToken("1.5"), FloatToken("1e308"), FloatToken("-0.0"), "NaN", "Infinity", "10.005",
                     "1 000,00", "x" * 600, "", "urn:no:dep:XYZ"]),
)
_json = st.recursive(_json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(_text, inner, max_size=3)), max_leaves=8)


@st.composite
def malformed(draw, counter):
    """A valid sample event with one or two harmful mutations (may, rarely, still be valid: the oracle decides)."""
    kind = draw(st.sampled_from(KINDS))
    event = sample_event(kind, event_id=f"fz-{next(counter)}")
    for _ in range(draw(st.integers(1, 2))):
        action = draw(st.sampled_from(["drop_env", "drop_data", "set_data", "set_env", "money", "whole", "foreign"]))
        data = event.get("data") if isinstance(event.get("data"), dict) else None
        if action == "drop_env":
            event.pop(draw(st.sampled_from(sorted(event))), None)
        elif action == "drop_data" and data:
            data.pop(draw(st.sampled_from(sorted(data))), None)
        elif action == "set_data" and data:
            data[draw(st.sampled_from(sorted(data)))] = draw(_json)
        elif action == "set_env":
            event[draw(st.sampled_from(["id", "type", "time", "source", "specversion", "extra"]))] = draw(_json)
        elif action == "money" and data:
            data["amount_nok"] = draw(st.sampled_from([FloatToken("12.50"), "NaN", "Infinity", "1.001", True, 10**15,
                                                       "-", [1], {"nok": 1}]))
        elif action == "whole":
            return draw(_json)
        elif action == "foreign":
            other = draw(st.sampled_from(["KD", "HOD", "JD"]))
            if draw(st.booleans()):
                event["source"] = f"urn:no:dep:{other}"
            elif data and "ministry" in data:
                data["ministry"] = other
    return event


def oracle_valid(document, ministry: str = "BFD") -> bool:
    try:
        event = parse_event(loads_strict(dumps_raw(document)))
    except ContractError:
        return False
    return event.source_ministry == ministry


def test_fuzzed_events_only_4xx_or_dead_letter_and_valid_ones_exactly_once(stack, settings):
    token = issue_token(settings, "BFD")
    stack.start_service("ingest")
    url = settings.service_url("ingest") + "/v1/events"
    counter = itertools.count()
    seen = {"valid": [], "invalid": 0, "garbage": 0, "statuses": set()}

    @hsettings(max_examples=50, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.lists(st.one_of(malformed(counter),
                              st.builds(lambda k, i: sample_event(k, event_id=f"ok-{i}", line_id=f"L{i % 7}"),
                                        st.sampled_from(KINDS), st.integers(0, 10**9))),
                    min_size=28, max_size=40, unique_by=lambda e: json.dumps(e, default=str) if not isinstance(e, dict) else str(e.get("id"))),
           st.binary(max_size=200))
    def run(batch, garbage):
        expected = [oracle_valid(item) for item in batch]
        # Valid ids must be unique across the run (a mutation may well produce "0000" twice), so every
        # valid event gets a fresh one; a fresh well-formed id does not change whether it is valid.
        for item, valid in zip(batch, expected):
            if valid:
                item["id"] = f"ok-{next(counter)}"
        status, _, body = post(url, dumps_raw(batch), token)
        seen["statuses"].add(status)
        assert status in (202, 207, 403, 422), body
        results = body["results"]
        assert len(results) == len(batch)
        for item, valid, result in zip(batch, expected, results):
            if valid:
                assert result["status"] == "accepted", (item, result)
                seen["valid"].append(item["id"])
            else:
                assert result["status"] == "rejected" and result["reasons"], (item, result)
                assert all(r["reason"] for r in result["reasons"])
                seen["invalid"] += 1
        # and a body that is not JSON at all
        if garbage.strip() and not garbage.strip().startswith((b"{", b"[")):
            status, _, body = post(url, garbage, token)
            assert status in (400, 413, 422) and body["detail"], body
            seen["garbage"] += 1

    run()

    assert seen["invalid"] >= 1000, seen["invalid"]
    assert max(seen["statuses"]) < 500
    valid = seen["valid"]
    out = read_topic(settings, settings.topics.budget, min_count=0, timeout_s=5, settle_s=1) + \
        read_topic(settings, settings.topics.reform, min_count=0, timeout_s=5, settle_s=1)
    landed = [r.json()["id"] for r in out]
    if len(landed) < len(valid):  # the producer may still be flushing the last batch
        out = read_topic(settings, settings.topics.budget, min_count=1, timeout_s=30, settle_s=3) + \
            read_topic(settings, settings.topics.reform, min_count=1, timeout_s=30, settle_s=3)
        landed = [r.json()["id"] for r in out]
    assert sorted(landed) == sorted(valid), "every valid event exactly once, nothing else"
    dead = read_topic(settings, settings.topics.dead_letter,
                      min_count=seen["invalid"] + seen["garbage"], timeout_s=60)
    assert len(dead) == seen["invalid"] + seen["garbage"]
    assert all(r.headers.get(DEAD_LETTER_REASON_HEADER) for r in dead)
