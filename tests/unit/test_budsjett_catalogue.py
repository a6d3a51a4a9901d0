"""The Gul bok catalogue: parsing the real xlsx and a CSV, and the rules a finance officer applies."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.budsjett.catalogue import (
    Catalogue,
    FiscalYearError,
    PostRejectionKind,
    chapter_side,
    check_post,
    fiscal_year_from_name,
    import_catalogue,
    is_kan_overfores,
    is_overslagsbevilgning,
    parse_rows,
    parse_usable_under,
    post_group,
    read_rows,
    resolve_fiscal_year,
)
from services.shared.tabular import Record

GUL_BOK = Path("/work/shared/data/gul_bok_2024_datagrunnlag.xlsx")


@pytest.fixture(scope="module")
def gul_bok_items():
    if not GUL_BOK.exists():
        pytest.skip("Gul bok 2024 data file not present")
    return import_catalogue(GUL_BOK)  # the year comes from the file name


def test_real_gul_bok_maps_items_to_ministries(gul_bok_items):
    catalogue = Catalogue(gul_bok_items.items)
    assert len(catalogue) > 1500
    item = catalogue.get(2024, 840, 70)  # Tiltak mot vold og overgrep: tilskudd
    assert item.ministry == "BFD" and item.amount_ore == 144720000 * 100
    assert item.usable_under == frozenset({(840, 21), (840, 61), (858, 1)})
    assert catalogue.get(2024, 228, 70).overslagsbevilgning  # Private grunnskoler
    assert catalogue.get(2024, 115, 21).kan_overfores
    assert "belongs to BFD, not KD" in catalogue.problems(2024, 840, 70, "KD")[0]
    assert "does not exist" in catalogue.problems(2024, 840, 98, "BFD")[0]


def test_gul_bok_2024_import_takes_the_year_from_the_name_and_places_2024_ministries(gul_bok_items):
    assert gul_bok_items.fiscal_year == 2024 and len(gul_bok_items.items) == 1567 and not gul_bok_items.skipped
    mapping = gul_bok_items.ministries
    assert mapping.placed == {1: "UD", 2: "KD", 3: "KUD", 4: "JD", 5: "KDD", 6: "AID", 7: "HOD", 8: "BFD", 9: "NFD",
                              11: "LMD", 13: "SD", 14: "KLD", 16: "FIN", 17: "FD",
                              18: "ED"}  # printed as "Olje- og energidepartementet", ED's former name in 2024
    assert mapping.not_ministries == {23: "Ymse"} and mapping.unplaced == ()
    assert mapping.report_lines() == ["fdep_nr 23 (Ymse) is not a ministry: its items are kept, "
                                      "but no ministry may book them"]
    catalogue = Catalogue(gul_bok_items.items)
    assert catalogue.get(2024, 2309, 1).ministry is None  # Tilfeldige utgifter, under Ymse
    assert "belongs to fdep_nr 23, no ministry, not FIN" in catalogue.problems(2024, 2309, 1, "FIN")[0]


def test_a_year_without_its_own_catalogue_is_reported_never_checked_against_another(gul_bok_items):
    catalogue = Catalogue(gul_bok_items.items)
    assert catalogue.get(2026, 840, 70) is None and catalogue.get(2023, 840, 70) is None
    rejection = check_post(catalogue, 2026, "KD", 840, 70)  # BFD's in 2024; 2026 is not checked against that
    assert rejection.kind is PostRejectionKind.NO_CATALOGUE_FOR_YEAR and not rejection.refuses
    assert rejection.reason == "no budget catalogue for 2026 (loaded: 2024): kap/post for 2026 are not checked"
    assert catalogue.problems(2026, 840, 98, "BFD") == []  # not "does not exist in 2024": unchecked
    assert check_post(catalogue, 2024, "BFD", 840, 70) is None
    assert check_post(Catalogue(), 2024, "BFD", 840, 70).kind is PostRejectionKind.NO_CATALOGUE_FOR_YEAR


@pytest.mark.parametrize("name, year", [
    ("gul_bok_2024_datagrunnlag.xlsx", 2024),
    ("2026_gulbok_datagrunnlag.xlsx", 2026),
    ("/tmp/x/Gul bok 2025 datagrunnlag v2.csv", 2025),
])
def test_fiscal_year_is_taken_from_an_unambiguous_file_name(name, year):
    assert fiscal_year_from_name(name) == year
    assert resolve_fiscal_year(name, None) == year


@pytest.mark.parametrize("name, reason", [
    ("20241002_gul_bok_datagrunnlag.xlsx", "20241002 looks like a publication date"),
    ("gul_bok_20241002.xlsx", "20241002 looks like a publication date"),
    ("gul_bok_datagrunnlag.xlsx", "names no fiscal year"),
    ("gul_bok_2024_vs_2025.csv", "names the years 2024, 2025"),
])
def test_an_ambiguous_file_name_needs_year_and_is_never_defaulted(name, reason):
    with pytest.raises(FiscalYearError, match=reason) as caught:
        resolve_fiscal_year(name, None)
    assert "--year" in str(caught.value) and "\n" not in str(caught.value)


def test_given_year_decides_for_a_dated_name_but_may_not_contradict_the_name():
    assert resolve_fiscal_year("20241002_gul_bok_datagrunnlag.xlsx", 2025) == 2025
    assert resolve_fiscal_year("gul_bok_2024_datagrunnlag.xlsx", 2024) == 2024
    with pytest.raises(FiscalYearError, match="names 2024 but --year says 2025"):
        resolve_fiscal_year("gul_bok_2024_datagrunnlag.xlsx", 2025)
    with pytest.raises(FiscalYearError, match="outside 2000"):
        resolve_fiscal_year("gul_bok.xlsx", 24)


def test_import_refuses_a_dated_file_without_year_before_reading_it(tmp_path):
    path = tmp_path / "20251006_gul_bok_datagrunnlag.csv"
    path.write_text("fdep_nr;kap_nr;post_nr\n8;840;70\n", encoding="utf-8")
    with pytest.raises(FiscalYearError, match="publication date"):
        import_catalogue(path)
    assert import_catalogue(path, 2026).fiscal_year == 2026


def test_csv_with_leading_spaces_and_a_ministry_number_new_that_year(tmp_path):
    path = tmp_path / "2025_gulbok_datagrunnlag.csv"
    path.write_text(
        "fdep_nr;fdep_navn;kap_nr;post_nr;kap_navn;post_navn;stikkord;beløp\n"
        "15; Digitaliserings- og forvaltningsdepartementet;1540;1; Digitaliseringsdirektoratet; Driftsutgifter;;"
        "400000000\n"
        "15; Digitaliserings- og forvaltningsdepartementet;1540;21;Digitaliseringsdirektoratet;Spesielle;"
        " kan overføres;1000\n"
        "8; Barne- og familiedepartementet;840;70;Tiltak mot vold;Tilskudd; kan overføres;144720000\n"
        "18; Energidepartementet;1800;1;Energidepartementet;Driftsutgifter;;1\n"
        "23; Ymse;2309;1;Tilfeldige utgifter;Driftsutgifter;;7000000000\n"
        "19; Sjødepartementet;1900;1;Sjødepartementet;Driftsutgifter;;1\n", encoding="utf-8")
    result = import_catalogue(path)
    assert result.fiscal_year == 2025 and len(result.items) == 6
    mapping = result.ministries
    assert mapping.placed == {8: "BFD", 15: "DFD", 18: "ED"} and mapping.not_ministries == {23: "Ymse"}
    [unplaced] = mapping.unplaced
    assert (unplaced.fdep_nr, unplaced.names) == (19, ("Sjødepartementet",))
    assert "fdep_nr 19 (Sjødepartementet): no ministry valid in 2025" in mapping.report_lines()[1]
    catalogue = Catalogue(result.items)
    assert catalogue.get(2025, 1540, 1).kap_navn == "Digitaliseringsdirektoratet"
    assert check_post(catalogue, 2025, "DFD", 1540, 1) is None  # the catalogue gives it to DFD: accepted
    assert catalogue.get(2025, 1540, 21).kan_overfores
    other = check_post(catalogue, 2025, "BFD", 1540, 1)
    assert other.kind is PostRejectionKind.ANOTHER_MINISTRYS_POST and other.refuses
    assert "belongs to DFD, not BFD, in the 2025 budget catalogue" in other.reason
    unknown = check_post(catalogue, 2025, "DFD", 1540, 99)
    assert unknown.kind is PostRejectionKind.UNKNOWN_POST and "does not exist in the 2025" in unknown.reason
    assert check_post(catalogue, 2024, "DFD", 1540, 1).kind is PostRejectionKind.NO_CATALOGUE_FOR_YEAR


def test_a_file_without_ministry_names_falls_back_to_the_registrys_numbers(tmp_path):
    rows = [Record(2, {"fdep_nr": "15", "kap_nr": "1540", "post_nr": "1"}),
            Record(3, {"fdep_nr": "15", "kap_nr": "1541", "post_nr": "1"})]
    assert parse_rows(rows, 2025).ministries.placed == {15: "DFD"}
    mapping = parse_rows(rows, 2024).ministries  # DFD had no number of its own in 2024
    assert mapping.placed == {} and "no ministry with this number in 2024" in mapping.unplaced[0].reason


def test_stikkord_flags_are_read_one_way():
    assert is_kan_overfores("kan overføres, kan nyttes under post 21") and is_kan_overfores("Kan  overfores")
    assert not is_kan_overfores("kan nyttes under post 21") and not is_kan_overfores("")
    assert is_overslagsbevilgning("Overslagsbevilgning") and not is_overslagsbevilgning("kan overføres")


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


def test_catalogue_import_command_refuses_to_guess_the_year_in_one_line(tmp_path, capsys):
    """(Publishing once the year is known: tests/integration/test_catalogue_topic.py.)"""
    from services.cli import main as cli_main

    dated = tmp_path / "20251006_gul_bok_datagrunnlag.csv"
    dated.write_text("fdep_nr;fdep_navn;kap_nr;post_nr\n15; Digitaliserings- og forvaltningsdepartementet;1540;1\n",
                     encoding="utf-8")
    assert cli_main(["--home", str(tmp_path), "catalogue", "import", str(dated)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "looks like a publication date" in error and "--year" in error


def test_one_number_with_two_ministries_names_is_not_placed():
    rows = [Record(2, {"fdep_nr": "8", "fdep_navn": "Barne- og familiedepartementet", "kap_nr": "840", "post_nr": "70"}),
            Record(3, {"fdep_nr": "8", "fdep_navn": " Kunnskapsdepartementet", "kap_nr": "226", "post_nr": "21"})]
    result = parse_rows(rows, 2026)
    assert result.ministries.placed == {} and "point to BFD, KD" in result.ministries.unplaced[0].reason
    assert {item.ministry for item in result.items} == {None}
