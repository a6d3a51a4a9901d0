"""budsjett's Quix shell without a broker: what the step produces per message, and the read-model sink."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import orjson
import pytest
from prometheus_client import CollectorRegistry, Gauge
from quixstreams.context import set_message_context
from quixstreams.models import MessageContext
from quixstreams.sinks import SinkBackpressureError
from sqlalchemy.exc import OperationalError

from services.budsjett.app import Applied, CatalogueHolder, Ledger, ReadModelSink
from services.budsjett.readmodel import ReadModel
from services.shared.config import Settings
from services.shared.contract import make_event
from services.shared.gauges import GaugeFamilies
from services.shared.streaming import Record, Rejection, Snapshot

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)


class FakeState:
    """Quix's State for one message key: values go through JSON, so a read is a copy."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    def get(self, key, default=None):
        value = self.values.get(key)
        return default if value is None else orjson.loads(value)

    def set(self, key, value) -> None:
        self.values[key] = orjson.dumps(value)


@pytest.fixture
def shell(tmp_path):
    settings = Settings(topic_prefix="t.", home=tmp_path)
    read_model = ReadModel(f"sqlite:///{tmp_path / 'budsjett.db'}")
    gauges = GaugeFamilies()
    ledger = Ledger(settings, CollectorRegistry(), gauges, CatalogueHolder(settings, "budsjett"))  # not started: no catalogue
    yield settings, ledger, read_model, gauges
    read_model.close()


def grant(event_id: str, line: str, nok: str) -> dict:
    return make_event("bevilget", "BFD", {"line_id": line, "ministry": "BFD", "phase": "utredning", "amount_nok": nok,
                                          "kap": 840, "post": 70, "fiscal_year": 2026}, event_id, T0)


def step(ledger: Ledger, state: FakeState, document: dict | bytes, offset: int, key: bytes | None = None):
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    if key is None and isinstance(document, dict):
        key = document["data"]["line_id"].encode()
    set_message_context(MessageContext(topic="t.budsjett.events", partition=0, offset=offset, size=len(raw)))
    return ledger.step(raw, key, state)


def totals_of(outputs: list) -> dict:
    """The line's totals as the step's one totals snapshot renders them (produced at the checkpoint)."""
    snapshot, = [output for output in outputs if isinstance(output, Snapshot)]
    return json.loads(snapshot.render())


def test_the_step_dedups_and_dead_letters_conflicts_wrong_keys_and_invalid_input(shell):
    settings, ledger, _read_model, gauges = shell
    state = FakeState()
    first = step(ledger, state, grant("b1", "0-24", "100.00"), 0)
    totals = [r for r in first if isinstance(r, Snapshot) and r.topic == settings.topics.totals]
    assert len(totals) == 1 and totals[0].key == b"0-24"
    assert totals_of(first)["totals"]["bevilget_ore"] == 10000
    assert any(isinstance(r, Applied) for r in first)
    assert 'reformspor_budsjett_bevilget_ore{line="0-24",ministry="BFD",phase="utredning",fiscal_year="2026"} 10000\n' in \
        gauges.render().decode()

    assert step(ledger, state, grant("b1", "0-24", "100.00"), 1) == []  # a retry: applied once
    with pytest.raises(Rejection) as conflict:
        step(ledger, state, grant("b1", "0-24", "999.00"), 2)
    assert conflict.value.label == "conflict" and "already used for different content" in conflict.value.reasons[0]
    with pytest.raises(Rejection) as wrong_key:
        step(ledger, state, grant("b2", "0-24", "1.00"), 3, key=b"ung-1")
    assert wrong_key.value.label == "key_mismatch"
    with pytest.raises(Rejection) as invalid:
        step(ledger, state, b'{"specversion": "1.0"', 4, key=b"0-24")
    assert invalid.value.label == "invalid"
    # The envelope is trusted (only ingest writes the topic), the data is not: a bad amount is a dead letter.
    with pytest.raises(Rejection) as bad_amount:
        step(ledger, state, grant("b4", "0-24", "ti kroner"), 6)
    assert bad_amount.value.label == "invalid" and "amount_nok" in bad_amount.value.reasons[0]
    with pytest.raises(Rejection) as bad_id:
        step(ledger, state, {**grant("b5", "0-24", "1.00"), "id": {"not": "an id"}}, 7)
    assert bad_id.value.label == "invalid" and "id" in bad_id.value.reasons[0]
    assert totals_of(step(ledger, state, grant("b3", "0-24", "1.00"), 8))["totals"]["bevilget_ore"] == 10100


