"""The broker itself decides who may do what: SASL/SCRAM for every client, ACLs for every topic.

These run against the secured session broker (`secure_kafka_broker`), with
kcat as a ministry's integration team would use it and confluent-kafka (the
librdkafka client Quix Streams runs on) as the services do.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from services.shared.kafka_security import client_config, client_properties, consumer_group, transactional_id
from tests.support.kcat import kcat, kcat_env

pytestmark = pytest.mark.integration

# What each service may write, written out here independently of deploy/kafka/acls.csv on purpose.
SERVICE_WRITES = {
    "ingest": {"budget", "reform", "dead_letter"},
    "budsjett": {"budget", "totals", "notifications", "dead_letter"},
    "milepael": {"justering", "milepael_ticks", "dead_letter"},
}
SERVICE_READS = {
    "ingest": {"inbound_bfd"},
    "budsjett": {"budget"},
    "milepael": {"reform", "totals", "milepael_ticks"},
}
TOPIC_FIELDS = ("budget", "reform", "totals", "notifications", "justering", "milepael_ticks", "dead_letter")


def topic_names(settings) -> dict[str, str]:
    names = {name: getattr(settings.topics, name) for name in TOPIC_FIELDS}
    return names | {"inbound_bfd": settings.topics.inbound_for("BFD"), "inbound_kd": settings.topics.inbound_for("KD")}


def reformspor(settings, *args):
    env = {**os.environ, **settings.to_env()}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def create_ministry_properties(settings, tmp_path, ministry: str = "BFD"):
    """`reformspor tokens create --kind kafka > FILE`, as the README tells an operator."""
    created = reformspor(settings, "tokens", "create", "--ministry", ministry, "--kind", "kafka")
    assert created.returncode == 0, created.stderr
    path = tmp_path / f"{ministry.lower()}.properties"
    path.write_text(created.stdout)
    credential_id = int(re.search(r"credential id (\d+)", created.stderr).group(1))
    return path, credential_id


def read_all(settings, principal: str, topic: str, timeout_s: float = 20.0) -> list[bytes]:
    """Every message of `topic` as `principal` reads it; raises KafkaException when refused."""
    consumer = Consumer({**client_config(settings, principal), "group.id": consumer_group(settings, principal) + "-t",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                if values:
                    return values
                continue
            if message.error() is not None:
                raise KafkaException(message.error())
            values.append(message.value())
        return values
    finally:
        consumer.close()


def produce_each(settings, principal: str, topics: dict[str, str]) -> dict[str, KafkaError | None]:
    """Produce one message to each topic as `principal`; the delivery error per topic (None: written)."""
    outcome: dict[str, KafkaError | None] = {}
    producer = Producer({**client_config(settings, principal), "message.timeout.ms": 15000})
    for field, topic in topics.items():
        producer.produce(topic, key=b"k", value=json.dumps({"by": principal}).encode(),  # totals is compacted: keyed
                         on_delivery=lambda error, _message, field=field: outcome.__setitem__(field, error))
    producer.flush(30)
    assert set(outcome) == set(topics), "every message must get a delivery report"
    return outcome


def test_a_client_without_credentials_gets_nothing(secure_settings):
    bootstrap = secure_settings.kafka_bootstrap
    listing = kcat("-b", bootstrap, "-L", "-m", "5")
    assert listing.returncode != 0
    produced = kcat("-b", bootstrap, "-P", "-t", secure_settings.topics.budget, "-m", "5", stdin=b'{"forged": 1}\n')
    assert produced.returncode != 0
    consumed = kcat("-b", bootstrap, "-C", "-t", secure_settings.topics.budget, "-e", "-m", "5")
    assert consumed.returncode != 0
    # A wrong password is no better than none.
    wrong = secure_settings.home / "wrong.properties"
    wrong.parent.mkdir(parents=True, exist_ok=True)
    config = client_config(secure_settings, "budsjett") | {"sasl.password": "not-the-password"}
    wrong.write_text(client_properties(config))
    refused = kcat("-F", str(wrong), "-L", "-m", "5")
    assert refused.returncode != 0 and b"Authentication failed" in refused.stderr
    assert read_all(secure_settings, "admin", secure_settings.topics.budget, timeout_s=3) == []


def test_a_ministry_writes_its_own_inbound_topic_and_nothing_else(secure_settings, tmp_path):
    properties, _credential_id = create_ministry_properties(secure_settings, tmp_path, "BFD")
    text = properties.read_text()
    for key in ("bootstrap.servers", "security.protocol", "sasl.mechanisms", "sasl.username", "sasl.password"):
        assert re.search(rf"^{re.escape(key)}=.+$", text, re.M), key
    topics = topic_names(secure_settings)

    event = b'{"id": "bfd-1", "source": "urn:no:dep:BFD"}\n'
    own = kcat("-F", str(properties), "-P", "-t", topics["inbound_bfd"], stdin=event)
    assert own.returncode == 0, own.stderr
    assert read_all(secure_settings, "ingest", topics["inbound_bfd"]) == [event.strip()]

    forged = b'{"type": "no.reformspor.budsjett.bevilget.v1", "source": "urn:no:dep:BFD", "data": {"amount_nok": "999999"}}\n'
    for name in ("budget", "totals", "dead_letter", "inbound_kd"):
        refused = kcat("-F", str(properties), "-P", "-t", topics[name], stdin=forged)
        assert refused.returncode != 0 and b"Topic authorization failed" in refused.stderr, (name, refused.stderr)
        assert read_all(secure_settings, "admin", topics[name], timeout_s=3) == [], f"{name} got the forged event"
    peek = kcat("-F", str(properties), "-C", "-t", topics["budget"], "-e")
    assert peek.returncode != 0 and b"Topic authorization failed" in peek.stderr


def test_a_revoked_ministry_cannot_connect(secure_settings, tmp_path):
    properties, credential_id = create_ministry_properties(secure_settings, tmp_path, "KD")
    before = kcat("-F", str(properties), "-P", "-t", secure_settings.topics.inbound_for("KD"), stdin=b"{}\n")
    assert before.returncode == 0, before.stderr

    revoked = reformspor(secure_settings, "tokens", "revoke", str(credential_id))
    assert revoked.returncode == 0, revoked.stderr
    after = kcat("-F", str(properties), "-L", "-m", "5")
    assert after.returncode != 0 and b"Authentication failed" in after.stderr
    listing = reformspor(secure_settings, "tokens", "list")
    assert re.search(rf"^\s*{credential_id}\s+KD\s+kafka\s.*revoked", listing.stdout, re.M), listing.stdout


@pytest.mark.parametrize("service", sorted(SERVICE_WRITES))
def test_each_service_writes_and_reads_only_its_row_of_the_matrix(secure_settings, service):
    topics = topic_names(secure_settings)
    outcome = produce_each(secure_settings, service, topics)
    written = {name for name, error in outcome.items() if error is None}
    assert written == SERVICE_WRITES[service]
    for name, error in outcome.items():
        if error is not None:
            assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (name, error)

    readable = {name: topics[name] for name in SERVICE_READS[service] | {"budget", "inbound_bfd"}}
    assert set(produce_each(secure_settings, "admin", readable).values()) == {None}  # something to read
    for name in SERVICE_READS[service]:
        assert read_all(secure_settings, service, topics[name]), f"{service} cannot read {name}"
    for name in {"budget", "inbound_bfd"} - SERVICE_READS[service]:
        with pytest.raises(KafkaException, match="TOPIC_AUTHORIZATION_FAILED|[Tt]opic authorization failed"):
            read_all(secure_settings, service, topics[name], timeout_s=5)


def test_services_run_transactions_only_under_their_own_ids(secure_settings):
    """Exactly-once (Quix) needs TRANSACTIONAL_ID and IDEMPOTENT_WRITE; another service's id is refused."""
    def begin(principal: str, transactional: str) -> None:
        producer = Producer({**client_config(secure_settings, principal), "transactional.id": transactional})
        producer.init_transactions(15)
        producer.begin_transaction()
        producer.produce(secure_settings.topics.dead_letter, value=b"{}")
        producer.commit_transaction(15)

    begin("budsjett", transactional_id(secure_settings, "budsjett"))
    with pytest.raises(KafkaException, match="TRANSACTIONAL_ID_AUTHORIZATION_FAILED|[Tt]ransactional [Ii]d authorization"):
        begin("budsjett", transactional_id(secure_settings, "ingest"))


