"""Property tests of every parser that reads a publisher's input (issue 16).

Whatever arrives — arbitrary bytes, invalid UTF-8, any Unicode text including
lone surrogates and control characters, JSON built from such strings, or a
valid event with hostile text pushed into one of its fields — each parser
either returns a valid event or raises `ContractError` with a reason for every
problem. Nothing else may escape: an escaping exception is a 500 at the HTTP
door or a lost message on a Kafka topic.
"""
from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from services.budsjett import core as budsjett
from services.ingest import core as ingest
from services.ingest.samples import sample_event
from services.milepael import core as milepael
from services.shared.contract import BUDGET_KINDS, DATA_MODELS, ContractError, Event, decode_event, parse_event
from services.shared.jsonio import dumps_compact, dumps_raw

PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Every code point, surrogates and control characters included.
any_char = st.characters(codec=None, blacklist_categories=())
any_text = st.text(alphabet=any_char, max_size=40)
HOSTILE_PIECES = [
    "\ud800", "\udfff", "\x00", "\n", "\r\n", "\t", "\x1b[2J", "\x7f", "\x85", "\u2028", "\ufeff", "\u202e",
    "\u0661\u0662\u0663", "\uff11\uff12", "\u00b2", "1_000", " ", "\u00a0", "NaN", "-", ".", "e9999",
]
hostile_text = st.one_of(
    any_text,
    st.lists(st.sampled_from(HOSTILE_PIECES), min_size=1, max_size=4).map("".join),
)
json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**25, max_value=10**25), hostile_text,
    st.floats(allow_nan=True, allow_infinity=True),
)
json_documents = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4),
    max_leaves=20,
)
KINDS = sorted(DATA_MODELS)
NUMERIC_FIELDS = {"amount_nok", "kap", "post", "fiscal_year", "value", "threshold", "weight", "warning", "critical",
                  "warning_nok", "critical_nok", "planned_cost_nok"}
FREE_TEXT_FIELDS = {"reason", "description", "name", "title", "rationale"}
FORBIDDEN_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
NON_ASCII_DIGIT = re.compile(r"(?![0-9])\d")


def parses_or_refuses(parse, raw: Any) -> Any:
    """The property itself: a valid result, or ContractError whose every reason is there and writable."""
    try:
        result = parse(raw)
    except ContractError as error:
        assert error.problems and all(problem.reason for problem in error.problems)
        "; ".join(str(problem) for problem in error.problems).encode("utf-8")  # a reply or a log can carry it
        return None
    if isinstance(result, Event):
        assert_valid_event(result)
    return result


