"""`reformspor publish`: reading NDJSON/JSON/CSV, the client's safe retries, the summary."""
from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.ingest.cli import publish_events
from services.shared.clikit import console_on
from services.ingest.client import IngestClient, IngestError, IngestUnavailable, IngestUnreachable
from services.ingest.publishfile import EventsFile, detect_format, read_events, row_to_event
from services.ingest.samples import sample_event
from services.shared.contract import parse_event

CSV = """id,ministry,kind,time,data.line_id,data.ministry,data.phase,data.amount_nok,data.kap,data.post,data.fiscal_year
bfd-1,BFD,bevilget,2026-03-01T10:00:00Z,0-24,BFD,utredning,1250000.00,840,70,2026
kd-1,KD,bevilget,2026-03-01T10:00:00Z,0-24,KD,utvikling,-500,226,21,2026
"""


def test_csv_rows_become_valid_envelopes():
    read = read_events("x.csv", CSV)
    assert read.problems == [] and read.locations == ["row 2", "row 3"]
    parsed = [parse_event(e) for e in read.events]
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
    read = read_events("x.ndjson", text)
    assert [e["id"] for e in read.events] == ["a", "b"] and read.locations == ["line 1", "line 4"]
    assert read.problems[0].location == "line 3"


def test_ndjson_keeps_float_literals_so_the_server_can_reject_them():
    text = json.dumps(sample_event()).replace('"1250000.00"', "1.5")
    [event] = read_events("x.ndjson", text).events
    from services.shared.jsonio import dumps_raw
    assert b'"amount_nok":1.5' in dumps_raw(event)


def test_json_object_or_array():
    assert len(read_events("x.json", json.dumps(sample_event())).events) == 1
    assert len(read_events("x.json", json.dumps([sample_event(), sample_event(event_id="2")])).events) == 2


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
        slept, lines = [], []
        client = IngestClient(stub.url, "t", sleep=slept.append, backoff_s=0.01, on_retry=lines.append)
        assert client.publish([sample_event()]) == accepted
    assert len(stub.bodies) == 3 and len(set(stub.bodies)) == 1  # same ids → the retry is idempotent
    assert len(slept) == 2
    # one visible line per retry, saying why and when
    assert len(lines) == 2 and "HTTP 503: Event log unavailable" in lines[0] and "retry 1/8" in lines[0]


def test_client_honours_retry_after():
    unavailable = (503, {"title": "down", "status": 503}, {"Retry-After": "7"})
    with _Stub([unavailable, _ok([{"index": 0, "id": "e-1", "status": "accepted", "reasons": []}])]) as stub:
        slept = []
        IngestClient(stub.url, "t", sleep=slept.append, backoff_s=0.01).publish([sample_event()])
    assert slept == [7.0]


def test_refused_connection_fails_at_once_without_retrying():
    from services.localstack.processes import free_port

    slept, lines = [], []
    client = IngestClient(f"http://127.0.0.1:{free_port()}", "t", sleep=slept.append, on_retry=lines.append)
    with pytest.raises(IngestUnreachable) as caught:
        client.publish([sample_event()])
    assert "connection refused" in str(caught.value) and "reformspor up" in str(caught.value)
    assert slept == [] and lines == []


@pytest.mark.parametrize("url", ["127.0.0.1:8180", "ftp://example.org", "http://"])
def test_a_malformed_url_is_refused_before_anything_is_sent(url):
    with pytest.raises(IngestUnreachable, match="not an http"):
        IngestClient(url, "t")


def test_an_unknown_host_fails_at_once():
    slept = []
    client = IngestClient("http://no-such-host.invalid:8180", "t", sleep=slept.append)
    with pytest.raises(IngestUnreachable, match="not reachable at http://no-such-host.invalid"):
        client.publish([sample_event()])
    assert slept == []


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
        events = EventsFile([sample_event(event_id=i) for i in "abc"], ["row 2", "row 3", "row 5"], [])
        code = publish_events(IngestClient(stub.url, "t"), events, out=out, err=console_on(err), batch_events=2)
    assert code == 1
    assert "accepted 1, duplicate 1, rejected 1, conflict 0" in out.getvalue()
    assert "row 5 id=c rejected (invalid): data.kap: Input should be a valid integer" in out.getvalue()
    assert err.getvalue() == ""  # stderr is not a terminal: no progress bar, no escape codes in a log


def test_publish_draws_a_progress_bar_on_a_terminal():
    from rich.console import Console

    batch = [{"index": 0, "id": "x", "status": "accepted", "reasons": []}] * 2
    with _Stub([_ok(batch), _ok(batch[:1])]) as stub:
        out, screen = io.StringIO(), io.StringIO()
        terminal = Console(file=screen, force_terminal=True, color_system=None, width=100)
        events = EventsFile([sample_event(event_id=i) for i in "abc"], ["row 2", "row 3", "row 4"], [])
        assert publish_events(IngestClient(stub.url, "t"), events, out=out, err=terminal, batch_events=2) == 0
    assert "3/3 events" in screen.getvalue() and "publishing" in screen.getvalue()
    assert "accepted 3" in out.getvalue()


# --- files as a ministry's finance staff save them ---------------------------------------------------------------

HEADER = ["id", "ministry", "kind", "time", "data.line_id", "data.ministry", "data.phase", "data.amount_nok",
          "data.kap", "data.post", "data.fiscal_year", "data.description"]
