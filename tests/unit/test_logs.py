"""Service logs: one JSON line per record on stderr, no terminal escape codes, Quix and librdkafka included."""
from __future__ import annotations

import importlib
import io
import json
import logging
import re
import socket
import time

import pytest
from prometheus_client import CollectorRegistry
from quixstreams import Application

from services.ingest.app import KafkaSender
from services.shared.config import Settings
from services.shared.logs import QUIX_LOGGER, JsonLineFormatter, level_from_setting, setup_logging
from services.shared.streaming import DeadLetters, Rejection

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def restore_logging():
    """setup_logging replaces handlers on the root and quixstreams loggers: put pytest's back afterwards."""
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate)
             for logger in (logging.getLogger(), logging.getLogger(QUIX_LOGGER))]
    yield
    for logger, handlers, level, propagate in saved:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    logging.captureWarnings(False)


def lines_of(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert "\x1b" not in text and "\x9b" not in text
    return [json.loads(line) for line in text.split("\n") if line]


def record(message: str, *args, level=logging.WARNING, name="reformspor.milepael", exc_info=None, **extra):
    entry = logging.LogRecord(name, level, __file__, 1, message, args, exc_info)
    for key, value in extra.items():
        setattr(entry, key, value)
    return entry


def test_a_record_is_one_parseable_line_without_escape_codes():
    try:
        raise ValueError("bad \x1b[31mred\x1b[0m value\nsecond line")
    except ValueError as error:
        exc_info = (type(error), error, error.__traceback__)
    entry = record("justering %s for %s: \x1b[1;33m%s\x1b[0m\u2028next", "required", "R1/s1", "forsinket \x9b2J",
                   exc_info=exc_info, event_id="e-17", reform_id="R1", reason="prognosert 9\u00a0500\u00a0000,00\u00a0kr")
    line = JsonLineFormatter("milepael").format(entry)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x9b" not in line
    assert len(line.splitlines()) == 1  # also no U+2028, which str.splitlines and some shippers break at
    parsed = json.loads(line)
    assert RFC3339_UTC.fullmatch(parsed["time"])
    assert (parsed["level"], parsed["service"], parsed["logger"]) == ("warning", "milepael", "reformspor.milepael")
    assert parsed["message"] == "justering required for R1/s1: forsinket \x9b2J\u2028next"
    assert (parsed["event_id"], parsed["reform_id"]) == ("e-17", "R1")
    assert parsed["reason"] == "prognosert 9\u00a0500\u00a0000,00\u00a0kr"  # Norwegian text kept readable
    assert "ValueError: bad red value\nsecond line" in parsed["exception"]


@pytest.mark.parametrize("setting, level", [("warn", logging.WARNING), ("info", logging.INFO), ("DEBUG", logging.DEBUG),
                                            ("error", logging.ERROR), ("loud", logging.WARNING)])
def test_log_level_setting(setting, level):
    assert level_from_setting(setting) == level


def test_setup_gives_every_logger_the_json_handler_once(restore_logging):
    stream = io.StringIO()
    setup_logging("budsjett", "info", stream)
    setup_logging("budsjett", "info", stream)  # configured again: still one line per record
    logging.getLogger("kafka.conn").info("connected to %s", "localhost:9092")
    logging.getLogger("reformspor.budsjett").debug("not shown at info")
    logging.getLogger("quixstreams.app").warning("\x1b[33mcoloured\x1b[0m")
    assert [(line["logger"], line["level"], line["message"]) for line in lines_of(stream)] == [
        ("kafka.conn", "info", "connected to localhost:9092"), ("quixstreams.app", "warning", "coloured")]
    assert {line["service"] for line in lines_of(stream)} == {"budsjett"}


def test_quix_application_and_librdkafka_log_through_it(restore_logging, tmp_path):
    """Quix's own logging setup (Application(loglevel=...)) leaves our handler; librdkafka's log lines use it."""
    stream = io.StringIO()
    handler = setup_logging("milepael", "info", stream)
    with socket.socket() as probe:  # a port nothing listens on: librdkafka logs the refused connection
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = Application(broker_address=f"127.0.0.1:{port}", consumer_group="logs-test", loglevel="DEBUG",
                      state_dir=str(tmp_path / "state"))
    assert logging.getLogger(QUIX_LOGGER).handlers == [handler]
    deadline = time.monotonic() + 20
    with app.get_producer() as producer:  # nothing queued: leaving it flushes at once
        while time.monotonic() < deadline and "[rdkafka#producer" not in stream.getvalue():
            producer.poll(0.2)  # librdkafka hands its log lines to the Python logger during poll
    lines = lines_of(stream)
    # librdkafka's own line ("FAIL [rdkafka#producer-1] … Connection refused"), through our formatter
    from_librdkafka = [line for line in lines if line["message"].startswith("FAIL [rdkafka#producer")]
    assert from_librdkafka and from_librdkafka[0]["logger"] == "quixstreams.kafka.producer", stream.getvalue()[-2000:]
    assert "Connection refused" in from_librdkafka[0]["message"] and from_librdkafka[0]["level"] == "error"
    assert all(line["service"] == "milepael" and RFC3339_UTC.fullmatch(line["time"]) for line in lines)


class LoggingConfigured(Exception):
    pass


@pytest.mark.parametrize("module, service", [("services.ingest.app", "ingest"), ("services.budsjett.app", "budsjett"),
                                             ("services.milepael.app", "milepael")])
def test_every_service_main_sets_up_logging_first(monkeypatch, module, service):
    """Before anything can log (topics, Kafka clients, the database): stopped right there, nothing starts."""
    def stop_here(name: str, log_level: str, stream=None):
        raise LoggingConfigured(name, log_level)

    app = importlib.import_module(module)
    monkeypatch.setattr(app, "setup_logging", stop_here)
    with pytest.raises(LoggingConfigured) as caught:
        app.main(Settings(log_level="info"))
    assert caught.value.args == (service, "info")


def test_a_dead_letter_is_one_line_with_its_reason_label_and_key(restore_logging):
    stream = io.StringIO()
    setup_logging("budsjett", "warn", stream)
    dead_letters = DeadLetters("budsjett", "p.deadletter", CollectorRegistry())
    dead_letters.record(b'{"id": "e-9"}', b"0-24", Rejection(["kap 840 post 70 is not in the 2026 catalogue"],
                                                              "unknown_post"))
    [line] = lines_of(stream)
    assert (line["level"], line["reason"], line["key"]) == ("warning", "unknown_post", "0-24")
    assert line["message"] == "dead letter (unknown_post): kap 840 post 70 is not in the 2026 catalogue"


def test_ingest_http_producer_logs_librdkafka_through_it(restore_logging):
    """ingest's own confluent-kafka producer (not Quix's): without a logger, librdkafka wrote '%4|…' raw to stderr."""
    stream = io.StringIO()
    setup_logging("ingest", "info", stream)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = KafkaSender(Settings(kafka_bootstrap=f"127.0.0.1:{port}", kafka_security_protocol="PLAINTEXT"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "[reformspor-ingest-http#producer" not in stream.getvalue():
        sender.producer.poll(0.2)
    sender.producer.flush(0)
    lines = [line for line in lines_of(stream) if "[reformspor-ingest-http#producer" in line["message"]]
    assert lines and lines[0]["logger"] == "reformspor.ingest" and lines[0]["service"] == "ingest", stream.getvalue()


def test_setup_after_quix_configured_its_logger_replaces_quix_handler(restore_logging, tmp_path):
    for handler in list(logging.getLogger(QUIX_LOGGER).handlers):
        logging.getLogger(QUIX_LOGGER).removeHandler(handler)
    Application(broker_address="127.0.0.1:1", consumer_group="logs-test", loglevel="INFO",
                state_dir=str(tmp_path / "state"))  # Quix adds its own plain-text handler to an empty logger
    assert logging.getLogger(QUIX_LOGGER).handlers, "Quix configured nothing: this test proves nothing"
    stream = io.StringIO()
    handler = setup_logging("budsjett", "info", stream)
    assert logging.getLogger(QUIX_LOGGER).handlers == [handler]
    logging.getLogger("quixstreams.app").info("The application started")
    [line] = lines_of(stream)
    assert (line["logger"], line["message"], line["service"]) == ("quixstreams.app", "The application started", "budsjett")
