"""Who a Kafka client is, and the one place every client gets its connection settings.

Every principal (the broker, the admin, each service, each publishing
ministry) authenticates with SASL/SCRAM-SHA-512; the broker's ACLs
(services/shared/acls.py, deploy/kafka/acls.csv) decide what it may do.

Where a client's credential comes from, first match wins:

1. the environment (production): REFORMSPOR_KAFKA_USERNAME with
   REFORMSPOR_KAFKA_PASSWORD or REFORMSPOR_KAFKA_PASSWORD_FILE;
2. the local stack: `<secrets dir>/<principal>.properties`, written by
   `LocalKafka` or `reformspor tokens create --kind kafka`, mode 0600
   (a file others may read is refused, not used).

Passwords never appear on a command line or in a repr.
"""
from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from services.shared.config import Settings

BROKER = "broker"  # the broker's own principal: super user, inter-broker and controller traffic
ADMIN = "admin"  # topic, user and ACL administration (`reformspor kafka topics`, `tokens`)
SERVICES = ("ingest", "budsjett", "milepael")
SCRAM_MECHANISM = "SCRAM-SHA-512"
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
PROTOCOLS = ("PLAINTEXT", *SASL_PROTOCOLS)


class KafkaCredentialError(RuntimeError):
    """A client has no usable credential; the message says where one was looked for."""


@dataclass(frozen=True)
class KafkaCredential:
    username: str
    password: str = field(repr=False)


def ministry_principal(code: str) -> str:
    """The Kafka user name of a publishing ministry (one per ministry)."""
    return f"ministry-{code.strip().upper()}"


def generate_credential(username: str) -> KafkaCredential:
    # URL-safe characters only: SCRAM user names and passwords need no escaping then.
    return KafkaCredential(username, secrets.token_urlsafe(32))


def secrets_dir(settings: Settings) -> Path:
    return Path(settings.kafka_secrets_dir) if settings.kafka_secrets_dir else default_secrets_dir(settings.home)


def default_secrets_dir(home: Path) -> Path:
    return home / "secrets" / "kafka"


def credential_path(directory: Path, principal: str) -> Path:
    return directory / f"{principal}.properties"


def write_private_file(path: Path, text: str) -> Path:
    """Write a file only its owner can read (0600), atomically; its directory is 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)
    return path


def read_private_file(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KafkaCredentialError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                                   f"run `chmod 600 {path}`")
    return path.read_text(encoding="utf-8")


def write_credential(directory: Path, credential: KafkaCredential) -> Path:
    text = f"sasl.username={credential.username}\nsasl.password={credential.password}\n"
    return write_private_file(credential_path(directory, credential.username), text)


def read_credential(path: Path) -> KafkaCredential:
    values = parse_properties(read_private_file(path))
    if not values.get("sasl.username") or not values.get("sasl.password"):
        raise KafkaCredentialError(f"{path} lacks sasl.username or sasl.password")
    return KafkaCredential(values["sasl.username"], values["sasl.password"])


def parse_properties(text: str) -> dict[str, str]:
    """key=value lines (the format of kcat -F and Kafka's .properties); # comments skipped."""
    pairs = (line.split("=", 1) for line in text.splitlines()
             if "=" in line and not line.lstrip().startswith(("#", "!")))
    return {key.strip(): value.strip() for key, value in pairs}


def load_credential(settings: Settings, principal: str) -> KafkaCredential:
    """This process's credential for `principal` (see the module docstring for the order)."""
    if settings.kafka_username:
        return KafkaCredential(settings.kafka_username, _password_from_settings(settings))
    path = credential_path(secrets_dir(settings), principal)
    if path.exists():
        return read_credential(path)
    raise KafkaCredentialError(
        f"no Kafka credential for {principal!r}: set REFORMSPOR_KAFKA_USERNAME and REFORMSPOR_KAFKA_PASSWORD_FILE "
        f"(or REFORMSPOR_KAFKA_PASSWORD), or create {path} (mode 0600; `reformspor kafka start` does for the local stack)")


def _password_from_settings(settings: Settings) -> str:
    if settings.kafka_password:
        return settings.kafka_password
    if settings.kafka_password_file:
        password = read_private_file(Path(settings.kafka_password_file)).strip()
        if password:
            return password
    raise KafkaCredentialError("REFORMSPOR_KAFKA_USERNAME is set but neither REFORMSPOR_KAFKA_PASSWORD "
                               "nor a non-empty REFORMSPOR_KAFKA_PASSWORD_FILE is")


def _protocol(settings: Settings) -> str:
    protocol = settings.kafka_security_protocol.strip().upper()
    if protocol not in PROTOCOLS:
        raise KafkaCredentialError(f"REFORMSPOR_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}, "
                                   f"not {settings.kafka_security_protocol!r}")
    return protocol


def client_config(settings: Settings, principal: str) -> dict[str, str]:
    """librdkafka connection settings for `principal` (confluent-kafka, Quix Streams, kcat).

    Quix: `ConnectionConfig.from_librdkafka_dict(client_config(settings, "budsjett"))`.
    """
    protocol = _protocol(settings)
    credential = load_credential(settings, principal) if protocol in SASL_PROTOCOLS else None
    return connection_config(settings, credential)


def connection_config(settings: Settings, credential: KafkaCredential | None) -> dict[str, str]:
    """librdkafka settings for a given credential (None: an unauthenticated PLAINTEXT broker)."""
    protocol = _protocol(settings)
    config = {"bootstrap.servers": settings.kafka_bootstrap, "security.protocol": protocol}
    if protocol in SASL_PROTOCOLS:
        if credential is None:
            raise KafkaCredentialError(f"{protocol} needs a credential")
        config |= {"sasl.mechanisms": settings.kafka_sasl_mechanism,
                   "sasl.username": credential.username, "sasl.password": credential.password}
    if protocol == "SASL_SSL" and settings.kafka_ca_file:
        config["ssl.ca.location"] = settings.kafka_ca_file
    return config


def kafka_python_options(settings: Settings, principal: str) -> dict[str, object]:
    """The same settings as keyword arguments for kafka-python's clients (admin, producer, consumer)."""
    config = client_config(settings, principal)
    options: dict[str, object] = {"bootstrap_servers": config["bootstrap.servers"],
                                  "security_protocol": config["security.protocol"]}
    if "sasl.username" in config:
        options |= {"sasl_mechanism": config["sasl.mechanisms"],
                    "sasl_plain_username": config["sasl.username"],
                    "sasl_plain_password": config["sasl.password"]}
    if config["security.protocol"] == "SASL_SSL":
        options["ssl_check_hostname"] = True
        if "ssl.ca.location" in config:
            options["ssl_cafile"] = config["ssl.ca.location"]
    return options


def client_properties(config: dict[str, str]) -> str:
    """key=value lines that `kcat -F FILE` and librdkafka accept."""
    return "".join(f"{key}={value}\n" for key, value in config.items())


def consumer_group(settings: Settings, service: str) -> str:
    """A service's consumer group (the ACL matrix grants GROUP READ on this prefix)."""
    return f"{settings.topic_prefix}{service}"


def transactional_id(settings: Settings, service: str, instance: str = "") -> str:
    """A transactional.id the ACLs allow for `service`; one per worker (Quix's default is a bare uuid)."""
    return f"{consumer_group(settings, service)}-{instance or secrets.token_hex(8)}"
