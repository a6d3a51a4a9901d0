"""The shared event contract: every rejection rule, with the reason a publisher sees."""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.samples import sample_event
from services.shared.contract import BUDGET_KINDS, DATA_MODELS, REFORM_KINDS, ContractError, decode_event, parse_event
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


# --- hostile text: what an independent bad-input run found (issue 16) -------------------

SURROGATE = "\ud800"


def wire(document) -> bytes:
    """The document as a publisher's bytes: non-ASCII and lone surrogates as \\u escapes."""
    return json.dumps(document, ensure_ascii=True).encode("ascii")


def wire_problems(document) -> list[tuple[str, str]]:
    with pytest.raises(ContractError) as caught:
        decode_event(wire(document))
    return [(p.path, p.reason) for p in caught.value.problems]


@pytest.mark.parametrize(
    "kind, field",
    [("korrigert", "line_id"), ("korrigert", "reason"), ("utbetalt", "description"), ("korrigert", "corrects_id")],
)
def test_lone_surrogate_in_a_field_is_refused_naming_the_field(kind, field):
    document = sample_event(kind, **{field: f"x{SURROGATE}"})
    [(path, reason)] = wire_problems(document)
    assert path == f"data.{field}" and "surrogate" in reason
    [(path, reason)] = problems_of(document)  # the same document handed over already decoded
    assert path == f"data.{field}" and ("surrogate" in reason or "printable" in reason)


def test_lone_surrogate_in_the_id_a_key_or_deep_inside_is_refused_by_the_contracts_error():
    in_id = {**sample_event(), "id": f"e-{SURROGATE}"}
    assert [path for path, _ in wire_problems(in_id)] == ["id"]
    assert [path for path, _ in problems_of(in_id)] == ["id"]
    in_key = sample_event(**{f"k{SURROGATE}": 1})
    [(path, reason)] = wire_problems(in_key)
    assert path == "data.k\\ud800" and "surrogate" in reason
    nested = sample_event("reform_registrert")
    nested["data"]["stages"][0]["milestones"][0]["name"] = SURROGATE
    [(path, _)] = wire_problems(nested)
    assert path == "data.stages.0.milestones.0.name"  # as pydantic names it for the decoded document


def test_every_reason_can_itself_be_written_as_utf8():
    """A reason quoting the bad input must not carry the surrogate on into a reply or a log."""
    document = {**sample_event(), f"x{SURROGATE}": 1, "type": f"t{SURROGATE}", "time": f"{SURROGATE}"}
    for path, reason in problems_of(document):
        (path + reason).encode("utf-8")


def test_a_surrogate_pair_is_a_character_and_welcome():
    document = sample_event("korrigert", reason="feil post \U0001F600")
    assert decode_event(wire(document)).data.reason == "feil post \U0001F600"


def test_invalid_utf8_is_refused_by_the_contracts_error():
    raw = wire(sample_event()).replace(b'"0-24"', b'"0-24\xff"')
    with pytest.raises(ContractError, match="not valid UTF-8"):
        decode_event(raw)


def test_reader_errors_are_contract_errors():
    """One type to catch, from the bytes to the last field."""
    assert issubclass(JsonInputError, ContractError)
    with pytest.raises(ContractError) as caught:
        decode_event(b"{not json")
    assert caught.value.problems[0].reason.startswith("invalid JSON")


@pytest.mark.parametrize(
    "digits",
    ["\u0661\u0662\u0663.\u0664\u0665", "\uff11\uff12\uff13.45", "\u00b9\u00b2\u00b3", "\u096a\u096b", "\U0001d7e3"],
    ids=["arabic-indic", "fullwidth", "superscript", "devanagari", "math-bold"],
)
def test_money_in_other_scripts_digits_is_refused(digits):
    [(path, reason)] = problems_of(sample_event(amount_nok=digits))
    assert path == "data.amount_nok" and "ASCII digits" in reason


@pytest.mark.parametrize("value", ["\u0661\u0662\u0660", "\uff11\uff12\uff10", "1_200", " 120\n", "+120", "NaN", "1e99999"])
def test_kpi_value_in_other_forms_than_ascii_decimal_is_refused(value):
    [(path, _)] = problems_of(sample_event("indikator_malt", value=value))
    assert path == "data.value"


def test_kpi_value_with_an_extreme_exponent_is_refused_not_expanded():
    [(path, reason)] = problems_of(sample_event("indikator_malt", value="1e-9999"))
    assert path == "data.value" and "decimal places" in reason
    assert parse_event(sample_event("indikator_malt", value="1.25E+2")).data.value == "125"


@pytest.mark.parametrize("field", ["kap", "post", "fiscal_year"])
@pytest.mark.parametrize("text", ["\u0668\u0664\u0660", "\uff18\uff14\uff10"])
def test_kap_post_and_year_in_other_scripts_digits_are_refused(field, text):
    [(path, _)] = problems_of(sample_event(**{field: text}))
    assert path == f"data.{field}"