ROWS = [["bfd-1", "BFD", "bevilget", "2026-03-01T10:00:00Z", "0-24", "BFD", "utredning", "1 250 000,50", "840", "70",
         "2026", ""],
        ["bfd-2", "BFD", "utbetalt", "2026-03-02T10:00:00Z", "0-24", "BFD", "utredning", "-1\u00a0000,00", "", "",
         "2026", "Særskilt avtale for barn og unge"]]


def _excel_csv(path, delimiter, encoding, decimal_comma=True):
    rows = ROWS if decimal_comma else [[c.replace(" ", "").replace("\u00a0", "").replace(",", ".") if i == 7 else c
                                        for i, c in enumerate(r)] for r in ROWS]
    text = "\r\n".join(delimiter.join(f'"{c}"' if delimiter in c else c for c in row) for row in [HEADER, *rows])
    path.write_bytes((text + "\r\n").encode(encoding))


def _xlsx(path):
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(HEADER)
    # Excel stores numbers as numbers: the amount and kap/post arrive as floats/ints, not text.
    sheet.append(["bfd-1", "BFD", "bevilget", "2026-03-01T10:00:00Z", "0-24", "BFD", "utredning", 1250000.5, 840, 70,
                  2026, None])
    sheet.append(["bfd-2", "BFD", "utbetalt", "2026-03-02T10:00:00Z", "0-24", "BFD", "utredning", -1000, None, None,
                  2026, "Særskilt avtale for barn og unge"])
    workbook.save(path)


@pytest.mark.parametrize("kind", ["excel-semicolon-bom-crlf", "comma-bom", "cp1252-semicolon", "xlsx"])
def test_publish_reads_files_as_excel_saves_them(kind, tmp_path, capsys):
    from services.cli import main

    if kind == "excel-semicolon-bom-crlf":
        path = tmp_path / "bfd.csv"
        _excel_csv(path, ";", "utf-8-sig")
    elif kind == "comma-bom":
        path = tmp_path / "bfd.csv"
        _excel_csv(path, ",", "utf-8-sig", decimal_comma=False)
    elif kind == "cp1252-semicolon":
        path = tmp_path / "bfd.csv"
        _excel_csv(path, ";", "cp1252")
    else:
        path = tmp_path / "bfd.xlsx"
        _xlsx(path)
    results = [{"index": 0, "id": "bfd-1", "status": "accepted", "reasons": []},
               {"index": 1, "id": "bfd-2", "status": "accepted", "reasons": []}]
    with _Stub([_ok(results)]) as stub:
        code = main(["publish", str(path), "--url", stub.url, "--token", "t"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "accepted 2, duplicate 0, rejected 0, conflict 0" in captured.out
    sent = [parse_event(e) for e in json.loads(stub.bodies[0])]
    assert [e.id for e in sent] == ["bfd-1", "bfd-2"]
    assert sent[0].data.amount_ore == 125_000_050 and sent[0].data.kap == 840 and sent[0].source_ministry == "BFD"
    assert sent[1].data.amount_ore == -100_000 and sent[1].data.description == "Særskilt avtale for barn og unge"


def test_rejections_name_the_spreadsheet_row(tmp_path, capsys):
    from services.cli import main

    path = tmp_path / "bfd.csv"
    path.write_text(";".join(HEADER) + "\n\n" + ";".join(ROWS[0]) + "\n" + ";".join(ROWS[0][:7]) + ";1,005\n",
                    encoding="utf-8")
    results = [{"index": 0, "id": "bfd-1", "status": "accepted", "reasons": []},
               {"index": 1, "id": "bfd-1", "status": "rejected", "code": "invalid",
                "reasons": [{"path": "data.amount_nok", "reason": "amount_nok has more than two decimals"}]}]
    with _Stub([_ok(results)]) as stub:
        code = main(["publish", str(path), "--url", stub.url, "--token", "t"])
    out = capsys.readouterr().out
    assert code == 1
    assert "row 4 id=bfd-1 rejected (invalid): data.amount_nok: amount_nok has more than two decimals" in out
    assert json.loads(stub.bodies[0])[1]["data"]["amount_nok"] == "1.005"  # the server, not the reader, refuses it


def test_a_file_without_an_extension_is_recognised_by_its_content(tmp_path):
    from services.ingest.publishfile import read_events_file

    ndjson, csv_file = tmp_path / "events", tmp_path / "export"
    ndjson.write_text(json.dumps(sample_event(event_id="a")) + "\n" + json.dumps(sample_event(event_id="b")) + "\n")
    csv_file.write_text(CSV)
    assert [e["id"] for e in read_events_file(str(ndjson)).events] == ["a", "b"]
    assert read_events_file(str(csv_file)).locations == ["row 2", "row 3"]


def test_publish_shows_a_line_per_retry_and_then_the_summary(tmp_path, capsys):
    from services.cli import main

    path = tmp_path / "one.ndjson"
    path.write_text(json.dumps(sample_event(event_id="a")) + "\n")
    unavailable = (503, {"title": "Event log unavailable", "status": 503, "detail": "Kafka is down"}, {"Retry-After": "0"})
    with _Stub([unavailable, _ok([{"index": 0, "id": "a", "status": "accepted", "reasons": []}])]) as stub:
        code = main(["publish", str(path), "--url", stub.url, "--token", "t"])
    captured = capsys.readouterr()
    assert code == 0 and "accepted 1, duplicate 0" in captured.out
    [retry] = [line for line in captured.err.splitlines() if "retry" in line]
    assert retry.startswith("ingest: HTTP 503: Event log unavailable: Kafka is down; retry 1/8 in 1.0 s")
