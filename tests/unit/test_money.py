"""Money parsing: NOK in, integer øre out, every unsafe form refused with a reason."""
import pytest
from hypothesis import given, strategies as st

from services.shared.jsonio import loads_strict
from services.shared.money import MAX_ABS_ORE, MoneyError, format_ore, format_ore_readable, parse_nok_to_ore


@given(st.integers(min_value=-MAX_ABS_ORE, max_value=MAX_ABS_ORE))
def test_decimal_string_round_trips_to_the_ore(amount_ore):
    assert parse_nok_to_ore(format_ore(amount_ore)) == amount_ore


@pytest.mark.parametrize(
    "text, expected_ore",
    [("1250000.00", 125_000_000), ("0.5", 50), ("-12.05", -1205), ("500000000000", 50_000_000_000_000), (" 7 ", 700)],
)
def test_accepted_forms(text, expected_ore):
    assert parse_nok_to_ore(text) == expected_ore


def test_integer_nok_is_whole_kroner():
    assert parse_nok_to_ore(840) == 84_000


@pytest.mark.parametrize(
    "value, reason",
    [
        (1.5, "float"),
        (loads_strict("1250000.10"), "float"),
        ("1.505", "more than two decimals"),
        ("NaN", "finite"),
        ("Infinity", "finite"),
        ("1 250 000,00", "must look like"),
        ("1e6", "must look like"),
        (True, "boolean"),
        (None, "NoneType"),
        ("9" * 20, "beyond"),
    ],
)
def test_refused_forms_say_why(value, reason):
    with pytest.raises(MoneyError, match=reason):
        parse_nok_to_ore(value)


def test_readable_format_uses_norwegian_separators():
    assert format_ore_readable(-123456789) == "-1\u00a0234\u00a0567,89"
