"""Plain JSON in and out, with guards against hostile or broken input.

Every event crosses Kafka as plain UTF-8 JSON (no Faust metadata) so that any
client can read and write it. Reading is strict: floats stay literal text
(money must not pass through a float), NaN/Infinity are refused, and size,
depth and number length are bounded so a bad publisher cannot crash or stall
a service. Lone UTF-16 surrogates ("\\ud800" without its pair) are refused:
they are not Unicode characters, cannot be written as UTF-8 and would fail
later, far from the input that caused them.

Every refusal is a `JsonInputError`, a kind of `ContractError`, so a caller
that reads a message catches one type.
"""
from __future__ import annotations

import json
import re
from typing import Any

from services.shared.money import FloatToken
from services.shared.problems import SURROGATE_REASON, ContractError, FieldProblem, printable_key

MAX_DOCUMENT_BYTES = 1_048_576
MAX_NESTING_DEPTH = 32
MAX_NUMBER_DIGITS = 30


# Only a document that might hold a surrogate is walked; these two scans cost about
# a twentieth of json.loads (one alternation of both would cost as much as json.loads).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class JsonInputError(ContractError):
    """The bytes are not a JSON document we accept; the message says why (and where, if known)."""

    def __init__(self, reason: str, path: str = ""):
        super().__init__([FieldProblem(path, reason)])


def _reject_constant(name: str) -> Any:
    raise JsonInputError(f"{name} is not allowed: amounts and values must be finite")


def _parse_int(text: str) -> int:
    if not text.isascii():  # the C scanner only yields ASCII digits; int() would take any script's
        raise JsonInputError(f"number {printable_key(text)} has non-ASCII digits")
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise JsonInputError(f"number with {len(text)} digits is too long (at most {MAX_NUMBER_DIGITS})")
    return int(text)


def _parse_float(text: str) -> FloatToken:
    if not text.isascii():
        raise JsonInputError(f"number {printable_key(text)} has non-ASCII digits")
    if len(text) > MAX_NUMBER_DIGITS + 10:
        raise JsonInputError(f"number {text[:20]}… is too long")
    return FloatToken(text)


def _nesting_depth_exceeds(raw: str, limit: int) -> bool:
    # A linear scan before json.loads, so deep nesting never reaches the
    # recursive parser (which would raise RecursionError or use much stack).
    if raw.count("{") + raw.count("[") <= limit:
        return False  # cannot nest deeper than the brackets it has: skip the scan (the common case)
    depth = 0
    in_string = False
    escaped = False
    for char in raw:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def surrogate_path(document: Any, path: str = "") -> str | None:
    """The dotted path (as the contract names fields: data.stages.0.name) of the first key or
    string holding a lone surrogate ("" for the document itself), or None."""
    if isinstance(document, str):
        return path if _SURROGATE.search(document) else None
    if isinstance(document, dict):
        for key, value in document.items():
            key_path = _join(path, printable_key(key))
            if isinstance(key, str) and _SURROGATE.search(key):
                return key_path
            found = surrogate_path(value, key_path)
            if found is not None:
                return found
    elif isinstance(document, (list, tuple)):
        for index, value in enumerate(document):
            found = surrogate_path(value, _join(path, str(index)))
            if found is not None:
                return found
    return None


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def loads_strict(raw: bytes | str, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse one JSON document under the guards above."""
    if isinstance(raw, bytes):
        if len(raw) > max_bytes:
            raise JsonInputError(f"document is {len(raw)} bytes; the limit is {max_bytes}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise JsonInputError(f"not valid UTF-8 at byte {error.start}") from None
    else:
        text = raw
        if len(text) > max_bytes:
            raise JsonInputError(f"document is {len(text)} characters; the limit is {max_bytes}")
    if _nesting_depth_exceeds(text, MAX_NESTING_DEPTH):
        raise JsonInputError(f"nesting deeper than {MAX_NESTING_DEPTH} levels")
    try:
        document = json.loads(
            text,
            parse_float=_parse_float,
            parse_int=_parse_int,
            parse_constant=_reject_constant,
        )
    except JsonInputError:
        raise
    except json.JSONDecodeError as error:
        raise JsonInputError(f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except (ValueError, RecursionError) as error:
        raise JsonInputError(f"invalid JSON: {error}") from None
    if _SURROGATE_ESCAPE.search(text) or (not text.isascii() and _SURROGATE.search(text)):
        where = surrogate_path(document)
        if where is not None:
            raise JsonInputError(SURROGATE_REASON, path=where)
    return document


def _utf8(json_text: str) -> bytes:
    # A lone surrogate can only sit inside a JSON string, where "\\udXXX" is its
    # exact escape: so writing a rejected document back (a dead letter, a reply
    # naming its id) never fails on one.
    return json_text.encode("utf-8", errors="backslashreplace")


def dumps_compact(document: Any) -> bytes:
    """Serialize to compact UTF-8 JSON with stable key order (used for hashing too)."""
    return _utf8(json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str))


def dumps_raw(document: Any) -> bytes:
    """JSON that writes a FloatToken back as the literal number it was read as.

    dumps_compact would turn it into a string, hiding the very thing an event
    may be rejected for (a float amount); used for dead letters and for
    re-sending a publisher's file as written.
    """
    def render(value: Any) -> str:
        if isinstance(value, FloatToken):
            return str(value)
        if isinstance(value, dict):
            return "{" + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{render(v)}" for k, v in value.items()) + "}"
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(render(v) for v in value) + "]"
        return json.dumps(value, ensure_ascii=False)

    return _utf8(render(document))
