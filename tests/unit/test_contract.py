"""The shared event contract: every rejection rule, with the reason a publisher sees."""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.samples import sample_event
from services.shared.contract import BUDGET_KINDS, DATA_MODELS, REFORM_KINDS, ContractError, parse_event
from services.shared.jsonio import JsonInputError, loads_strict
from services.shared.money import MAX_ABS_ORE, MoneyError, format_ore, parse_nok_to_ore


def problems_of(document) -> list[tuple[str, str]]:
    with pytest.raises(ContractError) as caught:
        parse_event(document)
    return [(p.path, p.reason) for p in caught.value.problems]


def from_json(text: str):
    """Decode as ingest does (strict reader: floats kept as literal text)."""
    return loads_strict(text)


@pytest.mark.parametrize("kind", sorted(DATA_MODELS))
def test_every_kind_has_a_valid_sample_that_round_trips(kind):
    event = parse_event(sample_event(kind))
    again = parse_event(from_json(json.dumps(event.to_wire())))
    assert again.to_wire() == event.to_wire()
    assert again.content_hash == event.content_hash
    assert event.key == (event.data.line_id if kind in BUDGET_KINDS else event.data.reform_id)


def test_money_is_integer_ore_inside():
    event = parse_event(sample_event("bevilget", amount_nok="1250000.05"))
    assert event.data.amount_ore == 125_000_005
    assert event.to_wire()["data"]["amount_nok"] == "1250000.05"


def test_float_amount_rejected_with_reason():
    document = from_json(json.dumps(sample_event()).replace('"1250000.00"', "1250000.5"))
    [(path, reason)] = problems_of(document)
    assert path == "data.amount_nok" and "float" in reason


def test_python_float_amount_rejected():
    [(path, reason)] = problems_of(sample_event(amount_nok=12.5))
    assert path == "data.amount_nok" and "float" in reason


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_json_literals_rejected_by_the_reader(text):
    with pytest.raises(JsonInputError, match="not allowed"):
        from_json(json.dumps(sample_event()).replace('"1250000.00"', text))


@pytest.mark.parametrize("text", ["NaN", "nan", "inf", "Infinity", "-inf"])
def test_nan_and_infinity_strings_rejected(text):
    [(path, reason)] = problems_of(sample_event(amount_nok=text))
    assert path == "data.amount_nok" and "finite" in reason


def test_three_decimals_rejected():
    [(path, reason)] = problems_of(sample_event(amount_nok="10.005"))
    assert path == "data.amount_nok" and "more than two decimals" in reason


@pytest.mark.parametrize("text", ["1 000,00", "1,000.00", "12.", "abc", "", "--5"])
def test_malformed_amount_strings_rejected(text):
    [(path, reason)] = problems_of(sample_event(amount_nok=text))
    assert path == "data.amount_nok"


def test_boolean_amount_rejected():
    [(path, reason)] = problems_of(sample_event(amount_nok=True))
    assert path == "data.amount_nok" and "boolean" in reason


def test_negative_appropriation_allowed_but_negative_commitment_refused():
    assert parse_event(sample_event("bevilget", amount_nok="-500.00")).data.amount_ore == -50_000
    [(path, _)] = problems_of(sample_event("forpliktet", amount_nok="-5.00"))
    assert path == "data.amount_nok"


def test_largest_real_post_accepted_absurd_amount_refused():
    assert parse_event(sample_event(amount_nok="500000000000.00")).data.amount_ore == 50_000_000_000_000
    [(path, reason)] = problems_of(sample_event(amount_nok=10**14))
    assert path == "data.amount_nok" and "beyond" in reason


def test_huge_number_refused_by_the_reader():
    with pytest.raises(JsonInputError, match="too long"):
        from_json('{"n": ' + "9" * 5000 + "}")


def test_deep_nesting_refused_by_the_reader():
    with pytest.raises(JsonInputError, match="nesting"):
        from_json("[" * 10_000 + "]" * 10_000)


def test_nesting_limit_is_exact_and_brackets_inside_strings_do_not_count():
    from services.shared.jsonio import MAX_NESTING_DEPTH

    assert loads_strict("[" * MAX_NESTING_DEPTH + "]" * MAX_NESTING_DEPTH) is not None
    with pytest.raises(JsonInputError, match="nesting"):
        loads_strict("[" * (MAX_NESTING_DEPTH + 1) + "]" * (MAX_NESTING_DEPTH + 1))
    assert loads_strict('{"note": "' + "[{" * 100 + '"}') == {"note": "[{" * 100}


def test_oversized_document_refused_by_the_reader():
    with pytest.raises(JsonInputError, match="limit"):
        loads_strict(b" " * 2_000_000)


def test_unknown_type_rejected_and_known_types_listed():
    [(path, reason)] = problems_of({**sample_event(), "type": "no.reformspor.budsjett.stjalet.v1"})
    assert path == "type" and "no.reformspor.budsjett.bevilget.v1" in reason


@pytest.mark.parametrize("field", ["id", "source", "type", "time", "data", "specversion"])
def test_missing_envelope_field_rejected(field):
    document = sample_event()
    del document[field]
    paths = [path for path, _ in problems_of(document)]
    assert field in paths


