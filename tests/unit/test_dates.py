"""Dates in running text, as Norwegian finance staff read them."""
from datetime import date

import pytest

from services.shared.dates import format_date_nb


@pytest.mark.parametrize("day, text", [
    (date(2026, 3, 1), "1. mars 2026"), (date(2026, 1, 31), "31. januar 2026"), (date(2025, 12, 9), "9. desember 2025"),
    (date(2026, 5, 17), "17. mai 2026"),
])
def test_long_norwegian_date(day, text):
    assert format_date_nb(day) == text


def test_every_month_has_its_norwegian_name():
    names = [format_date_nb(date(2026, month, 1)).split()[1] for month in range(1, 13)]
    assert names == ["januar", "februar", "mars", "april", "mai", "juni", "juli", "august", "september",
                     "oktober", "november", "desember"]
