"""Every Kafka client's settings come from one place: services/shared/kafka_security.py."""
from __future__ import annotations

import pytest

from services.shared.config import Settings, Topics
from services.shared.kafka_security import (KafkaCredential, KafkaCredentialError, client_config, client_properties,
                                            kafka_python_options, parse_properties, transactional_id,
                                            write_credential)


def _local(tmp_path, **fields) -> Settings:
    secrets = tmp_path / "secrets"
    write_credential(secrets, KafkaCredential("budsjett", "s3cret-pw"))
    return Settings(kafka_bootstrap="127.0.0.1:9092", kafka_secrets_dir=str(secrets), home=tmp_path, **fields)


def test_a_service_gets_scram_settings_from_its_private_file(tmp_path):
    settings = _local(tmp_path)
    assert client_config(settings, "budsjett") == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "budsjett", "sasl.password": "s3cret-pw"}
    assert (tmp_path / "secrets" / "budsjett.properties").stat().st_mode & 0o777 == 0o600
    assert kafka_python_options(settings, "budsjett") == {
        "bootstrap_servers": "127.0.0.1:9092", "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "budsjett", "sasl_plain_password": "s3cret-pw"}


def test_the_password_never_shows_in_a_repr(tmp_path):
    settings = _local(tmp_path, kafka_password="env-secret")
    assert "env-secret" not in repr(settings)
    assert "s3cret-pw" not in repr(KafkaCredential("budsjett", "s3cret-pw"))


def test_a_credential_file_others_can_read_is_refused(tmp_path):
    settings = _local(tmp_path)
    (tmp_path / "secrets" / "budsjett.properties").chmod(0o644)
    with pytest.raises(KafkaCredentialError, match="readable by others.*chmod 600"):
        client_config(settings, "budsjett")


def test_a_missing_credential_says_where_it_was_looked_for(tmp_path):
    with pytest.raises(KafkaCredentialError, match="REFORMSPOR_KAFKA_USERNAME.*milepael.properties"):
        client_config(_local(tmp_path), "milepael")


def test_production_credentials_come_from_the_environment(tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text("from-file\n")
    password_file.chmod(0o600)
    environ = {"REFORMSPOR_KAFKA_USERNAME": "budsjett", "REFORMSPOR_KAFKA_PASSWORD_FILE": str(password_file),
               "REFORMSPOR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "REFORMSPOR_KAFKA_CA_FILE": "/etc/reformspor/ca.pem",
               "REFORMSPOR_KAFKA_BOOTSTRAP": "kafka.example:9093"}
    config = client_config(Settings.from_env(environ), "budsjett")
    assert config == {"bootstrap.servers": "kafka.example:9093", "security.protocol": "SASL_SSL",
                      "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "budsjett", "sasl.password": "from-file",
                      "ssl.ca.location": "/etc/reformspor/ca.pem"}
    options = kafka_python_options(Settings.from_env(environ), "budsjett")
    assert options["ssl_cafile"] == "/etc/reformspor/ca.pem" and options["ssl_check_hostname"] is True
    with pytest.raises(KafkaCredentialError, match="REFORMSPOR_KAFKA_PASSWORD"):
        client_config(Settings.from_env({"REFORMSPOR_KAFKA_USERNAME": "budsjett"}), "budsjett")


def test_an_open_broker_needs_no_credential_and_a_typo_is_named(tmp_path):
    assert client_config(Settings(kafka_security_protocol="PLAINTEXT", home=tmp_path), "ingest") == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}
    with pytest.raises(KafkaCredentialError, match="must be one of PLAINTEXT, SASL_PLAINTEXT, SASL_SSL"):
        client_config(Settings(kafka_security_protocol="SASL_PLAIN", home=tmp_path), "ingest")


def test_client_properties_round_trip_as_kcat_reads_them(tmp_path):
    config = client_config(_local(tmp_path), "budsjett")
    text = client_properties(config)
    assert text.splitlines()[0] == "bootstrap.servers=127.0.0.1:9092"
    assert parse_properties("# comment\n" + text) == config


def test_ministry_inbound_topics_and_service_ids():
    topics = Topics("reformspor.")
    assert topics.inbound_for("bfd") == "reformspor.inbound.BFD"
    assert topics.ministry_of_inbound("reformspor.inbound.BFD") == "BFD"
    assert topics.ministry_of_inbound(topics.budget) is None
    assert topics.ministry_of_inbound(f"{topics.prefix}inbound") is None
    assert transactional_id(Settings(), "budsjett", "w1") == "reformspor.budsjett-w1"
