"""Money parsing: NOK in, integer øre out, every unsafe form refused with a reason."""
import pytest
from hypothesis import given, strategies as st

from services.shared.jsonio import loads_strict
from services.shared.money import (MAX_ABS_ORE, MoneyError, format_nok, format_ore, format_ore_readable,
                                   parse_nok_to_ore)


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


@pytest.mark.parametrize("amount_ore, text", [
    (950_000_000, "9 500 000,00 kr"), (-120_500, "-1 205,00 kr"), (5, "0,05 kr"), (0, "0,00 kr"),
    (50_000_000_000_000, "500 000 000 000,00 kr"),
])
def test_nok_as_finance_staff_read_it(amount_ore, text):
    # One space throughout: U+00A0 NO-BREAK SPACE, in the thousands and before "kr".
    assert format_nok(amount_ore) == text.replace(" ", "\u00a0")


@pytest.mark.parametrize(
    "text",
    [
        "\u0661\u0662\u0663.\u0664\u0665",  # Arabic-Indic: int() reads it as 123.45
        "\u06f1\u06f2\u06f3",  # Extended Arabic-Indic (Persian)
        "\uff11\uff12\uff13.45",  # fullwidth
        "\u00b9\u00b2\u00b3",  # superscripts
        "\u0967\u0968",  # Devanagari
        "12\u0663.00",  # one foreign digit among ASCII ones
        "123.\u0664\u0665",  # foreign digits in the øre only
    ],
)
def test_digits_of_other_scripts_are_refused(text):
    with pytest.raises(MoneyError, match="ASCII digits"):
        parse_nok_to_ore(text)


@pytest.mark.parametrize("text", ["123\n", "\t123", "123\x00", "1_000", "+5", "\u2003" + "5", "5.\n"])
def test_only_plain_spaces_may_surround_the_amount(text):
    with pytest.raises(MoneyError):
        parse_nok_to_ore(text)


def test_more_than_two_decimals_in_other_digits_is_not_called_a_decimals_problem():
    with pytest.raises(MoneyError, match="must look like"):
        parse_nok_to_ore("1.\u0661\u0662\u0663")


@given(st.text(alphabet=st.characters(codec=None, blacklist_categories=()), max_size=30))
def test_any_text_is_either_ascii_money_or_a_money_error(text):
    try:
        ore = parse_nok_to_ore(text)
    except MoneyError as error:
        assert str(error)
        return
    assert set(text.strip(" ")) <= set("-0123456789.") and abs(ore) <= MAX_ABS_ORE


def test_the_largest_posts_and_negative_amounts_stay_exact():
    assert parse_nok_to_ore("500000000000.00") == 50_000_000_000_000
    assert parse_nok_to_ore("-500000000000.99") == -50_000_000_000_099
    assert parse_nok_to_ore(-500_000_000_000) == -50_000_000_000_000
