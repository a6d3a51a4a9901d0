"""`reformspor tokens …` and `reformspor publish FILE` end to end, as a ministry's operator runs them."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from services.ingest.samples import sample_event
from services.ingest.testing import read_topic

pytestmark = pytest.mark.integration


def reformspor(settings, *args, env_extra=None):
    env = {**os.environ, **settings.to_env(), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_tokens_and_publish_ndjson_and_csv(stack, settings, tmp_path):
    created = reformspor(settings, "tokens", "create", "--ministry", "BFD", "--name", "økonomi")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("rfs_bfd_")
    listing = reformspor(settings, "tokens", "list")
    assert "BFD" in listing.stdout and "active" in listing.stdout and token not in listing.stdout
    stack.start_service("ingest")

    ndjson = tmp_path / "bfd.ndjson"
    lines = [sample_event(event_id="n-1"), sample_event(event_id="n-2", phase="utvikling"),
             sample_event(event_id="n-1"),                       # duplicate
             sample_event(event_id="n-3", amount_nok="10.005")]  # rejected
    ndjson.write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    result = reformspor(settings, "publish", str(ndjson), env_extra={"REFORMSPOR_TOKEN": token})
    assert result.returncode == 1, result.stderr
    assert "accepted 2, duplicate 1, rejected 1, conflict 0" in result.stdout
    assert "line 4 id=n-3 rejected (invalid): data.amount_nok: amount_nok has more than two decimals" in result.stdout
    assert "\x1b" not in result.stderr and "4/4" not in result.stderr  # a pipe gets no progress bar

    again = reformspor(settings, "publish", str(ndjson), "--token", token)  # resending is safe
    assert "accepted 0, duplicate 3, rejected 1" in again.stdout

    csv_file = tmp_path / "bfd.csv"
    csv_file.write_text(
        "id,ministry,kind,time,data.line_id,data.ministry,data.phase,data.amount_nok,data.kap,data.post,data.fiscal_year\n"
        "c-1,BFD,bevilget,2026-03-01T10:00:00Z,0-24,BFD,implementering,750000.00,840,70,2026\n"
        "c-2,BFD,utbetalt,2026-03-02T10:00:00Z,0-24,BFD,implementering,-120.50,,,2026\n")
    result = reformspor(settings, "publish", str(csv_file), "--token", token)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "accepted 2, duplicate 0, rejected 0, conflict 0" in result.stdout

    records = read_topic(settings, settings.topics.budget, min_count=4)
    assert sorted(r.json()["id"] for r in records) == ["c-1", "c-2", "n-1", "n-2"]
    assert {r.key for r in records} == {b"0-24"}

    revoked = reformspor(settings, "tokens", "revoke", "1")
    assert revoked.returncode == 0
    refused = reformspor(settings, "publish", str(csv_file), "--token", token)
    assert refused.returncode == 2 and "401" in refused.stderr