def test_numbers_in_the_json_itself_must_be_ascii():
    with pytest.raises(JsonInputError):
        loads_strict('{"kap": \u0668\u0664\u0660}')


@pytest.mark.parametrize("time", ["\uff12\uff10\uff12\uff16-03-01T10:00:00Z", "2026-03-01T10:00:00Z\n",
                                  "2026-W09-7T10:00:00Z", "2026-03-01T10:00:00.\u0661Z"])
def test_time_must_be_rfc3339_in_ascii(time):
    [(path, _)] = problems_of({**sample_event(), "time": time})
    assert path == "time"


@pytest.mark.parametrize("field, kind", [("line_id", "bevilget"), ("commitment_id", "forpliktet"),
                                         ("reform_id", "milepael_startet"), ("stage_id", "milepael_startet"),
                                         ("indicator", "indikator_malt")])
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\x00", " "])
def test_identifiers_match_the_whole_string(field, kind, suffix):
    value = sample_event(kind)["data"][field] + suffix
    [(path, _)] = problems_of(sample_event(kind, **{field: value}))
    assert path == f"data.{field}"


@pytest.mark.parametrize("value", ["BFD\n", "bfd", "BFD\x00"])
def test_ministry_codes_match_the_whole_string(value):
    assert ("data.ministry" in {path for path, _ in problems_of(sample_event(ministry=value))})
    [(path, _)] = problems_of({**sample_event(), "source": f"urn:no:dep:{value}"})
    assert path == "source"


@pytest.mark.parametrize("corrects_id", ["e-0\x00", "e-0\n", "\x1b[31me-0"])
def test_corrected_event_id_must_be_printable(corrects_id):
    [(path, _)] = problems_of(sample_event("korrigert", corrects_id=corrects_id))
    assert path == "data.corrects_id"


@pytest.mark.parametrize(
    "kind, field",
    [("korrigert", "reason"), ("utbetalt", "description"), ("forpliktet", "description"),
     ("milepael_forsinket", "reason"), ("port_beslutning", "rationale"), ("plan_justert", "reason"),
     ("reform_registrert", "title")],
)
@pytest.mark.parametrize("control", ["\x00", "\x07", "\x1b", "\x7f", "\x85"])
def test_control_characters_in_free_text_are_refused_naming_the_field(kind, field, control):
    [(path, reason)] = problems_of(sample_event(kind, **{field: f"anbud{control}x"}))
    assert path == f"data.{field}" and "control character" in reason


def test_free_text_may_span_lines_and_hold_tabs():
    reason = "Feil post.\r\nSe vedtak:\tpunkt 2"
    assert parse_event(sample_event("korrigert", reason=reason)).data.reason == reason


def test_control_characters_in_the_event_id_are_refused():
    for event_id in ("e-1\x00", "e-1\n", "e-1\x7f"):
        assert [path for path, _ in problems_of({**sample_event(), "id": event_id})] == ["id"]


def test_dates_in_other_scripts_digits_are_refused():
    [(path, _)] = problems_of(sample_event("milepael_fullfort", completed_on="\u0662\u0660\u0662\u0666-05-30"))
    assert path == "data.completed_on"


@pytest.mark.parametrize("name", ["subject", "dataschema"])
@pytest.mark.parametrize("value", ["a\x00", "a\n", 42, "x" * 501])
def test_optional_envelope_text_is_checked_too(name, value):
    assert [path for path, _ in problems_of({**sample_event(), name: value})] == [name]
    assert parse_event({**sample_event(), name: "linje 0-24"}).id == "e-1"


@pytest.mark.parametrize("text", ['"\ud800"', '{"tittel": "Tidlig innsats \udc00"}', '["ø", {"k\udbff": 1}]'])
def test_reader_refuses_raw_lone_surrogates_in_text_input(text):
    """Text handed over already decoded (not bytes) can hold the surrogate itself, not only its escape."""
    with pytest.raises(JsonInputError, match="surrogate"):
        loads_strict(text)


def test_reader_lets_escaped_backslashes_and_pairs_through():
    assert loads_strict(r'["\\ud800", "\ud83d\ude00"]') == ["\\ud800", "\U0001F600"]


@pytest.mark.parametrize("value", ["2026-05-30T00:00:00", 1780099200, "1780099200", "2026-5-30", "2026-05-30\n",
                                   "2026-02-30"])
def test_dates_are_yyyy_mm_dd_only(value):
    [(path, _)] = problems_of(sample_event("milepael_fullfort", completed_on=value))
    assert path == "data.completed_on"
    assert parse_event(sample_event("milepael_fullfort", completed_on="2026-05-30")).data.completed_on.day == 30
