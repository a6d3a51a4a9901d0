"""Non-Python publishers: kcat writes plain JSON to the inbound topic; ingest verifies the signature and forwards."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request

import pytest

from services.ingest.core import sign
from services.ingest.samples import sample_event
from services.ingest.testing import read_topic
from services.ingest.tokens import issue_signing_key
from services.shared.streaming import DEAD_LETTER_REASON_HEADER

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat (Debian package) not installed")]


def kcat_publish(settings, value: bytes, key: str, headers: dict[str, str]) -> None:
    command = ["kcat", "-P", "-b", settings.kafka_bootstrap, "-t", settings.topics.inbound, "-k", key]
    for name, header_value in headers.items():
        command += ["-H", f"{name}={header_value}"]
    subprocess.run(command, input=value + b"\n", check=True, timeout=30, capture_output=True)


def test_kcat_signed_event_is_forwarded_and_forgeries_are_dead_lettered(stack, settings):
    bfd_key_id, bfd_key = issue_signing_key(settings, "BFD", name="kcat")
    stack.start_service("ingest")

    good = json.dumps(sample_event(event_id="kcat-1", line_id="0-24")).encode()
    signed = {"reformspor-key-id": str(bfd_key_id), "reformspor-signature": sign(bfd_key, good)}
    kcat_publish(settings, good, "0-24", signed)
    kcat_publish(settings, good, "0-24", signed)  # a redelivery: forwarded once

    unsigned = json.dumps(sample_event(event_id="kcat-unsigned")).encode()
    kcat_publish(settings, unsigned, "0-24", {})
    tampered = good.replace(b"1250000.00", b"9250000.00")
    kcat_publish(settings, tampered, "0-24", signed)
    as_kd = json.dumps(sample_event(ministry="KD", event_id="kcat-kd")).encode()
    kcat_publish(settings, as_kd, "0-24", {"reformspor-key-id": str(bfd_key_id), "reformspor-signature": sign(bfd_key, as_kd)})
    invalid = json.dumps(sample_event(event_id="kcat-bad", amount_nok="1.001")).encode()
    kcat_publish(settings, invalid, "0-24", {"reformspor-key-id": str(bfd_key_id), "reformspor-signature": sign(bfd_key, invalid)})

    forwarded = read_topic(settings, settings.topics.budget, min_count=1, timeout_s=60, settle_s=2)
    assert [(r.key, r.json()["id"], r.headers["reformspor-publisher"]) for r in forwarded] == [(b"0-24", "kcat-1", b"BFD")]

    dead = read_topic(settings, settings.topics.dead_letter, min_count=4, timeout_s=60)
    reasons = {json.loads(r.value)["id"]: r.headers[DEAD_LETTER_REASON_HEADER].decode() for r in dead}
    assert set(reasons) == {"kcat-unsigned", "kcat-1", "kcat-kd", "kcat-bad"}
    assert reasons["kcat-unsigned"].startswith("unsigned")
    assert reasons["kcat-1"].startswith("bad signature")  # the tampered copy, not the genuine one
    assert "may not publish as urn:no:dep:KD" in reasons["kcat-kd"]
    assert "more than two decimals" in reasons["kcat-bad"]

    text = urllib.request.urlopen(settings.service_url("ingest") + "/metrics", timeout=5).read().decode()
    assert 'reformspor_ingest_events_total{channel="kafka",outcome="accepted"} 1.0' in text
    assert 'reformspor_ingest_events_total{channel="kafka",outcome="duplicate"} 1.0' in text
    assert 'reformspor_ingest_events_total{channel="kafka",outcome="forbidden"} 3.0' in text
