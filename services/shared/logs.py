"""One log format for every service: a JSON object per line on stderr, no terminal codes.

Each line has `time` (UTC, RFC 3339 with milliseconds), `level`, `service`, `logger` and
`message`, plus the context a record carries (`extra={"event_id": ..., "reason": ...}`, see
CONTEXT_FIELDS), and `exception` (the traceback as one string) when there is one. A log
shipper (journald, Loki, Vector) reads it as is; `jq` reads it on a terminal.

Why JSON lines, not logfmt: a traceback, a reason with quotes or Norwegian letters fits in a
JSON string with no quoting rules of our own, and every log tool parses it.

Third-party loggers go through the same handler: the root logger (kafka-python, aiohttp,
SQLAlchemy) and the `quixstreams` logger, which is also the logger librdkafka's own log lines
are given to (quixstreams passes its `quixstreams.kafka.*` loggers as librdkafka's `logger`).
Quix adds its own plain-text handler to `quixstreams` only when that logger has none
(`quixstreams.logging.configure_logging`), so ours, set first, stays the only one; set
later, ours replaces Quix's.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import TextIO

# Context a record may carry (logger.info(..., extra={...})); anything else is left out so a
# line's keys stay a small, known set a log query can rely on.
CONTEXT_FIELDS = ("event_id", "line_id", "reform_id", "stage_id", "state", "reason", "key", "correlation_id",
                  "topic", "partition", "offset")
QUIX_LOGGER = "quixstreams"

# ANSI/VT escape sequences (CSI "ESC [ … letter", OSC "ESC ] … BEL|ST", two-character ESC x):
# a library's colour codes become nothing rather than an escaped \u001b in the text.
_ANSI_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
# What json.dumps(ensure_ascii=False) leaves raw but a terminal or a line splitter acts on:
# DEL and the C1 controls (0x9b is an 8-bit CSI), LINE and PARAGRAPH SEPARATOR.
_RAW_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")


def level_from_setting(log_level: str) -> int:
    """REFORMSPOR_LOG_LEVEL ("warn", "info", "DEBUG" …) as a logging level; unknown text is WARNING."""
    name = {"warn": "WARNING"}.get(log_level.lower(), log_level.upper())
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.WARNING


def without_escape_codes(text: str) -> str:
    return _ANSI_SEQUENCE.sub("", text)


def rfc3339_utc(seconds: float) -> str:
    """Unix time as RFC 3339 in UTC with milliseconds: 2026-03-01T10:00:00.123Z."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLineFormatter(logging.Formatter):
    """A LogRecord as one JSON object on one line, with no escape codes (see the module doc)."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": rfc3339_utc(record.created),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": without_escape_codes(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = without_escape_codes(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = without_escape_codes(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = without_escape_codes(self.formatStack(record.stack_info))
        # json escapes newlines and C0 controls; the rest of the unsafe set is escaped here.
        line = json.dumps(entry, ensure_ascii=False, default=str)
        return _RAW_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", line)


def setup_logging(service: str, log_level: str, stream: TextIO | None = None) -> logging.Handler:
    """Configure logging for a service process, once, before anything logs: every service's main calls it.

    One handler (JSON lines on stderr) on the root logger and on `quixstreams`, replacing any
    handler already there (as basicConfig(force=True) does); returns it.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter(service))
    level = level_from_setting(log_level)
    for logger in (logging.getLogger(), logging.getLogger(QUIX_LOGGER)):
        for previous in list(logger.handlers):
            logger.removeHandler(previous)
        logger.addHandler(handler)
        logger.setLevel(level)
    # The handler is on `quixstreams` itself (so Quix adds none of its own): no second line via the root.
    logging.getLogger(QUIX_LOGGER).propagate = False
    logging.captureWarnings(True)  # warnings.warn(...) from libraries: a JSON line too, not raw text
    return handler
