"""Read events for `reformspor publish FILE`: NDJSON, JSON (object or array) or CSV. Pure, no I/O.

CSV columns (one event per row; empty cells are left out):

- `id` — the event id (idempotency key), required.
- `ministry` (short code, e.g. BFD) or `source` (urn:no:dep:BFD).
- `kind` (e.g. bevilget) or `type` (no.reformspor.budsjett.bevilget.v1).
- `time` — RFC 3339 with time zone, e.g. 2026-03-01T10:00:00Z.
- `data.<field>` — the data fields; dots nest (`data.from.ministry`).
  Cells of kap, post, fiscal_year, weight, warning, critical become integers;
  every other cell stays text (money as "1250000.00", exactly as written).

Example:

    id,ministry,kind,time,data.line_id,data.ministry,data.phase,data.amount_nok,data.kap,data.post,data.fiscal_year
    bfd-1,BFD,bevilget,2026-03-01T10:00:00Z,0-24,BFD,utredning,1250000.00,840,70,2026
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any

from services.shared.contract import SOURCE_PREFIX, event_type
from services.shared.jsonio import JsonInputError, loads_strict

INTEGER_FIELDS = {"kap", "post", "fiscal_year", "weight", "warning", "critical"}


@dataclass(frozen=True)
class FileProblem:
    """A record that could not even be read (reported as rejected, never sent)."""

    location: str
    reason: str


def detect_format(name: str, text: str) -> str:
    lower = name.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".ndjson", ".jsonl")):
        return "ndjson"
    if lower.endswith(".json"):
        return "json"
    stripped = text.lstrip()
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        # One object spanning lines is JSON; one object per line is NDJSON.
        return "ndjson" if all(line.strip().startswith("{") for line in stripped.splitlines() if line.strip()) else "json"
    return "csv"


def read_events(name: str, text: str, fmt: str | None = None) -> tuple[list[Any], list[FileProblem]]:
    fmt = fmt or detect_format(name, text)
    if fmt == "ndjson":
        return read_ndjson(text)
    if fmt == "json":
        return read_json(text)
    if fmt == "csv":
        return read_csv(text)
    raise ValueError(f"unknown format {fmt!r}: use ndjson, json or csv")


def read_ndjson(text: str) -> tuple[list[Any], list[FileProblem]]:
    events, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(loads_strict(line))
        except JsonInputError as error:
            problems.append(FileProblem(f"line {number}", str(error)))
    return events, problems


def read_json(text: str) -> tuple[list[Any], list[FileProblem]]:
    try:
        document = loads_strict(text, max_bytes=max(len(text), 1) * 4)
    except JsonInputError as error:
        return [], [FileProblem("file", str(error))]
    return (document if isinstance(document, list) else [document]), []


def _cell(name: str, value: str) -> Any:
    if name in INTEGER_FIELDS and re.fullmatch(r"-?[0-9]{1,12}", value.strip()):
        return int(value)
    return value


def row_to_event(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row → a CloudEvents envelope (see the module docstring for the columns)."""
    event: dict[str, Any] = {"specversion": "1.0"}
    data: dict[str, Any] = {}
    for column, value in row.items():
        if column is None or value is None or value == "":
            continue
        column = column.strip()
        if column == "ministry":
            event["source"] = f"{SOURCE_PREFIX}{value.strip()}"
        elif column == "kind":
            event["type"] = event_type(value.strip())
        elif column in ("id", "source", "type", "time", "subject"):
            event[column] = value.strip()
        elif column.startswith("data."):
            path = column.removeprefix("data.").split(".")
            target = data
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = _cell(path[-1], value)
        else:
            event[column] = value  # unknown columns reach the server, which names them
    event["data"] = data
    return event


def read_csv(text: str) -> tuple[list[Any], list[FileProblem]]:
    reader = csv.DictReader(io.StringIO(text))
    events = []
    problems = []
    for number, row in enumerate(reader, start=2):
        if None in row:
            problems.append(FileProblem(f"row {number}", "more cells than header columns"))
            continue
        events.append(row_to_event(row))
    return events, problems
