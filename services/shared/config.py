"""Configuration: one place, read from the environment, with sensible local defaults.

Every service and command takes its settings from `Settings.from_env()`; the
CLI's flags only override these. Variables are named REFORMSPOR_<FIELD>.
pydantic-settings reads and validates them (it replaced a hand-written loop
that let `REFORMSPOR_INGEST_PORT=abc` end in a ValueError traceback): a bad
value is a `SettingsError`, one line naming the variable and what it expects.
"""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Mapping

from pydantic import AfterValidator, Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from services.shared.usererror import UserError

ENV_PREFIX = "REFORMSPOR_"
Port = Annotated[int, Field(ge=1, le=65535)]


def _service_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if value and (parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
                  or any(c.isspace() for c in value)):
        raise ValueError("expected http(s)://host[:port][/path] with no query, e.g. https://budsjett.example.no")
    return value


# Where a service answers when it is not this host's loopback port, or empty.
ServiceUrl = Annotated[str, AfterValidator(_service_url)]


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """The stack's home, one per user whatever the current folder: $REFORMSPOR_HOME, else the XDG data dir.

    Tokens, the read models, logs and pid files live there, so `reformspor
    tokens create` or `down` run from any folder reach the same stack.
    """
    environ = os.environ if environ is None else environ
    if environ.get("REFORMSPOR_HOME"):
        return Path(environ["REFORMSPOR_HOME"]).expanduser().resolve()
    xdg = environ.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return (base / "reformspor").resolve()


@dataclass(frozen=True)
class Topics:
    """Kafka topic names. All share one prefix so several stacks can share a broker."""

    prefix: str = "reformspor."

    @property
    def budget(self) -> str:  # validated budget events, key line_id
        return f"{self.prefix}budsjett.events"

    @property
    def reform(self) -> str:  # validated reform events, key reform_id
        return f"{self.prefix}reform.events"

    @property
    def totals(self) -> str:  # budsjett's totals per line, key line_id (compacted)
        return f"{self.prefix}budsjett.totals"

    @property
    def notifications(self) -> str:  # over-commitment and overspending flags, key line_id
        return f"{self.prefix}budsjett.varsler"

    @property
    def justering(self) -> str:  # milepael's adjustment events, key reform_id
        return f"{self.prefix}reform.justering"

    @property
    def milepael_ticks(self) -> str:  # milepael's internal re-evaluation ticks, key reform_id (co-partitioned)
        return f"{self.prefix}milepael.ticks"

    @property
    def dead_letter(self) -> str:  # rejected input with the reason in headers
        return f"{self.prefix}deadletter"

    @property
    def catalogue(self) -> str:  # each fiscal year's budget catalogue (Gul bok), key fiscal year (compacted)
        return f"{self.prefix}catalogue"

    @property
    def inbound_prefix(self) -> str:  # every ministry's own inbound topic starts with this
        return f"{self.prefix}inbound."

    def inbound_for(self, ministry: str) -> str:
        """The ministry's own inbound topic: only its Kafka principal may write it."""
        return f"{self.inbound_prefix}{ministry.strip().upper()}"

    def ministry_of_inbound(self, topic: str) -> str | None:
        """The ministry whose inbound topic this is (None for any other topic)."""
        if not topic.startswith(self.inbound_prefix):
            return None
        return topic[len(self.inbound_prefix):] or None

    def all(self) -> list[str]:
        return [self.budget, self.reform, self.totals, self.notifications, self.justering,
                self.milepael_ticks, self.dead_letter, self.catalogue]

    def compacted(self) -> set[str]:
        return {self.totals, self.catalogue}

    def short_lived(self) -> set[str]:
        return {self.milepael_ticks}


class SettingsError(UserError):
    """A REFORMSPOR_* variable (or an override) that does not fit its setting: one line, exit code 2."""


class Settings(BaseSettings):
    """Immutable; derive a variant with `settings.model_copy(update={...})`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "reformspor."
    partitions: int = Field(4, ge=1)
    home: Path = Field(default_factory=default_home)
    ingest_port: Port = 8180
    budsjett_port: Port = 8181
    milepael_port: Port = 8182
    # Where commands (status, export, reformer, publish) and ingest's event look-up reach each service;
    # empty: http://127.0.0.1:<its port> on this host.
    ingest_url: ServiceUrl = ""
    budsjett_url: ServiceUrl = ""
    milepael_url: ServiceUrl = ""
    # Loopback by default; a container or a host behind a proxy sets 0.0.0.0.
    web_bind: str = "127.0.0.1"
    # Each service owns its read model: no database is shared between services.
    ingest_db_url: str = ""
    budsjett_db_url: str = ""
    milepael_db_url: str = ""
    log_level: str = "warn"
    # Kafka security (services/shared/kafka_security.py builds every client's config from these).
    # PLAINTEXT only for a broker without authentication; SASL_SSL wherever traffic leaves the host.
    kafka_security_protocol: str = "SASL_PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_ca_file: str = ""  # PEM CA that signed the broker's certificate (SASL_SSL); empty: system store
    # Production: this process's own principal, from the environment (or a 0600 file).
    kafka_username: str = ""
    kafka_password: str = Field("", repr=False)
    kafka_password_file: str = ""
    # Local stack: one 0600 file per principal here; empty means <home>/secrets/kafka.
    kafka_secrets_dir: str = ""
    # The ACL matrix (a table in deploy/kafka/); empty means the repository's deploy/kafka/acls.csv.
    kafka_acl_file: str = ""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   **other_sources: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource]:
        # `Settings(...)` is exactly its arguments and the defaults; the environment is read by from_env alone.
        return (init_settings,)

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def db_url(self, service: str) -> str:
        configured = getattr(self, f"{service}_db_url")
        return configured or f"sqlite:///{self.home / f'{service}.db'}"

    def port(self, service: str) -> int:
        return getattr(self, f"{service}_port")

    def service_url(self, service: str) -> str:
        configured = getattr(self, f"{service}_url")
        return configured.rstrip("/") if configured else f"http://127.0.0.1:{self.port(service)}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """REFORMSPOR_* from `environ` (default: this process's environment); overrides that are not None win."""
        source = EnvSettingsSource(cls, case_sensitive=False)
        if environ is not None:  # names lower-cased, as the source keeps the process's environment
            source.env_vars = {name.lower(): value for name, value in environ.items()}
        from_environment = source()
        given = {name: value for name, value in overrides.items() if value is not None}
        values = {**from_environment, "home": default_home(environ), **given}
        try:
            return cls(**values)
        except ValidationError as error:
            raise SettingsError(describe_invalid(error, set(from_environment) - set(given))) from None

    def to_env(self) -> dict[str, str]:
        """The environment that makes a child process see these same settings."""
        return {f"{ENV_PREFIX}{name.upper()}": str(getattr(self, name)) for name in type(self).model_fields}


def describe_invalid(error: ValidationError, from_environment: set[str]) -> str:
    """The first bad setting as one line: where it came from, what it was, what is expected."""
    problem = error.errors(include_url=False)[0]
    name = str(problem["loc"][0]) if problem["loc"] else ""
    where = f"{ENV_PREFIX}{name.upper()}" if name in from_environment else name or "settings"
    message = problem["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own words
    expected = message[0].lower() + message[1:]
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}={problem.get('input')!r} is not valid: {expected}{more}"
