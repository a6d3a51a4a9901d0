"""Dates for people: how Norwegian finance staff read a date in running text.

"1. mars 2026", not "2026-03-01" or "01.03.2026": in a sentence the long form cannot be
misread (day and month never swap, as 03.01 does for a reader used to US dates), and it is
what Språkrådet recommends for text; the numeric 01.03.2026 is for tables and forms.
Machine fields (JSON, CSV) stay ISO 8601.
"""
from __future__ import annotations

from datetime import date

MONTHS_NB = ("januar", "februar", "mars", "april", "mai", "juni",
             "juli", "august", "september", "oktober", "november", "desember")


def format_date_nb(day: date) -> str:
    """"1. mars 2026": day with a period, the month's name in lower case, the year."""
    return f"{day.day}. {MONTHS_NB[day.month - 1]} {day.year}"
