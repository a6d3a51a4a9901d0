"""One reader for the tables people hand us: CSV as Excel saves it, and .xlsx.

Used by `reformspor publish` and `reformspor catalogue import`, so both accept
the same files:

- CSV in UTF-8 (with or without a BOM) or, when it is not UTF-8, Windows-1252
  (what Excel's plain "CSV" save gives on a Norwegian Windows);
- `;`, `,` or tab as separator, taken from the header line (Norwegian Excel
  writes `;` because `,` is its decimal sign); CRLF or LF;
- .xlsx workbooks (a named sheet, else the first one).

Rows carry the number a spreadsheet shows (the first row is 1), so every
message can point at the row the user sees. `normalize_decimal` turns a
Norwegian number (`1 250 000,50`) into the plain decimal text the contract
expects (`1250000.50`).
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Iterable

from services.shared.usererror import UserError

XLSX_MAGIC = b"PK\x03\x04"  # a zip archive: what every .xlsx is
XLSX_SUFFIXES = (".xlsx", ".xlsm")
DELIMITERS = (";", ",", "\t")
# Thousands separators Excel and Norwegian locales put in numbers: space, no-break space, narrow no-break space.
_THOUSANDS = "[ \u00a0\u202f]"
_NORWEGIAN_NUMBER = re.compile(rf"[-\u2212]?\d{{1,3}}(?:{_THOUSANDS}\d{{3}})*(?:,\d+)?|[-\u2212]?\d+(?:,\d+)?")


class TabularError(UserError, ValueError):
    """The file is not a table we can read; the message names the file and what to do."""


@dataclass(frozen=True)
class SheetRow:
    number: int  # as the spreadsheet shows it: the first row is 1
    cells: tuple[str, ...]

    @property
    def blank(self) -> bool:
        return not any(cell.strip() for cell in self.cells)


@dataclass(frozen=True)
class Record:
    """One data row under the header: column name → cell text ("" for an empty cell)."""

    number: int
    values: dict[str, str]


@dataclass(frozen=True)
class RowProblem:
    number: int
    reason: str


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    header_row: int
    records: list[Record]
    problems: list[RowProblem]


def is_xlsx(data: bytes) -> bool:
    return data.startswith(XLSX_MAGIC)


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 (BOM or not), else Windows-1252; a file with NUL bytes is binary, not text."""
    if b"\x00" in data[:8192]:
        raise TabularError(f"{name}: a binary file, not text (save it as CSV or .xlsx)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError as error:
        raise TabularError(f"{name}: neither UTF-8 nor Windows-1252 text (byte {error.start}); "
                           "save it as «CSV UTF-8»") from None


def sniff_delimiter(text: str) -> str:
    """The separator that occurs most often in the first non-empty line (`;` wins a tie: Norwegian Excel)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    return max(DELIMITERS, key=lambda d: (first.count(d), d == ";"))


def csv_rows(text: str) -> list[SheetRow]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text))
    # Every record counts, blank ones too, so numbers match the rows Excel shows.
    return [SheetRow(number, tuple(cells)) for number, cells in enumerate(reader, start=1)]


def cell_text(value: object) -> str:
    """An xlsx cell as the text a CSV export of it would hold (numbers without a spurious .0)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def xlsx_rows(data: bytes, name: str, sheet: str | None = None) -> list[SheetRow]:
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises several types for a broken file
        raise TabularError(f"{name}: not a readable xlsx workbook ({error})") from None
    try:
        worksheet = workbook[sheet] if sheet in workbook.sheetnames else workbook.worksheets[0]
        return [SheetRow(number, tuple(cell_text(v) for v in values))
                for number, values in enumerate(worksheet.iter_rows(min_row=1, values_only=True), start=1)]
    finally:
        workbook.close()


def read_rows(path: Path, fmt: str | None = None, sheet: str | None = None) -> list[SheetRow]:
    """Every row of a CSV or xlsx file. `fmt` ("csv" / "xlsx") overrides what the name and content say."""
    # A missing file or a directory raises OSError: the CLI reports it in one line.
    return rows_from_bytes(path.read_bytes(), path, fmt, sheet)


def rows_from_bytes(data: bytes, path: Path, fmt: str | None = None, sheet: str | None = None) -> list[SheetRow]:
    """The rows of a file already read; `path` gives its name (and, by its suffix, its format when unsure)."""
    workbook = is_xlsx(data)
    if fmt == "csv" and workbook:
        raise TabularError(f"{path}: is an xlsx workbook, not CSV (leave out --format csv)")
    if fmt == "xlsx" or workbook or (fmt is None and path.suffix.lower() in XLSX_SUFFIXES):
        return xlsx_rows(data, path.name, sheet)
    return csv_rows(decode_text(data, path.name))


def _column(cell: str) -> str:
    return re.sub(r"\s+", " ", cell).strip()


def to_table(rows: Iterable[SheetRow], name: str, required_columns: tuple[str, ...] = ()) -> Table:
    """Records under the header: the first row holding every required column (any case), else the first non-blank row."""
    rows = list(rows)
    wanted = {c.lower() for c in required_columns}
    header = next((row for row in rows if not row.blank and wanted <= {_column(c).lower() for c in row.cells}), None)
    if header is None and not wanted:
        return Table((), 0, [], [])  # an empty file: the caller says there was nothing in it
    if header is None:
        raise TabularError(f"{name}: no header row with the columns {', '.join(required_columns)}")
    columns = tuple(_column(c) for c in header.cells)
    records, problems = [], []
    for row in rows:
        if row.number <= header.number or row.blank:
            continue  # blank lines between blocks are common in hand-edited exports
        extra = [c for c in row.cells[len(columns):] if c.strip()]
        if extra:
            problems.append(RowProblem(row.number, f"{len(row.cells)} cells but the header (row {header.number}) "
                                                   f"has {len(columns)} columns"))
            continue
        values = {column: (row.cells[i] if i < len(row.cells) else "") for i, column in enumerate(columns) if column}
        records.append(Record(row.number, values))
    return Table(columns, header.number, records, problems)


def read_table(path: Path, required_columns: tuple[str, ...] = (), fmt: str | None = None,
               sheet: str | None = None) -> Table:
    return to_table(read_rows(path, fmt, sheet), str(path), required_columns)


def normalize_decimal(text: str) -> str:
    """`1 250 000,50` → `1250000.50`; anything that is not a Norwegian-style number comes back unchanged.

    A plain `1250000.50` is already what the contract wants and is left alone,
    so comma CSVs with decimal points and semicolon CSVs with decimal commas both work.
    """
    stripped = text.strip()
    if "," not in stripped and not re.search(_THOUSANDS, stripped) and "\u2212" not in stripped:
        return text
    if not _NORWEGIAN_NUMBER.fullmatch(stripped):
        return text
    return re.sub(_THOUSANDS, "", stripped).replace(",", ".").replace("\u2212", "-")


# --- writing: the same tables back out, for finance staff's spreadsheets -----------------------------------------

Cell = str | int | Decimal | None


def csv_cell(value: Cell) -> str:
    """Decimals with a decimal comma, as Norwegian Excel reads them from a `;` CSV."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f").replace(".", ",")
    return str(value)


def write_csv(columns: tuple[str, ...], rows: Iterable[tuple[Cell, ...]], stream) -> None:
    """`;`-separated with decimal commas, CRLF: what Norwegian Excel opens into columns."""
    writer = csv.writer(stream, delimiter=";", lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([csv_cell(v) for v in row] for row in rows)


def csv_bytes(columns: tuple[str, ...], rows: Iterable[tuple[Cell, ...]]) -> bytes:
    """A CSV file's bytes for Excel: UTF-8 with a BOM, because without one Excel reads the bytes as Windows-1252
    and shows æøå as mojibake; `;` and decimal commas (write_csv) so Norwegian Excel splits the columns and
    takes the amounts as numbers."""
    stream = io.StringIO(newline="")
    write_csv(columns, rows, stream)
    return stream.getvalue().encode("utf-8-sig")


def write_xlsx(columns: tuple[str, ...], rows: Iterable[tuple[Cell, ...]], path: Path, title: str) -> None:
    """A one-sheet workbook; decimals stay exact (written as Decimal) and show with two decimals."""
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = title[:31]  # Excel's limit on sheet names
    sheet.append(list(columns))
    for row in rows:
        sheet.append(list(row))
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, Decimal):
                cell.number_format = "#,##0.00"
    sheet.freeze_panes = "A2"
    workbook.save(path)
