"""ingest's pure core: body limits, authorisation, batch outcomes, the reply."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest import core
from services.ingest.core import ACCEPTED, CONFLICT, DUPLICATE, REJECTED, BodyError, KnownEvent
from services.ingest.samples import sample_event, sample_internal_credit
from services.shared.jsonio import dumps_raw, loads_strict


def decide(items, ministry="BFD", known=None, atomic=False):
    """The same steps the shell runs, minus I/O."""
    results = [core.check_item(i, item, ministry) for i, item in enumerate(items)]
    core.mark_repeats_within_batch(results)
    for result in core.to_send(results):
        core.classify_known(result, (known or {}).get(result.event.id))
    if atomic:
        core.apply_atomic(results)
    return results


# --- body ----------------------------------------------------------------------------

def test_single_object_is_a_batch_of_one():
    items, is_batch = core.decode_body(json.dumps(sample_event()).encode())
    assert len(items) == 1 and not is_batch


def test_array_is_a_batch():
    items, is_batch = core.decode_body(json.dumps([sample_event(), sample_event(event_id="e-2")]).encode())
    assert len(items) == 2 and is_batch


@pytest.mark.parametrize("body, status, slug", [
    (b"", 400, "malformed-json"),
    (b"{", 400, "malformed-json"),
    (b"\xff\xfe", 400, "malformed-json"),
    (b"[]", 422, "unprocessable-body"),
    (b"42", 422, "unprocessable-body"),
    (b"[" * 100 + b"]" * 100, 422, "unprocessable-body"),
    (b'{"n": ' + b"9" * 100 + b"}", 422, "unprocessable-body"),
    (b'{"n": NaN}', 422, "unprocessable-body"),
])
def test_bad_bodies_get_clear_4xx(body, status, slug):
    with pytest.raises(BodyError) as caught:
        core.decode_body(body)
    assert caught.value.status == status and caught.value.slug == slug and caught.value.detail


def test_body_over_the_limit_is_413():
    with pytest.raises(BodyError) as caught:
        core.decode_body(b" " * (core.MAX_BODY_BYTES + 1))
    assert caught.value.status == 413


def test_batch_over_the_limit_is_413():
    body = json.dumps([{}] * (core.MAX_BATCH_EVENTS + 1)).encode()
    with pytest.raises(BodyError) as caught:
        core.decode_body(body)
    assert caught.value.status == 413 and str(core.MAX_BATCH_EVENTS) in caught.value.detail


# --- authorisation -------------------------------------------------------------------

def test_own_event_is_accepted():
    [result] = decide([sample_event(ministry="BFD")], "BFD")
    assert result.status == ACCEPTED and result.event.source_ministry == "BFD"


def test_other_ministrys_source_is_forbidden():
    [result] = decide([sample_event(ministry="KD")], "BFD")
    assert (result.status, result.code) == (REJECTED, "forbidden")
    assert "BFD" in result.problems[0].reason and "urn:no:dep:KD" in result.problems[0].reason
    assert core.dead_letter_reason_label(result) == "wrong_publisher"


@pytest.mark.parametrize("ministry", ["BFD", "KD"])
def test_an_internal_credit_is_refused_from_any_ministry_even_its_own(ministry):
    [result] = decide([sample_internal_credit(ministry)], ministry)
    assert (result.status, result.code) == (REJECTED, "forbidden") and result.event is None
    assert result.problems[0].path == "type" and "internal event type" in result.problems[0].reason
    assert core.dead_letter_reason_label(result) == "internal_type"


def test_own_source_speaking_for_another_ministrys_money_is_forbidden():
    document = sample_event(ministry="BFD")
    document["data"]["ministry"] = "KD"
    [result] = decide([document], "BFD")
    assert (result.status, result.code) == (REJECTED, "forbidden")


def test_invalid_event_is_invalid_not_forbidden():
    [result] = decide([sample_event(amount_nok="1.001")], "BFD")
    assert (result.status, result.code) == (REJECTED, "invalid")
    assert result.problems[0].path == "data.amount_nok"


@pytest.mark.parametrize("header, token", [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None), (None, None), ("", None),
])
def test_parse_bearer(header, token):
    assert core.parse_bearer(header) == token


def test_token_hash_is_stable_and_not_the_token():
    assert core.token_hash("t") == core.token_hash("t") != "t"


# --- idempotency ------------------------------------------------------------------------

def test_known_id_same_content_is_duplicate():
    event = sample_event()
    first = decide([event])[0]
    known = {event["id"]: KnownEvent(event["id"], first.event.content_hash)}
    [again] = decide([event], known=known)
    assert again.status == DUPLICATE


def test_known_id_other_content_is_conflict():
    event = sample_event()
    known = {event["id"]: KnownEvent(event["id"], "0" * 64)}
    [again] = decide([event], known=known)
    assert again.status == CONFLICT and again.problems[0].path == "id"


def test_cosmetic_differences_are_still_duplicates():
    """"100" and 100 NOK are the same fact: the hash is over the canonical envelope."""
    a = sample_event("utbetalt", amount_nok=100)
    b = sample_event("utbetalt", amount_nok="100.00")
    results = decide([a, b])
    assert [r.status for r in results] == [ACCEPTED, DUPLICATE]


def test_same_id_twice_in_a_batch_with_other_content_is_conflict():
    results = decide([sample_event(), sample_event(amount_nok="2.00")])
    assert [r.status for r in results] == [ACCEPTED, CONFLICT]


# --- batch outcomes and the reply ------------------------------------------------------------

def test_mixed_batch_accepts_the_good_and_reports_the_bad_by_index():
    items = [sample_event(event_id="a"), sample_event(event_id="b", amount_nok=1.5), sample_event(event_id="c")]
    results = decide(items)
    assert [r.status for r in results] == [ACCEPTED, REJECTED, ACCEPTED]
    status = core.response_status(results, is_batch=True)
    assert status == 207
    body = core.response_body(results, status)
    assert [r["index"] for r in body["results"] if r["status"] == REJECTED] == [1]
    assert body["summary"] == {ACCEPTED: 2, DUPLICATE: 0, REJECTED: 1, CONFLICT: 0}


def test_atomic_batch_with_one_bad_event_sends_nothing():
    items = [sample_event(event_id="a"), sample_event(event_id="b", amount_nok="x")]
    results = decide(items, atomic=True)
    assert core.to_send(results) == []
    assert results[0].code == "not_sent" and results[1].code == "invalid"
    status = core.response_status(results, is_batch=True)
    assert status == 422
    body = core.response_body(results, status)
    assert body["type"].endswith("batch-failed") and [e["index"] for e in body["errors"]] == [1]


def test_single_invalid_event_is_422_problem_with_every_field_error():
    document = sample_event(amount_nok="1.001", phase="x")
    results = decide([document])
    status = core.response_status(results, is_batch=False)
    body = core.response_body(results, status)
    assert status == 422 and body["status"] == 422 and body["title"] == "Invalid event"
    assert {e["path"] for e in body["errors"]} == {"data.amount_nok", "data.phase"}
    assert body["title_nb"]


def test_forbidden_only_is_403_conflict_only_is_409_duplicates_only_is_200():
    assert core.response_status(decide([sample_event(ministry="KD")]), False) == 403
    known = {"e-1": KnownEvent("e-1", "f" * 64)}
    assert core.response_status(decide([sample_event()], known=known), False) == 409
    first = decide([sample_event()])[0]
    same = {"e-1": KnownEvent("e-1", first.event.content_hash)}
    assert core.response_status(decide([sample_event()], known=same), False) == 200
    assert core.response_status(decide([sample_event()]), False) == 202


def test_dumps_raw_keeps_the_float_that_was_rejected():
    document = loads_strict('{"amount_nok": 1.50, "n": [1, "x"]}')
    assert json.loads(dumps_raw(document)) == {"amount_nok": 1.5, "n": [1, "x"]}
    assert b"1.50" in dumps_raw(document)


# --- properties ------------------------------------------------------------------------------

_good = st.builds(lambda i: sample_event(event_id=f"g-{i}", line_id=f"L{i}"), st.integers(0, 10_000))
_bad = st.one_of(
    st.builds(lambda i: sample_event(event_id=f"b-{i}", amount_nok="1.001"), st.integers(0, 10_000)),
    st.builds(lambda i: sample_event(ministry="KD", event_id=f"k-{i}"), st.integers(0, 10_000)),
    st.just({"not": "an event"}),
    st.integers(),
)


@given(st.lists(st.one_of(_good, _bad), min_size=1, max_size=30), st.booleans())
def test_batch_invariants(items, atomic):
    results = decide(items, atomic=atomic)
    assert [r.index for r in results] == list(range(len(items)))
    bad = [r for r in results if r.is_bad]
    sent = core.to_send(results)
    if atomic and bad:
        assert sent == []
    # every bad event is reported with at least one reason; nothing is silently lost
    assert all(r.problems for r in bad)
    assert all(r.status in (ACCEPTED, DUPLICATE) or r.problems for r in results)
    status = core.response_status(results, is_batch=True)
    assert (status in (200, 202)) == (not bad)
    assert status < 500
    body = core.response_body(results, status)
    assert sum(body["summary"].values()) == len(items)


# --- hostile text (issue 16) -----------------------------------------------------------

@pytest.mark.parametrize("field, kind", [("id", None), ("line_id", "korrigert"), ("reason", "korrigert"),
                                         ("description", "utbetalt")])
def test_lone_surrogate_escape_is_a_4xx_naming_the_field_never_a_crash(field, kind):
    """The bad-input run got 500s for these; a body is refused whole, so no surrogate reaches the shell."""
    document = sample_event(kind or "bevilget")
    if kind is None:
        document[field] = "e-\ud800"
    else:
        document["data"][field] = "x\ud800y"
    body = json.dumps([sample_event(event_id="e-ok"), document]).encode("ascii")
    with pytest.raises(BodyError) as caught:
        core.decode_body(body)
    path = f"1.{field}" if kind is None else f"1.data.{field}"
    assert caught.value.status == 422 and caught.value.detail.startswith(path) and "surrogate" in caught.value.detail


def test_non_ascii_digits_in_money_are_rejected_not_booked():
    [result] = decide([sample_event(amount_nok="\u0661\u0662\u0663.\u0664\u0665")])
    assert result.status == REJECTED and result.problems[0].path == "data.amount_nok"


def test_identifier_with_a_trailing_newline_is_rejected_not_a_second_line():
    [result] = decide([sample_event(line_id="0-24\n")])
    assert result.status == REJECTED and [p.path for p in result.problems] == ["data.line_id"]


@pytest.mark.parametrize("kind, field", [("korrigert", "reason"), ("utbetalt", "description")])
def test_nul_in_free_text_is_rejected(kind, field):
    [result] = decide([loads_strict(json.dumps(sample_event(kind, **{field: "a\x00b"})))])
    assert result.status == REJECTED and result.problems[0].path == f"data.{field}"


def test_a_rejected_documents_dead_letter_and_reply_can_always_be_written():
    """dumps_raw/dumps_compact write a lone surrogate as its JSON escape instead of failing."""
    from services.shared.jsonio import dumps_compact

    [result] = decide([{**sample_event(), "id": "e-\ud800", "x\udfff": 1}])
    assert result.status == REJECTED
    assert loads_strict(dumps_raw(result.raw).replace(b"\\ud800", b"").replace(b"\\udfff", b""))
    assert b"\\ud800" in dumps_compact(core.response_body([result], 422))


@given(st.text(alphabet=st.characters(codec=None, blacklist_categories=()), max_size=60))
def test_any_authorization_header_is_a_token_or_none_never_a_crash(text):
    """aiohttp decodes header bytes with surrogateescape: b"\\xff" arrives as "\\udcff"."""
    token = core.parse_bearer(f"Bearer {text}")
    assert token is None or core.token_hash(token)


@pytest.mark.parametrize("header", ["Bearer rfs_bfd_\udcff", "Bearer rfs_bfd_\u00e9", "Bearer rfs\x00bfd"])
def test_non_ascii_or_control_characters_make_no_token(header):
    assert core.parse_bearer(header) is None
