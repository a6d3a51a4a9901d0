"""The Gul bok catalogue: parsing the real xlsx and a CSV, and the rules a finance officer applies."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.budsjett.catalogue import Catalogue, chapter_side, parse_rows, parse_usable_under, post_group, read_rows
from services.budsjett.readmodel import ReadModel

GUL_BOK = Path("/work/shared/data/gul_bok_2024_datagrunnlag.xlsx")


@pytest.fixture(scope="module")
def gul_bok_items():
    if not GUL_BOK.exists():
        pytest.skip("Gul bok 2024 data file not present")
    return parse_rows(read_rows(GUL_BOK), 2024)


def test_real_gul_bok_maps_items_to_ministries(gul_bok_items):
    catalogue = Catalogue(gul_bok_items.items)
    assert len(catalogue) > 1500
    item = catalogue.get(2024, 840, 70)  # Tiltak mot vold og overgrep: tilskudd
    assert item.ministry == "BFD" and item.amount_ore == 144720000 * 100
    assert item.usable_under == frozenset({(840, 21), (840, 61), (858, 1)})
    assert catalogue.get(2024, 228, 70).overslagsbevilgning  # Private grunnskoler
    assert catalogue.get(2024, 115, 21).kan_overfores
    assert catalogue.problems(2026, 840, 70, "BFD") == []  # a later year is checked against 2024
    assert "belongs to BFD, not KD" in catalogue.problems(2024, 840, 70, "KD")[0]
    assert "does not exist" in catalogue.problems(2024, 840, 98, "BFD")[0]


def test_usable_under_references_other_chapters():
    assert parse_usable_under("kan nyttes under kap. 410, post 1 og kap. 411, post 1", 61) == {(410, 1), (411, 1)}
    assert parse_usable_under("kan overføres, kan nyttes under postene 70, 74 og 79", 714) == {
        (714, 70), (714, 74), (714, 79)}
    assert parse_usable_under("kan nyttes under post 70 og kap. 846, post 62", 840) == {(840, 70), (846, 62)}
    assert parse_usable_under("overslagsbevilgning", 228) == frozenset()


def test_post_groups_and_chapter_sides_follow_r101():
    assert [post_group(p) for p in (1, 29, 30, 49, 50, 89, 90, 99)] == [
        "drift", "drift", "nybygg_anlegg", "nybygg_anlegg", "overforinger", "overforinger", "utlan", "utlan"]
    assert chapter_side(2999) == "utgift" and chapter_side(3000) == "inntekt" and chapter_side(5999) == "inntekt"


def test_csv_with_stray_whitespace_and_empty_cells(tmp_path):
    path = tmp_path / "gul_bok.csv"
    path.write_text(
        "fdep_nr;fdep_navn;kap_nr;post_nr;kap_navn;post_navn;stikkord;beløp\n"
        " 8 ;Barne- og familiedepartementet; 840 ; 21 ;Tiltak mot vold;  Spesielle   driftsutgifter ;"
        " kan nyttes under post 70 ;31774000\n"
        "\n"
        ";;;;;;;\n"
        "2;Kunnskapsdepartementet;228;70;Private skoler;Private grunnskoler;overslagsbevilgning;\n"
        "x;bad;row;here;;;;\n", encoding="utf-8")
    result = parse_rows(read_rows(path), 2024)
    second, first = result.items  # sorted by kap, post
    assert (first.kap, first.post, first.ministry, first.post_navn) == (840, 21, "BFD", "Spesielle driftsutgifter")
    assert first.usable_under == {(840, 70)} and first.amount_ore == 3177400000
    assert second.ministry == "KD" and second.overslagsbevilgning and second.amount_ore is None
    assert len(result.skipped) == 1 and "whole numbers" in result.skipped[0]
    assert result.skipped[0].startswith("row 6:")  # the row Excel shows, blank rows counted


def test_csv_as_norwegian_excel_saves_it_in_windows_1252(tmp_path):
    path = tmp_path / "gul_bok.csv"
    path.write_bytes("fdep_nr;kap_nr;post_nr;post_navn;beløp\r\n8;840;21;Særskilte driftsutgifter;31 774 000,00\r\n"
                     .encode("cp1252"))
    [item] = parse_rows(read_rows(path), 2024).items
    assert item.post_navn == "Særskilte driftsutgifter" and item.amount_ore == 3_177_400_000


def test_catalogue_round_trips_through_the_read_model(tmp_path, gul_bok_items):
    model = ReadModel(f"sqlite:///{tmp_path / 'budsjett.db'}")
    assert model.replace_catalogue(2024, gul_bok_items.items) == len(gul_bok_items.items)
    assert model.replace_catalogue(2024, gul_bok_items.items) == len(gul_bok_items.items)  # re-import replaces
    loaded = Catalogue(model.load_catalogue())
    assert len(loaded) == len(gul_bok_items.items)
    assert loaded.get(2024, 840, 70) == Catalogue(gul_bok_items.items).get(2024, 840, 70)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("notes.csv", "just some notes\nnothing tabular\n", "no header row with the columns fdep_nr"),
        ("broken.xlsx", "not a zip file", "not a readable xlsx workbook"),
        ("binary.csv", "fdep_nr;kap_nr;post_nr\n\x00\x01\x02", "a binary file, not text"),
    ],
)
def test_unreadable_catalogue_files_are_refused_with_the_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ValueError, match=reason):
        read_rows(path)