@pytest.mark.parametrize("field", ["line_id", "ministry", "phase", "amount_nok", "kap", "post", "fiscal_year"])
def test_missing_data_field_rejected(field):
    document = sample_event()
    del document["data"][field]
    assert (f"data.{field}", "Field required") in problems_of(document)


def test_every_problem_is_listed_at_once():
    document = sample_event(amount_nok="1.001", phase="planlegging", kap="840")
    document["time"] = "yesterday"
    paths = {path for path, _ in problems_of(document)}
    assert {"time", "data.amount_nok", "data.phase", "data.kap"} <= paths


def test_wrong_ministry_code_in_source_rejected():
    document = {**sample_event(), "source": "urn:no:dep:XYZ"}
    [(path, reason)] = problems_of(document)
    assert path == "source" and "XYZ" in reason


def test_wrong_ministry_code_in_data_rejected():
    paths = problems_of(sample_event(ministry="XYZ"))
    assert any(path == "data.ministry" and "unknown ministry" in reason for path, reason in paths)


def test_source_without_prefix_rejected():
    [(path, _)] = problems_of({**sample_event(), "source": "BFD"})
    assert path == "source"


def test_wrong_owner_rejected():
    """BFD may not speak for KD's money."""
    document = sample_event("bevilget", "BFD")
    document["data"]["ministry"] = "KD"
    [(path, reason)] = problems_of(document)
    assert path == "data" and "KD" in reason and "own money" in reason


def test_wrong_owner_of_milestone_rejected():
    document = sample_event("milepael_fullfort", "BFD")
    document["data"]["ministry"] = "HOD"
    [(path, _)] = problems_of(document)
    assert path == "data"


def test_oversized_strings_rejected():
    paths = problems_of(sample_event("utbetalt", description="x" * 501))
    assert paths[0][0] == "data.description"
    [(path, _)] = problems_of(sample_event(line_id="L" * 65))
    assert path == "data.line_id"
    [(path, _)] = problems_of({**sample_event(), "id": "x" * 129})
    assert path == "id"


def test_identifier_characters_restricted():
    [(path, _)] = problems_of(sample_event(line_id="0 24; DROP TABLE"))
    assert path == "data.line_id"


def test_unknown_fields_rejected():
    assert problems_of({**sample_event(), "extra": 1})[0][1].startswith("unknown envelope fields")
    [(path, _)] = problems_of(sample_event(surprise="x"))
    assert path == "data.surprise"


def test_time_without_zone_rejected():
    [(path, reason)] = problems_of({**sample_event(), "time": "2026-03-01T10:00:00"})
    assert path == "time" and "time zone" in reason


def test_not_an_object_rejected():
    [(path, reason)] = problems_of([sample_event()])
    assert "JSON object" in reason


def test_strict_integers_for_kap_post_year():
    [(path, _)] = problems_of(sample_event(kap="840"))
    assert path == "data.kap"
    [(path, _)] = problems_of(sample_event(fiscal_year=1999))
    assert path == "data.fiscal_year"


def test_omdisponert_that_moves_nothing_rejected():
    document = sample_event("omdisponert")
    document["data"]["to"] = copy.deepcopy(document["data"]["from"])
    [(path, reason)] = problems_of(document)
    assert "nothing would move" in reason


def test_kpi_value_float_is_read_as_exact_decimal():
    document = from_json(json.dumps(sample_event("indikator_malt")).replace('"120"', "120.5"))
    assert parse_event(document).data.value == "120.5"


def test_reform_with_unknown_gate_milestone_rejected():
    document = sample_event("reform_registrert")
    document["data"]["stages"][0]["gate"]["required_milestones"] = ["m9"]
    [(_, reason)] = problems_of(document)
    assert "m9" in reason


@given(st.integers(min_value=-MAX_ABS_ORE, max_value=MAX_ABS_ORE))
def test_money_round_trips_through_text(amount_ore):
    assert parse_nok_to_ore(format_ore(amount_ore)) == amount_ore


@given(st.integers(min_value=-10**13, max_value=10**13), st.integers(min_value=0, max_value=99))
def test_decimal_strings_parse_exactly(kroner, ore):
    sign = "-" if kroner < 0 else ""
    text = f"{sign}{abs(kroner)}.{ore:02d}"
    expected = (abs(kroner) * 100 + ore) * (-1 if kroner < 0 else 1)
    if abs(expected) <= MAX_ABS_ORE:
        assert parse_nok_to_ore(text) == expected


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_no_float_is_ever_money(value):
    with pytest.raises(MoneyError):
        parse_nok_to_ore(value)


@given(st.sampled_from(BUDGET_KINDS + REFORM_KINDS), st.text(min_size=1, max_size=40))
def test_parse_event_never_raises_anything_but_contract_error(kind, junk):
    document = sample_event(kind)
    document["data"] = {key: junk for key in document["data"]}
    try:
        parse_event(document)
    except ContractError as error:
        assert error.problems and all(p.reason for p in error.problems)
