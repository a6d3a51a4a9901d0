"""`reformspor publish`: reading NDJSON/JSON/CSV, the client's safe retries, the summary."""
from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.ingest.cli import publish_events
from services.ingest.client import IngestClient, IngestError, IngestUnavailable
from services.ingest.publishfile import detect_format, read_events, row_to_event
from services.ingest.samples import sample_event
from services.shared.contract import parse_event

CSV = """id,ministry,kind,time,data.line_id,data.ministry,data.phase,data.amount_nok,data.kap,data.post,data.fiscal_year
bfd-1,BFD,bevilget,2026-03-01T10:00:00Z,0-24,BFD,utredning,1250000.00,840,70,2026
kd-1,KD,bevilget,2026-03-01T10:00:00Z,0-24,KD,utvikling,-500,226,21,2026
"""


def test_csv_rows_become_valid_envelopes():
    events, problems = read_events("x.csv", CSV)
    assert problems == []
    parsed = [parse_event(e) for e in events]
    assert [p.source_ministry for p in parsed] == ["BFD", "KD"]
    assert parsed[0].data.amount_ore == 125_000_000 and parsed[0].data.kap == 840
    assert parsed[1].data.amount_ore == -50_000


def test_csv_nested_columns_and_money_stays_text():
    event = row_to_event({"id": "o-1", "ministry": "BFD", "kind": "omdisponert", "time": "2026-03-01T10:00:00Z",
                          "data.line_id": "0-24", "data.amount_nok": "10", "data.fiscal_year": "2026",
                          "data.from.ministry": "BFD", "data.from.phase": "utredning",
                          "data.to.ministry": "BFD", "data.to.phase": "utvikling", "data.reason": ""})
    assert event["data"]["amount_nok"] == "10" and event["data"]["fiscal_year"] == 2026
    assert "reason" not in event["data"]
    assert parse_event(event).data.to.phase == "utvikling"


def test_ndjson_with_a_broken_line_reports_it_and_keeps_the_rest():
    text = json.dumps(sample_event(event_id="a")) + "\n\n{broken\n" + json.dumps(sample_event(event_id="b")) + "\n"
    events, problems = read_events("x.ndjson", text)
    assert [e["id"] for e in events] == ["a", "b"]
    assert problems[0].location == "line 3"


def test_ndjson_keeps_float_literals_so_the_server_can_reject_them():
    text = json.dumps(sample_event()).replace('"1250000.00"', "1.5")
    [event], _ = read_events("x.ndjson", text)
    from services.shared.jsonio import dumps_raw
    assert b'"amount_nok":1.5' in dumps_raw(event)


def test_json_object_or_array():
    assert len(read_events("x.json", json.dumps(sample_event()))[0]) == 1
    assert len(read_events("x.json", json.dumps([sample_event(), sample_event(event_id="2")]))[0]) == 2


def test_format_detection():
    assert detect_format("a.csv", "") == "csv"
    assert detect_format("a.jsonl", "") == "ndjson"
    assert detect_format("-", '{"a":1}\n{"b":2}\n') == "ndjson"
    assert detect_format("-", '{\n"a": 1\n}') == "json"
    assert detect_format("-", "[1]") == "json"


class _Stub:
    """A tiny ingest stand-in: scripted replies, records every request body."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.bodies = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                stub.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                status, body, headers = stub.replies.pop(0)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                payload = json.dumps(body).encode()
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _ok(results):
    return 202, {"results": results, "summary": {}}, {}


def test_client_retries_503_with_the_same_body_then_reports_results():
    unavailable = (503, {"type": "x", "title": "Event log unavailable", "status": 503, "detail": "down"}, {"Retry-After": "0"})
    accepted = [{"index": 0, "id": "e-1", "status": "accepted", "reasons": []}]
    with _Stub([unavailable, unavailable, _ok(accepted)]) as stub:
        slept = []
        client = IngestClient(stub.url, "t", sleep=slept.append, backoff_s=0.01)
        assert client.publish([sample_event()]) == accepted
    assert len(stub.bodies) == 3 and len(set(stub.bodies)) == 1  # same ids → the retry is idempotent
    assert len(slept) == 2


def test_client_gives_up_after_retries():
    unavailable = (503, {"title": "down", "status": 503, "detail": "down"}, {"Retry-After": "0"})
    with _Stub([unavailable] * 3) as stub:
        client = IngestClient(stub.url, "t", retries=2, sleep=lambda s: None)
        with pytest.raises(IngestUnavailable):
            client.publish([sample_event()])


def test_client_raises_on_401_with_the_problem():
    with _Stub([(401, {"title": "Missing or invalid API token", "status": 401, "detail": "no"}, {})]) as stub:
        with pytest.raises(IngestError) as caught:
            IngestClient(stub.url, "bad").publish([sample_event()])
    assert caught.value.status == 401 and "token" in str(caught.value)


def test_client_returns_per_event_results_of_a_rejected_batch():
    results = [{"index": 0, "id": "e-1", "status": "rejected", "code": "invalid",
                "reasons": [{"path": "data.amount_nok", "reason": "float"}]}]
    with _Stub([(422, {"title": "Invalid event", "status": 422, "detail": "x", "results": results}, {})]) as stub:
        assert IngestClient(stub.url, "t").publish([sample_event()]) == results


def test_publish_summary_and_exit_code():
    replies = [_ok([{"index": 0, "id": "a", "status": "accepted", "reasons": []},
                    {"index": 1, "id": "b", "status": "duplicate", "reasons": []}]),
               (207, {"results": [{"index": 0, "id": "c", "status": "rejected", "code": "invalid",
                                   "reasons": [{"path": "data.kap", "reason": "Input should be a valid integer"}]}]}, {})]
    with _Stub(replies) as stub:
        out, err = io.StringIO(), io.StringIO()
        code = publish_events(IngestClient(stub.url, "t"), [sample_event(event_id=i) for i in "abc"], [],
                              out=out, err=err, batch_events=2)
    assert code == 1
    assert "accepted 1, duplicate 1, rejected 1, conflict 0" in out.getvalue()
    assert "event #2 id=c rejected (invalid): data.kap: Input should be a valid integer" in out.getvalue()
    assert "3/3 events" in err.getvalue()
