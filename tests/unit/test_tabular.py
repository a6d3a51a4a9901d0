"""The one tabular reader: what Excel and people put in CSV and xlsx files."""
from __future__ import annotations

from decimal import Decimal

import pytest

from services.shared.tabular import (TabularError, csv_rows, normalize_decimal, read_table, to_table, write_csv,
                                     write_xlsx)


@pytest.mark.parametrize("text, expected", [
    ("1 250 000,50", "1250000.50"), ("1\u00a0250\u00a0000,50", "1250000.50"), ("-1\u202f000,5", "-1000.5"),
    ("\u2212300,25", "-300.25"), ("12,5", "12.5"), ("1250000.50", "1250000.50"), ("840", "840"),
    ("1,250,000.00", "1,250,000.00"), ("BFD-K 17", "BFD-K 17"), ("12 34", "12 34"),
])
def test_norwegian_numbers_become_plain_decimals_and_the_rest_is_left_alone(text, expected):
    assert normalize_decimal(text) == expected


def test_rows_are_numbered_as_the_spreadsheet_shows_them():
    rows = csv_rows('id;note\r\n\r\na;"two\r\nlines"\r\nb;x;;\r\nc;x;extra\r\n')
    table = to_table(rows, "t.csv")
    assert [(r.number, r.values["note"]) for r in table.records] == [(3, "two\r\nlines"), (4, "x")]
    assert [(p.number, "header (row 1) has 2 columns" in p.reason) for p in table.problems] == [(5, True)]


def test_a_separator_is_taken_from_the_header_line():
    assert to_table(csv_rows("a,b\n1;2,3\n"), "x").records[0].values == {"a": "1;2", "b": "3"}
    assert to_table(csv_rows("a\tb\n1,5\t2\n"), "x").records[0].values == {"a": "1,5", "b": "2"}


def test_windows_1252_and_a_bom(tmp_path):
    (tmp_path / "a.csv").write_bytes("navn;beløp\r\nSærskilt;1 000,00\r\n".encode("cp1252"))
    (tmp_path / "b.csv").write_bytes("navn;beløp\r\nSærskilt;1 000,00\r\n".encode("utf-8-sig"))
    for name in ("a.csv", "b.csv"):
        assert read_table(tmp_path / name).records[0].values == {"navn": "Særskilt", "beløp": "1 000,00"}


def test_a_workbook_under_a_csv_name_is_read_as_a_workbook_unless_csv_is_forced(tmp_path):
    path = tmp_path / "really.csv"
    write_xlsx(("id", "beløp"), [("a", Decimal("1250000.50"))], path, title="data")
    assert read_table(path).records[0].values == {"id": "a", "beløp": "1250000.5"}
    with pytest.raises(TabularError, match="is an xlsx workbook, not CSV"):
        read_table(path, fmt="csv")


def test_written_tables_read_back(tmp_path):
    columns, rows = ("Linje", "Bevilget"), [("0-24", Decimal("-1250000.05")), ("ung-1", None)]
    with open(tmp_path / "t.csv", "w", encoding="utf-8-sig", newline="") as stream:
        write_csv(columns, rows, stream)
    assert (tmp_path / "t.csv").read_bytes().startswith(b"\xef\xbb\xbfLinje;Bevilget\r\n0-24;-1250000,05\r\n")
    assert [r.values for r in read_table(tmp_path / "t.csv").records] == [
        {"Linje": "0-24", "Bevilget": "-1250000,05"}, {"Linje": "ung-1", "Bevilget": ""}]
