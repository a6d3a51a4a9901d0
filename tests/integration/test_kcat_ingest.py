"""Non-Python publishers: kcat with a ministry's Kafka credentials writes plain JSON to its own inbound topic.

The properties file is what `reformspor tokens create --kind kafka` prints, used as the README says
(`kcat -F FILE`). kcat runs with a librdkafka >= 2.6.1 (tests/support/kcat.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from services.ingest.samples import sample_event
from services.ingest.testing import read_topic
from services.localstack.processes import free_port
from services.localstack.stack import LocalStack
from services.shared.config import Settings
from services.shared.streaming import DEAD_LETTER_REASON_HEADER
from services.shared.topics import ensure_topics
from tests.support.kcat import kcat, kcat_env

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat (Debian package) not installed")]


def ministry_properties(settings, tmp_path, ministry: str):
    """`reformspor tokens create --ministry CODE --kind kafka > FILE`, as an operator runs it."""
    created = subprocess.run([sys.executable, "-m", "services.cli", "tokens", "create", "--ministry", ministry,
                              "--kind", "kafka"], env={**os.environ, **settings.to_env()},
                             capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    path = tmp_path / f"{ministry.lower()}.properties"
    path.write_text(created.stdout)
    return path


def kcat_publish(properties, topic: str, document: dict, key: str = "0-24") -> None:
    published = kcat("-F", str(properties), "-P", "-t", topic, "-k", key, stdin=json.dumps(document).encode() + b"\n")
    assert published.returncode == 0, published.stderr


def test_kcat_with_a_ministrys_credentials_publishes_its_own_events_only(stack, settings, tmp_path):
    bfd = ministry_properties(settings, tmp_path, "BFD")
    stack.start_service("ingest")
    topic = settings.topics.inbound_for("BFD")

    good = sample_event(event_id="kcat-1", line_id="0-24")
    kcat_publish(bfd, topic, good)
    kcat_publish(bfd, topic, good)  # a redelivery: forwarded once
    kcat_publish(bfd, topic, sample_event(ministry="KD", event_id="kcat-kd"))
    kcat_publish(bfd, topic, sample_event(event_id="kcat-bad", amount_nok="1.001"))
    other = kcat("-F", str(bfd), "-P", "-t", settings.topics.inbound_for("KD"), stdin=b"{}\n")
    assert other.returncode != 0 and b"Topic authorization failed" in other.stderr  # KD's topic is KD's

    forwarded = read_topic(settings, settings.topics.budget, min_count=1, timeout_s=60, settle_s=2)
    assert [(r.key, r.json()["id"], r.headers["reformspor-publisher"]) for r in forwarded] == [(b"0-24", "kcat-1", b"BFD")]

    dead = read_topic(settings, settings.topics.dead_letter, min_count=2, timeout_s=60)
    reasons = {json.loads(r.value)["id"]: r.headers[DEAD_LETTER_REASON_HEADER].decode() for r in dead}
    assert set(reasons) == {"kcat-kd", "kcat-bad"}
    assert "may not publish as urn:no:dep:KD" in reasons["kcat-kd"]
    assert "more than two decimals" in reasons["kcat-bad"]

    text = urllib.request.urlopen(settings.service_url("ingest") + "/metrics", timeout=5).read().decode()
    assert 'reformspor_ingest_events_total{channel="kafka",outcome="accepted"} 1.0' in text
    assert 'reformspor_ingest_events_total{channel="kafka",outcome="duplicate"} 1.0' in text
    assert 'reformspor_ingest_events_total{channel="kafka",outcome="forbidden"} 1.0' in text
    assert 'reformspor_ingest_events_total{channel="kafka",outcome="rejected"} 1.0' in text


def test_the_readme_kafka_example_reaches_the_budget_topic_as_written(secure_kafka_broker, tmp_path):
    """README.md's "Publishing over Kafka" block, run verbatim against a running ingest, forwards BFD's event."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Publishing over Kafka", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)```", section, re.S)
    settings = secure_kafka_broker.client_settings(Settings(  # the README's own topic prefix
        home=tmp_path / "home", partitions=2, ingest_port=free_port(), budsjett_port=free_port(),
        milepael_port=free_port()))
    ensure_topics(settings)
    stack = LocalStack(settings)
    try:
        stack.start_service("ingest")
        env = {**kcat_env(), **settings.to_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        ran = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
        forwarded = read_topic(settings, "reformspor.budsjett.events", min_count=1, timeout_s=60)
        assert ("bfd-2026-0001", b"BFD") in [(r.json()["id"], r.headers["reformspor-publisher"]) for r in forwarded]
    finally:
        stack.stop_service("ingest", hard=False)
