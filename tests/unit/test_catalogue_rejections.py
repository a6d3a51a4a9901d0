"""Rejections the publisher sees: the catalogue as a Kafka record, ingest's synchronous kap/post check,
the status of one event by id, and `publish --wait`'s polling (pure parts, no broker)."""
from __future__ import annotations

import io
import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from services.budsjett.catalogue import (CATALOGUE_MAX_BYTES, Catalogue, CatalogueItem, YearCatalogue,
                                         catalogue_record, import_catalogue, year_from_record)
from services.ingest import core
from services.ingest.cli import wait_for_outcomes
from services.ingest.samples import sample_event
from services.shared.usererror import UserError

GUL_BOK = Path("/work/shared/data/gul_bok_2024_datagrunnlag.xlsx")


def catalogue_2026() -> Catalogue:
    """2026: DFD (fdep_nr 15 from 2025) owns kap 1540; BFD owns kap 840."""
    return Catalogue([
        CatalogueItem(2026, 1540, 1, "DFD", 15, "Digitaliseringsdirektoratet", "Driftsutgifter"),
        CatalogueItem(2026, 840, 70, "BFD", 8, "Tiltak mot vold og overgrep", "Tilskudd"),
    ])


def contribution(ministry: str, kap: int, post: int, fiscal_year: int = 2026, event_id: str = "e-1") -> dict:
    return sample_event("bevilget", ministry, event_id, kap=kap, post=post, fiscal_year=fiscal_year)


# --- the record -------------------------------------------------------------------------------

def test_a_year_travels_as_one_record_keyed_by_the_year_and_comes_back_equal():
    items = tuple(catalogue_2026().get(2026, kap, post) for kap, post in ((1540, 1), (840, 70)))
    key, value = catalogue_record(YearCatalogue(2026, items, "2026_gulbok.csv", "2026-12-02T17:00:00Z"))
    assert key == b"2026"
    year, read = year_from_record(key, value)
    assert year == 2026 and read.items == items and read.source_file == "2026_gulbok.csv"
    assert year_from_record(b"2026", None) == (2026, None)  # a tombstone removes the year


def test_the_real_gul_bok_year_fits_in_one_kafka_message_and_an_oversized_one_is_refused():
    if not GUL_BOK.exists():
        pytest.skip("Gul bok 2024 data file not present")
    items = tuple(import_catalogue(GUL_BOK).items)
    _, value = catalogue_record(YearCatalogue(2024, items))
    assert len(value) < CATALOGUE_MAX_BYTES
    assert year_from_record(b"2024", value)[1].items == items
    with pytest.raises(UserError, match="limit is 900000"):
        catalogue_record(YearCatalogue(2024, items * 3))


# --- ingest's synchronous check ------------------------------------------------------------------

def test_a_post_the_catalogue_gives_to_the_publisher_is_accepted_dfd_2026():
    result = core.check_item(0, contribution("DFD", 1540, 1), "DFD", catalogue_2026())
    assert result.status == core.ACCEPTED


@pytest.mark.parametrize("kap, post, label, words", [
    (840, 70, "another_ministrys_post", "kap 840 post 70 (Tilskudd) belongs to BFD, not DFD, in the 2026 budget catalogue"),
    (1540, 99, "unknown_post", "kap 1540 post 99 does not exist in the 2026 budget catalogue"),
])
def test_another_ministrys_or_an_unknown_post_is_refused_with_422_naming_kap_post_and_year(kap, post, label, words):
    result = core.check_item(0, contribution("DFD", kap, post), "DFD", catalogue_2026())
    assert (result.status, result.code, result.label) == (core.REJECTED, core.CODE_INVALID, label)
    assert core.dead_letter_reason_label(result) == label
    status = core.response_status([result], is_batch=False)
    body = core.response_body([result], status)
    assert status == 422 and words in body["detail"]


def test_a_year_without_a_catalogue_is_not_checked_nor_against_another_years_items():
    assert core.check_item(0, contribution("DFD", 840, 70, fiscal_year=2027), "DFD", catalogue_2026()).status == \
        core.ACCEPTED
    assert core.check_item(0, contribution("DFD", 840, 70), "DFD", Catalogue()).status == core.ACCEPTED


# --- one event's status ----------------------------------------------------------------------------

def rejection(service: str, ministry: str = "BFD", reason: str = "korrigert of an unknown id") -> core.RejectionFact:
    return core.RejectionFact("e-1", ministry, service, reason, "rejected")


@pytest.mark.parametrize("accepted_by, rejections, applied, expected", [
    ("BFD", [], None, "pending"),
    ("BFD", [], ("budsjett", {"line_id": "0-24"}), "applied"),
    ("BFD", [rejection("budsjett")], None, "rejected"),
    ("BFD", [rejection("ingest")], ("budsjett", {}), "applied"),  # an earlier attempt refused, the resend applied
    (None, [rejection("ingest")], None, "rejected"),
])
def test_the_status_of_an_event_for_its_publisher(accepted_by, rejections, applied, expected):
    status = core.decide_event_status("e-1", "BFD", accepted_by, rejections, applied)
    assert status.status == expected
    if expected == "rejected":
        assert status.to_json()["reason"] == "korrigert of an unknown id" and status.to_json()["reason_label"]


