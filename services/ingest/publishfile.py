"""Read events for `reformspor publish FILE`: NDJSON, JSON (object or array), CSV or xlsx.

`read_events_file` reads the file; everything else is pure. CSV and xlsx go
through `services.shared.tabular`, the reader `catalogue import` uses too, so
a CSV as Norwegian Excel saves it (`;`, decimal comma, BOM, CRLF, Windows-1252)
works. Rows are numbered as the spreadsheet shows them (header = row 1).

Columns (one event per row; empty cells are left out):

- `id` — the event id (idempotency key), required.
- `ministry` (short code, e.g. BFD) or `source` (urn:no:dep:BFD).
- `kind` (e.g. bevilget) or `type` (no.reformspor.budsjett.bevilget.v1).
- `time` — RFC 3339 with time zone, e.g. 2026-03-01T10:00:00Z.
- `data.<field>` — the data fields; dots nest (`data.from.ministry`).
  Cells of kap, post, fiscal_year, weight, warning, critical become integers;
  money (`*_nok`) may be written `1250000.00` or `1 250 000,00` and is sent as
  the decimal text `1250000.00`; every other cell stays text.

Example:

    id,ministry,kind,time,data.line_id,data.ministry,data.phase,data.amount_nok,data.kap,data.post,data.fiscal_year
    bfd-1,BFD,bevilget,2026-03-01T10:00:00Z,0-24,BFD,utredning,1250000.00,840,70,2026
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.shared.contract import SOURCE_PREFIX, event_type
from services.shared.jsonio import JsonInputError, loads_strict
from services.shared.tabular import (TabularError, Table, csv_rows, decode_text, is_xlsx, normalize_decimal,
                                     rows_from_bytes, to_table)

FORMATS = ("ndjson", "json", "csv", "xlsx")

INTEGER_FIELDS = {"kap", "post", "fiscal_year", "weight", "warning", "critical"}


@dataclass(frozen=True)
class FileProblem:
    """A record that could not even be read (reported as rejected, never sent)."""

    location: str
    reason: str


def detect_format(name: str, text: str) -> str:
    lower = name.lower()
    if lower.endswith((".xlsx", ".xlsm")):
        return "xlsx"
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


@dataclass(frozen=True)
class EventsFile:
    """What a file held: the events to send, where each came from, and what could not be read."""

    events: list[Any]
    locations: list[str]  # per event, as the user finds it: "row 7" (CSV/xlsx), "line 3" (NDJSON), "event #2"
    problems: list[FileProblem]


def read_events(name: str, text: str, fmt: str | None = None) -> EventsFile:
    fmt = fmt or detect_format(name, text)
    if fmt == "ndjson":
        return read_ndjson(text)
    if fmt == "json":
        return read_json(text)
    if fmt == "csv":
        return read_csv(text)
    raise TabularError(f"{name}: format {fmt} needs a file, not text")


def read_events_file(path: str, fmt: str | None = None) -> EventsFile:
    """Read a file ('-' = stdin); a file that is not what it claims to be raises TabularError (one line)."""
    if path == "-":
        return read_events("stdin", decode_text(sys.stdin.buffer.read(), "stdin"), fmt)
    file = Path(path)
    data = file.read_bytes()  # a missing file or a directory: the CLI's handler reports the OSError
    tabular_name = file.suffix.lower() in (".csv", ".xlsx", ".xlsm")
    if fmt in ("xlsx", "csv") or (fmt is None and (is_xlsx(data) or tabular_name)):
        return events_from_table(to_table(rows_from_bytes(data, file, fmt), path))
    return read_events(path, decode_text(data, file.name), fmt)


def read_ndjson(text: str) -> EventsFile:
    events, locations, problems = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(loads_strict(line))
            locations.append(f"line {number}")
        except JsonInputError as error:
            problems.append(FileProblem(f"line {number}", str(error)))
    return EventsFile(events, locations, problems)


def read_json(text: str) -> EventsFile:
    if not text.strip():
        return EventsFile([], [], [])
    try:
        document = loads_strict(text, max_bytes=max(len(text), 1) * 4)
    except JsonInputError as error:
        return EventsFile([], [], [FileProblem("file", str(error))])
    events = document if isinstance(document, list) else [document]
    return EventsFile(events, [f"event #{i}" for i in range(len(events))], [])


def _cell(name: str, value: str) -> Any:
    if name in INTEGER_FIELDS:
        number = normalize_decimal(value).strip()
        return int(number) if re.fullmatch(r"-?[0-9]{1,12}", number) else value
    if name.endswith("_nok"):
        return normalize_decimal(value).strip()
    return value


def row_to_event(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row → a CloudEvents envelope (see the module docstring for the columns)."""
    event: dict[str, Any] = {"specversion": "1.0"}
    data: dict[str, Any] = {}
    for column, value in row.items():
        if column is None or value is None or not value.strip():
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


def read_csv(text: str) -> EventsFile:
    return events_from_table(to_table(csv_rows(text), "CSV"))


def events_from_table(table: Table) -> EventsFile:
    if not table.columns:
        return EventsFile([], [], [])
    if "id" not in table.columns:
        raise TabularError(f"row {table.header_row}: the header has no 'id' column "
                           f"(found: {', '.join(c for c in table.columns if c)[:200]})")
    return EventsFile([row_to_event(record.values) for record in table.records],
                      [f"row {record.number}" for record in table.records],
                      [FileProblem(f"row {p.number}", p.reason) for p in table.problems])
