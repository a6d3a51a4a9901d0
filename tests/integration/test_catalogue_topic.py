"""Issue 14, rejections the publisher sees, on a real secured broker: the catalogue travels through its
compacted topic to budsjett and ingest; ingest refuses another ministry's post with 422; a downstream
rejection is visible through GET /v1/events/{id} and `publish --wait`."""
from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from services.budsjett.catalogue import CatalogueHolder, check_post
from services.ingest.client import IngestClient
from services.ingest.cli import publish_events
from services.ingest.publishfile import read_events_file
from services.ingest.samples import sample_event
from services.ingest.testing import post, read_topic
from services.ingest.tokens import issue_credential, issue_token
from services.localstack.processes import wait_until
from services.shared.clikit import console_on
from services.shared.config import Settings
from services.shared.streaming import DEAD_LETTER_LABEL_HEADER, DEAD_LETTER_REASON_HEADER

pytestmark = pytest.mark.integration

# The 2026 file as Finansdepartementet writes it: names with leading spaces, DFD with its own number 15.
CATALOGUE_2026 = ("fdep_nr;fdep_navn;kap_nr;kap_navn;post_nr;post_navn;stikkord;beløp\n"
                  "15; Digitaliserings- og forvaltningsdepartementet;1540;Digitaliseringsdirektoratet;1;"
                  "Driftsutgifter;;400 000 000\n"
                  "8; Barne- og familiedepartementet;840;Tiltak mot vold og overgrep;70;Tilskudd;;"
                  "150 000 000\n")