def test_another_ministrys_or_an_unknown_event_is_not_shown():
    assert core.decide_event_status("e-1", "KD", "BFD", [], None) is None
    assert core.decide_event_status("e-1", "KD", None, [rejection("budsjett")], None) is None
    assert core.decide_event_status("e-1", "BFD", None, [], None) is None


def test_a_dead_letter_names_the_event_and_its_authenticated_publisher():
    envelope = json.dumps(sample_event("korrigert", "BFD", "k-1")).encode()
    fact = core.rejection_from_dead_letter(envelope, "budsjett", "event 'e-0' is unknown", "rejected", None)
    assert (fact.event_id, fact.ministry, fact.service) == ("k-1", "BFD", "budsjett")
    # ingest's own dead letters: the source in the body is a claim; only the header's publisher counts
    claimed = json.dumps(sample_event("bevilget", "KD", "x-1")).encode()
    assert core.rejection_from_dead_letter(claimed, "ingest", "r", "wrong_publisher", "BFD").ministry == "BFD"
    assert core.rejection_from_dead_letter(claimed, "ingest", "r", "wrong_publisher", None).ministry == ""
    assert core.rejection_from_dead_letter(b"{not json", "ingest", "r", "malformed", "BFD") is None


# --- publish --wait -----------------------------------------------------------------------------

class FakeClient:
    """Answers as ingest would: each id's statuses in turn, the last one repeated."""

    def __init__(self, answers: dict[str, list[dict | None]]):
        self.answers = answers

    def event_status(self, event_id: str) -> dict | None:
        queue = self.answers[event_id]
        return queue.pop(0) if len(queue) > 1 else queue[0]


def test_wait_polls_until_decided_and_prints_each_rejection_with_its_row():
    client = FakeClient({
        "a": [{"status": "pending"}, {"status": "applied"}],
        "b": [{"status": "pending"}, {"status": "rejected", "reason": "event 'e-9' is unknown on line 0-24",
                                      "reason_label": "rejected"}],
    })
    out, err, now = io.StringIO(), io.StringIO(), [0.0]
    summary = wait_for_outcomes(client, {"a": "row 2", "b": "row 3"}, 30, out, err, clock=lambda: now[0],
                                sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert summary.applied == ("a",) and [o.event_id for o in summary.rejected] == ["b"] and summary.exit_code == 1
    assert "row 3 id=b rejected downstream (rejected): event 'e-9' is unknown on line 0-24" in out.getvalue()
    assert "0 applied, 0 rejected, 2 pending" in err.getvalue() and "1 applied, 1 rejected, 0 pending" in err.getvalue()


def test_wait_gives_up_at_the_timeout_and_says_what_is_still_pending():
    out, now = io.StringIO(), [0.0]
    summary = wait_for_outcomes(FakeClient({"a": [{"status": "pending"}]}), {"a": "line 1"}, 5, out, io.StringIO(),
                                clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert summary.exit_code == 1 and [o.event_id for o in summary.pending] == ["a"]
    assert "line 1 id=a still pending after 5 s" in out.getvalue()


# --- the owning services' answer: did they apply it? ------------------------------------------------

def test_milepael_remembers_every_event_it_applied_for_the_publisher(tmp_path):
    from services.milepael import core as milepael
    from services.milepael.readmodel import ReadModel
    from tests.unit.test_milepael_core import done, registered

    state = done(registered(), "A", date(2026, 1, 21))
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    new_state, events, verdicts = milepael.reconcile(state, {}, now.date(), now)
    readmodel = ReadModel(f"sqlite:///{tmp_path / 'milepael.db'}")
    try:
        for _ in range(2):  # a redelivered checkpoint adds nothing
            readmodel.save(new_state, verdicts, events, evaluated_at=now, partition=3)
        applied = [readmodel.event_outcome(event_id) for event_id in new_state["processed_ids"]]
        assert applied and all(a["status"] == "applied" and a["reform_id"] == "R1" for a in applied)
        assert readmodel.event_outcome("never-sent") is None
    finally:
        readmodel.dispose()


def test_budsjett_answers_where_it_applied_an_event(tmp_path):
    from services.budsjett import core as ledger
    from services.budsjett.readmodel import ReadModel
    from tests.unit.test_budsjett_core import bevilget

    store, message = {}, bevilget("e-1", "0-24", "BFD", "utredning", "10.00")
    model = ReadModel(f"sqlite:///{tmp_path / 'budsjett.db'}")
    try:
        batch = model.new_batch()
        batch.add(ledger.process(store, 0, message), message, 0, 0)
        model.write(batch)
        assert model.event_outcome("e-1") | {"applied_at": None} == {
            "id": "e-1", "status": "applied", "line_id": message.key, "type": "bevilget", "ministry": "BFD",
            "fiscal_year": 2026, "corrected_by": None, "applied_at": None}
        assert model.event_outcome("e-2") is None
    finally:
        model.close()