def test_credentials_come_from_the_environment_in_production(secure_settings):
    """REFORMSPOR_KAFKA_USERNAME/_PASSWORD_FILE override the local files (one principal per process)."""
    password_file = secure_settings.home / "milepael.password"
    password_file.parent.mkdir(parents=True, exist_ok=True)
    password_file.write_text(client_config(secure_settings, "milepael")["sasl.password"] + "\n")
    password_file.chmod(0o600)
    production = secure_settings.model_copy(update=dict(
        kafka_username="milepael", kafka_password_file=str(password_file),
        kafka_secrets_dir=str(secure_settings.home / "nowhere")))
    assert produce_each(production, "any", {"justering": secure_settings.topics.justering}) == {"justering": None}
    password_file.chmod(0o644)
    with pytest.raises(Exception, match="readable by others"):
        client_config(production, "any")


def test_tls_broker_verified_by_its_own_ca(secure_tls_broker, tmp_path):
    settings, broker = secure_tls_broker
    assert settings.kafka_security_protocol == "SASL_SSL" and broker.ca_file.exists()
    outcome = produce_each(settings, "budsjett", {"totals": settings.topics.totals, "reform": settings.topics.reform})
    assert outcome["totals"] is None
    assert outcome["reform"].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert read_all(settings, "milepael", settings.topics.totals) == [b'{"by": "budsjett"}']

    properties, _ = create_ministry_properties(settings, tmp_path, "BFD")
    assert f"ssl.ca.location={broker.ca_file}" in properties.read_text()
    published = kcat("-F", str(properties), "-P", "-t", settings.topics.inbound_for("BFD"), stdin=b"{}\n")
    assert published.returncode == 0, published.stderr
    # Without the project's CA the broker's certificate is not trusted: no connection at all.
    untrusted = tmp_path / "untrusted.properties"
    untrusted.write_text("".join(line + "\n" for line in properties.read_text().splitlines()
                                 if not line.startswith("ssl.ca.location=")))
    refused = kcat("-F", str(untrusted), "-L", "-m", "5")
    assert refused.returncode != 0 and b"certificate verify failed" in refused.stderr


