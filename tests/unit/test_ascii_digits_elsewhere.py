"""Outside the contract, too, a number is read from ASCII digits only (issue 16)."""
import re

from services.ingest.openapi import openapi_document
from services.ingest.publishfile import row_to_event


def test_csv_integer_cells_in_other_scripts_digits_stay_text_for_the_server_to_refuse():
    row = {"id": "e-1", "ministry": "BFD", "kind": "bevilget", "data.kap": "\u0668\u0664\u0660", "data.post": "70"}
    data = row_to_event(row)["data"]
    assert data == {"kap": "\u0668\u0664\u0660", "post": 70}


def test_openapi_money_pattern_means_ascii_digits_for_every_regex_engine():
    """`\\d` is ASCII in JSON Schema's ECMA regex but Unicode in Python's, which schema-driven fuzzers use."""
    text = repr(openapi_document())
    money_patterns = re.findall(r"'pattern': '([^']*)'", text)
    assert money_patterns and not any("\\\\d" in pattern for pattern in money_patterns)