def leaves(document: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    if isinstance(document, dict):
        return [leaf for key, value in document.items() for leaf in leaves(value, (*path, key))]
    if isinstance(document, list):
        return [leaf for index, value in enumerate(document) for leaf in leaves(value, (*path, index))]
    return [(path, document)]


def assert_valid_event(event: Event) -> None:
    """An accepted event is clean text and round-trips through its own wire form unchanged."""
    wire = event.to_wire()
    for path, value in leaves(wire):
        if isinstance(value, str):
            assert not FORBIDDEN_IN_TEXT.search(value), (path, value)
            if path[-1] not in FREE_TEXT_FIELDS:
                assert value.isprintable(), (path, value)
    again = decode_event(dumps_compact(wire).decode("utf-8"))
    assert again.to_wire() == wire and again.content_hash == event.content_hash


# --- raw bytes and text, as they arrive on a topic or in a request body -------------------

raw_inputs = st.one_of(
    st.binary(max_size=300),
    any_text,
    json_documents.map(lambda doc: json.dumps(doc, ensure_ascii=True).encode("ascii")),
    json_documents.map(lambda doc: json.dumps(doc, ensure_ascii=False)),
)


@PROPERTY
@given(raw_inputs)
def test_decode_event_returns_an_event_or_a_contract_error(raw):
    parses_or_refuses(decode_event, raw)


@PROPERTY
@given(raw_inputs)
def test_budsjett_parse_message_returns_a_message_or_a_contract_error(raw):
    message = parses_or_refuses(budsjett.parse_message, raw)
    assert not isinstance(message, Event) or message.is_budget


@PROPERTY
@given(raw_inputs)
def test_ingest_body_is_items_or_a_4xx_and_every_item_gets_a_result(raw):
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")  # a body is bytes; surrogatepass makes invalid UTF-8
    try:
        items, _ = ingest.decode_body(raw)
    except ingest.BodyError as error:
        assert 400 <= error.status < 500 and error.detail
        error.detail.encode("utf-8")
        return
    results = [ingest.check_item(index, item, "BFD") for index, item in enumerate(items)]
    for result in results:
        assert (result.status == ingest.ACCEPTED and result.event is not None) or result.problems
        dumps_raw(result.raw)  # the dead letter can be written
    status = ingest.response_status(results, is_batch=len(results) > 1)
    dumps_compact(ingest.response_body(results, status)).decode("utf-8")  # and so can the reply


# --- decoded documents, as parse_event and check_item receive them -----------------------

def envelope_with(document: dict, kind: str, replace_data: bool) -> dict:
    event = sample_event(kind)
    if replace_data:
        event["data"] = document
    else:
        event.update(document)
    return event


decoded_documents = st.one_of(
    json_documents,
    st.builds(envelope_with, st.dictionaries(hostile_text, json_documents, max_size=6), st.sampled_from(KINDS),
              st.booleans()),
)


@PROPERTY
@given(decoded_documents)
def test_parse_event_returns_an_event_or_a_contract_error(document):
    parses_or_refuses(parse_event, document)


@PROPERTY
@given(decoded_documents, st.sampled_from(["BFD", "KD"]))
def test_check_item_never_raises(document, ministry):
    result = ingest.check_item(0, document, ministry)
    assert result.event is not None or (result.status == ingest.REJECTED and result.problems)


@PROPERTY
@given(json_documents)
def test_milepael_totals_summary_reads_integer_ore_or_says_why(message):
    try:
        summary = milepael.totals_summary(message)
    except ValueError as error:
        assert str(error)
        return
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in summary["utbetalt_ore_by_phase"].values())


# --- a valid event with hostile text pushed into one field --------------------------------

def mutate(value: Any, hostile: str, how: str) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return {"append": text + hostile, "prepend": hostile + text, "replace": hostile, "infix": text[:1] + hostile + text[1:]}[how]


def get_at(document: Any, path: tuple) -> Any:
    for part in path:
        document = document[part]
    return document


def set_at(document: Any, path: tuple, value: Any) -> None:
    get_at(document, path[:-1])[path[-1]] = value


@PROPERTY
@given(st.sampled_from(KINDS), st.data(), hostile_text, st.sampled_from(["append", "prepend", "replace", "infix"]))
def test_hostile_text_in_any_field_is_refused_or_harmless(kind, data, hostile, how):
    document = sample_event(kind)
    path, original = data.draw(st.sampled_from(leaves(document)), label="field")
    mutated = mutate(original, hostile, how)
    set_at(document, path, mutated)
    for parse, raw in ((parse_event, document), (decode_event, json.dumps(document, ensure_ascii=True).encode())):
        event = parses_or_refuses(parse, raw)
        if event is None:
            continue
        field = path[-1]
        if field in NUMERIC_FIELDS:  # a number is read from ASCII digits or not at all
            assert not NON_ASCII_DIGIT.search(mutated), (path, mutated)
        elif field in FREE_TEXT_FIELDS:  # text is kept exactly as sent
            assert dict(leaves(event.to_wire()))[path] == mutated


@PROPERTY
@given(st.sampled_from(KINDS), st.data(), hostile_text, json_leaves)
def test_hostile_key_anywhere_is_refused(kind, data, key, value):
    assume(not re.fullmatch(r"[a-z_]+", key))  # could name a real optional field ("kap", "subject")
    document = sample_event(kind)
    objects = sorted({path[:i] for path, _ in leaves(document) for i in range(len(path))
                      if isinstance(get_at(document, path[:i]), dict)})
    target = get_at(document, data.draw(st.sampled_from(objects), label="object"))
    assume(key not in target)
    target[key] = value
    assert parses_or_refuses(parse_event, document) is None


@pytest.mark.parametrize("kind", sorted(BUDGET_KINDS))
def test_a_budget_sample_survives_the_property_helpers(kind):
    """Guards the helpers above: a valid event passes every check they make."""
    assert parses_or_refuses(decode_event, json.dumps(sample_event(kind)).encode()) is not None