@pytest.fixture
def secure_tls_broker(tmp_path):
    """The local stack's broker with SASL_SSL, as `reformspor up --tls` starts it; stopped by pid."""
    from services.localstack.processes import free_port
    from services.localstack.stack import LocalStack
    from services.shared.config import Settings

    local = LocalStack(Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", kafka_security_protocol="SASL_SSL",
                                home=tmp_path / "home", topic_prefix=f"t{uuid.uuid4().hex[:8]}."))
    try:
        local.start_kafka()  # the CA and certificate, the broker, the topics and the ACLs
        yield local.settings, local.kafka
    finally:
        local.down(progress=lambda _line: None)


def test_the_readme_kcat_example_works_as_written(secure_kafka_broker, tmp_path):
    """deploy/kafka/README.md's two shell blocks, run verbatim, publish BFD's event to its topic."""
    from services.shared.config import Settings
    from services.shared.topics import ensure_topics

    readme = (Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "README.md").read_text()
    section = readme.split("## For a ministry's integration team", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    settings = secure_kafka_broker.client_settings(Settings(home=tmp_path / "home"))  # the README's own prefix
    ensure_topics(settings)
    env = {**kcat_env(), **settings.to_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for block in blocks:
        ran = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
    published = [json.loads(value) for value in read_all(settings, "ingest", "reformspor.inbound.BFD")]
    assert "bfd-2026-0001" in [event["id"] for event in published]


def test_tokens_without_a_reachable_broker_is_one_clear_line(tmp_path):
    from services.localstack.processes import free_port
    from services.shared.config import Settings

    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", home=tmp_path / "home")
    created = reformspor(settings, "tokens", "create", "--ministry", "BFD", "--kind", "kafka")
    assert created.returncode == 2 and created.stdout == ""
    assert created.stderr.startswith("error: cannot reach Kafka") and "Traceback" not in created.stderr
    assert len(created.stderr.strip().splitlines()) == 1
