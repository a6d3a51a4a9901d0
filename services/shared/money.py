"""Money: NOK in, integer øre inside, never a float.

Publishers send NOK as a decimal string ("1250000.00") or a JSON integer. We
store integer øre so that sums are exact; real state-budget posts reach
5·10¹¹ NOK and some appropriations are negative.

Digits are ASCII only: `\\d`, `int()` and `Decimal()` also take Arabic-Indic,
fullwidth and other scripts' digits, so the pattern spells out [0-9] and the
whole string must match it before anything is converted.
"""
from __future__ import annotations

import re
from decimal import Decimal

ORE_PER_NOK = 100
# Ten times the largest state-budget post seen, so a typo of a few digits still
# passes while an absurd number (or an attack on the parser) does not.
MAX_ABS_NOK = 10**13
MAX_ABS_ORE = MAX_ABS_NOK * ORE_PER_NOK

_NOK_PATTERN = re.compile(r"(?P<sign>-)?(?P<kroner>[0-9]{1,20})(?:\.(?P<ore>[0-9]{1,2}))?")
_TOO_MANY_DECIMALS = re.compile(r"-?[0-9]+\.[0-9]{3,}")


class MoneyError(ValueError):
    """An amount that cannot be taken as NOK to the øre; the message says why."""


class FloatToken(str):
    """A JSON number with a fraction or exponent, kept as its literal text.

    The strict JSON reader produces these instead of floats so that money
    fields can reject them with a clear reason and other fields can read them
    as exact decimals.
    """


def parse_nok_to_ore(value: object, field: str = "amount_nok") -> int:
    """Parse an amount in NOK (decimal string or integer) into integer øre."""
    if isinstance(value, bool):
        raise MoneyError(f"{field} must be NOK as a decimal string or an integer, not a boolean")
    if isinstance(value, (float, FloatToken)):
        raise MoneyError(
            f"{field} must be NOK as a decimal string like \"1250000.00\" or an integer; "
            f"a JSON number with a fraction ({value}) is a float and can lose øre"
        )
    if isinstance(value, int):
        ore = value * ORE_PER_NOK
    elif isinstance(value, str):
        text = value.strip(" ")  # spaces around the number are harmless; other whitespace is not
        if text.lower() in {"nan", "inf", "-inf", "infinity", "-infinity", "+inf"}:
            raise MoneyError(f"{field} must be a finite amount, not {value!r}")
        match = _NOK_PATTERN.fullmatch(text)
        if match is None:
            if _TOO_MANY_DECIMALS.fullmatch(text):
                raise MoneyError(f"{field} has more than two decimals ({value!r}); NOK is counted to the øre")
            raise MoneyError(
                f"{field} must look like \"1250000.00\" (ASCII digits 0-9, optional minus, at most two "
                f"decimals, no thousands separators), got {value[:40]!r}"
            )
        kroner = int(match.group("kroner"))
        ore_part = int((match.group("ore") or "0").ljust(2, "0"))
        ore = kroner * ORE_PER_NOK + ore_part
        if match.group("sign"):
            ore = -ore
    else:
        raise MoneyError(f"{field} must be NOK as a decimal string or an integer, got {type(value).__name__}")
    if abs(ore) > MAX_ABS_ORE:
        raise MoneyError(f"{field} is beyond ±{MAX_ABS_NOK:,} NOK; check the number of digits")
    return ore


def format_ore(amount_ore: int) -> str:
    """Render øre as a NOK decimal string with exactly two decimals ("-12.05")."""
    sign = "-" if amount_ore < 0 else ""
    kroner, ore = divmod(abs(amount_ore), ORE_PER_NOK)
    return f"{sign}{kroner}.{ore:02d}"


def ore_to_decimal(amount_ore: int) -> Decimal:
    """Øre as an exact NOK Decimal, for spreadsheet cells (CSV with a decimal comma, xlsx); never a float."""
    return Decimal(format_ore(amount_ore))


# The one space for people's numbers: U+00A0 NO-BREAK SPACE, as Norwegian Excel, Windows' nb-NO
# locale and CLDR's nb write thousands and "kr" (so an amount never breaks across lines and pastes
# into Excel as a number). The tabular reader accepts it, the ordinary and the narrow no-break space.
READABLE_SPACE = "\u00a0"


def format_ore_readable(amount_ore: int) -> str:
    """Render øre for people: Norwegian thousands spacing and a decimal comma ("-1 234 567,89")."""
    sign = "-" if amount_ore < 0 else ""
    kroner, ore = divmod(abs(amount_ore), ORE_PER_NOK)
    grouped = f"{kroner:,}".replace(",", READABLE_SPACE)
    return f"{sign}{grouped},{ore:02d}"


def format_nok(amount_ore: int) -> str:
    """Render øre as finance staff read NOK in running text: "9 500 000,00 kr", "-1 205,00 kr".

    A minus is the ASCII hyphen-minus: what Excel nb-NO writes and reads back as negative.
    """
    return f"{format_ore_readable(amount_ore)}{READABLE_SPACE}kr"