def test_a_cross_line_move_is_credited_through_the_budget_topic_and_flags_go_to_varsler(shell):
    settings, ledger, _read_model, _gauges = shell
    state = FakeState()
    step(ledger, state, grant("b1", "0-24", "100.00"), 0)
    move = make_event("omdisponert", "BFD", {
        "line_id": "0-24", "amount_nok": "150.00", "fiscal_year": 2026,
        "from": {"ministry": "BFD", "phase": "utredning"},
        "to": {"ministry": "BFD", "phase": "utredning", "line_id": "ung-1"}}, "o1", T0)
    outputs = step(ledger, state, move, 1)
    by_topic = {}
    for output in outputs:
        if isinstance(output, Record):
            by_topic.setdefault(output.topic, []).append(output)
    credit, = by_topic[settings.topics.budget]
    assert credit.key == b"ung-1" and json.loads(credit.value)["data"]["amount_ore"] == 15000
    flags = by_topic[settings.topics.notifications]  # more moved out than there was
    assert {flag.key for flag in flags} == {b"0-24"}
    assert {json.loads(flag.value)["flag"] for flag in flags} == {"overcommitted", "overspent"}
    # The credit, read back from the budget topic on the target line's state, is applied there once.
    target = FakeState()
    credit_outputs = step(ledger, target, credit.value, 0, key=credit.key)
    assert totals_of(credit_outputs)["totals"]["omdisponert_ore"] == 15000
    assert step(ledger, target, credit.value, 1, key=credit.key) == []


def test_the_sink_writes_a_checkpoint_once_and_backs_off_when_the_database_is_unavailable(shell):
    _settings, ledger, read_model, _gauges = shell
    state = FakeState()
    rows = [(offset, output) for offset, document in enumerate([grant("b1", "0-24", "1.00"), grant("b2", "0-24", "2.00")])
            for output in step(ledger, state, document, offset) if isinstance(output, Applied)]
    sink = ReadModelSink(read_model, Gauge("pending", "rows", registry=CollectorRegistry()))
    for _ in range(2):  # the second time is a checkpoint redone after a crash
        for offset, row in rows:
            sink.add(row, b"0-24", 0, [], "t.budsjett.events", 0, offset)
        sink.flush()
        assert read_model.event_count() == 2
        assert read_model.lines()["0-24"]["cells"]["BFD|utredning|2026"]["bevilget_ore"] == 300

    class Unavailable(ReadModel):
        def write(self, batch):
            raise OperationalError("INSERT", {}, Exception("database is locked"))

    down = ReadModelSink(Unavailable(read_model.url), Gauge("pending", "rows", registry=CollectorRegistry()))
    down.add(rows[0][1], b"0-24", 0, [], "t.budsjett.events", 0, 0)
    with pytest.raises(SinkBackpressureError):
        down.flush()
    assert down.pending_rows == 0


def test_each_checkpoint_writes_the_cells_its_events_changed_and_the_table_keeps_the_others(shell):
    _settings, ledger, read_model, _gauges = shell
    state = FakeState()
    sink = ReadModelSink(read_model, Gauge("pending", "rows", registry=CollectorRegistry()))
    development = make_event("bevilget", "BFD", {"line_id": "0-24", "ministry": "BFD", "phase": "utvikling",
                                                 "amount_nok": "2.00", "kap": 840, "post": 70, "fiscal_year": 2026},
                             "b2", T0)
    for offset, document in enumerate([grant("b1", "0-24", "1.00"), development]):  # one checkpoint each
        for output in step(ledger, state, document, offset):
            if isinstance(output, Applied):
                sink.add(output, b"0-24", 0, [], "t.budsjett.events", 0, offset)
        sink.flush()
    cells = read_model.lines()["0-24"]["cells"]
    assert {key: cell["bevilget_ore"] for key, cell in cells.items()} == {"BFD|utredning|2026": 100,
                                                                       "BFD|utvikling|2026": 200}
    assert read_model.lines()["0-24"]["events"] == 2