def import_catalogue_file(settings: Settings, path: Path, monkeypatch, capsys) -> str:
    """`reformspor catalogue import FILE` as an operator runs it, against this test's stack."""
    from services.cli import main as cli_main

    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert cli_main(["catalogue", "import", str(path)]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def get(url: str, token: str) -> tuple[int, str, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], json.loads(error.read())


def test_catalogue_import_publishes_the_year_and_budsjett_and_ingest_follow_it(secure_settings, tmp_path,
                                                                               monkeypatch, capsys):
    settings = secure_settings
    path = tmp_path / "2026_gulbok_datagrunnlag.csv"
    path.write_text(CATALOGUE_2026, encoding="utf-8")
    printed = import_catalogue_file(settings, path, monkeypatch, capsys)
    assert f"Published 2 budget items for 2026 from {path.name} to {settings.topics.catalogue}" in printed
    [record] = read_topic(settings, settings.topics.catalogue, min_count=1)
    assert record.key == b"2026" and len(record.json()["items"]) == 2

    followers = [CatalogueHolder(settings, principal) for principal in ("budsjett", "ingest")]  # as the services do
    try:
        for holder in followers:
            holder.load()
            assert holder.status()["caught_up"] and holder.status()["fiscal_years"] == [2026]
            assert check_post(holder.current, 2026, "DFD", 1540, 1) is None
            assert "belongs to BFD, not DFD" in check_post(holder.current, 2026, "DFD", 840, 70).reason
        # a re-import replaces the year whole, and a running follower sees it
        path.write_text(CATALOGUE_2026.rsplit("8;", 1)[0], encoding="utf-8")
        assert "Published 1 budget items for 2026" in import_catalogue_file(settings, path, monkeypatch, capsys)
        for holder in followers:
            wait_until(lambda: holder.current.get(2026, 840, 70) is None, 30, "the re-imported 2026 catalogue")
            assert len(holder.current) == 1
    finally:
        for holder in followers:
            holder.stop()


def test_dfd_2026_post_counted_another_ministrys_post_422_and_a_downstream_rejection_visible(
        stack, settings, tmp_path, monkeypatch, capsys):
    path = tmp_path / "2026_gulbok_datagrunnlag.csv"
    path.write_text(CATALOGUE_2026, encoding="utf-8")
    import_catalogue_file(settings, path, monkeypatch, capsys)
    dfd, bfd = issue_token(settings, "DFD"), issue_token(settings, "BFD")
    stack.start_service("ingest")
    stack.start_service("budsjett")
    budsjett = settings.service_url("budsjett")
    status_of = json.loads(urllib.request.urlopen(f"{budsjett}/v1/status", timeout=10).read())["catalogue"]
    assert status_of["fiscal_years"] == [2026] and status_of["items"] == 2

    own_post_counted_other_refused(settings, dfd)
    downstream_rejection_visible_by_id(settings, dfd, bfd)
    publish_wait_reports_the_rejection(settings, dfd, tmp_path)
    kafka_path_refuses_with_the_same_label(settings)


def own_post_counted_other_refused(settings: Settings, dfd: str) -> None:
    """DFD's own post (fdep_nr 15 in 2026) is accepted and counted; BFD's post, from DFD, is refused at once."""
    ingest, budsjett = settings.service_url("ingest"), settings.service_url("budsjett")
    own = sample_event("bevilget", "DFD", "dfd-1540", line_id="0-30", kap=1540, post=1, amount_nok="2000000.00")
    assert post(f"{ingest}/v1/events", json.dumps(own).encode(), dfd)[0] == 202
    other = sample_event("bevilget", "DFD", "dfd-840", line_id="0-30", kap=840, post=70)
    status, headers, body = post(f"{ingest}/v1/events", json.dumps(other).encode(), dfd)
    assert status == 422 and headers["Content-Type"].startswith("application/problem+json")
    assert "kap 840 post 70 (Tilskudd) belongs to BFD, not DFD, in the 2026 budget catalogue" in body["detail"]

    def bevilget_dfd() -> int | None:
        line = json.loads(urllib.request.urlopen(f"{budsjett}/v1/lines/0-30", timeout=10).read())
        return line["by_ministry"].get("DFD", {}).get("bevilget_ore")

    wait_until(lambda: _quietly(bevilget_dfd) == 200_000_000, 60, "DFD's 2026 contribution counted")


def downstream_rejection_visible_by_id(settings: Settings, dfd: str, bfd: str) -> None:
    """A correction of an unknown id: accepted by ingest, rejected by budsjett, visible by id to DFD only."""
    ingest = settings.service_url("ingest")
    correction = sample_event("korrigert", "DFD", "dfd-fix", line_id="0-30", corrects_id="never-sent")
    assert post(f"{ingest}/v1/events", json.dumps(correction).encode(), dfd)[0] == 202
    url = f"{ingest}/v1/events/dfd-fix"
    wait_until(lambda: get(url, dfd)[2].get("status") == "rejected", 60, "the rejection visible by id")
    _, _, rejected = get(url, dfd)
    assert rejected["decided_by"] == "budsjett" and "never-sent" in rejected["reason"] and rejected["reason_label"]
    _, _, applied = get(f"{ingest}/v1/events/dfd-1540", dfd)
    assert applied["status"] == "applied" and applied["applied"]["line_id"] == "0-30"
    for unknown in (get(url, bfd), get(f"{ingest}/v1/events/no-such-id", dfd)):  # another ministry's = unknown
        assert unknown[0] == 404 and unknown[1].startswith("application/problem+json")
    assert get(f"{ingest}/v1/events/dfd-840", dfd)[2]["reason_label"] == "another_ministrys_post"


def publish_wait_reports_the_rejection(settings: Settings, dfd: str, tmp_path: Path) -> None:
    """`publish --wait`: the upload is accepted, then the downstream rejection is printed with its row."""
    events = tmp_path / "events.ndjson"
    events.write_text("\n".join(json.dumps(e) for e in (
        sample_event("bevilget", "DFD", "dfd-1540-b", line_id="0-30", kap=1540, post=1),
        sample_event("korrigert", "DFD", "dfd-fix-2", line_id="0-30", corrects_id="also-never-sent"))) + "\n",
        encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with IngestClient(settings.service_url("ingest"), dfd) as client:
        code = publish_events(client, read_events_file(str(events)), out=out, err=console_on(err),
                              wait_timeout_s=60)
    assert code == 1, out.getvalue()
    assert "downstream: applied 1, rejected 1, still pending 0" in out.getvalue()
    assert "line 2 id=dfd-fix-2 rejected downstream" in out.getvalue() and "also-never-sent" in out.getvalue()
    assert "pending" in err.getvalue()


def kafka_path_refuses_with_the_same_label(settings: Settings) -> None:
    """The raw inbound Kafka path: the same refusal, dead-lettered with the same label."""
    from tests.integration.test_ingest_inbound_identity import publish_as

    dfd_kafka = issue_credential(settings, "DFD", kind="kafka").secret
    publish_as(dfd_kafka, settings.topics.inbound_for("DFD"),
               [sample_event("bevilget", "DFD", "dfd-840-kafka", line_id="0-30", kap=840, post=70)])

    def kafka_refusal():
        return [r for r in read_topic(settings, settings.topics.dead_letter, settle_s=0.2)
                if r.value and b"dfd-840-kafka" in r.value]

    wait_until(kafka_refusal, 60, "the inbound event's dead letter")
    [dead] = kafka_refusal()
    assert dead.headers[DEAD_LETTER_LABEL_HEADER] == b"another_ministrys_post"
    assert b"belongs to BFD, not DFD, in the 2026 budget catalogue" in dead.headers[DEAD_LETTER_REASON_HEADER]


def _quietly(function):
    try:
        return function()
    except (urllib.error.URLError, KeyError):
        return None
