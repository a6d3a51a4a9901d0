"""Dates for people: how Norwegian finance staff read a date in running text.

"1. mars 2026", not "2026-03-01" or "01.03.2026": in a sentence the long form cannot be
misread (day and month never swap, as 03.01 does for a reader used to US dates), and it is
what Språkrådet recommends for text; the numeric 01.03.2026 is for tables and forms.
Machine fields (JSON, CSV) stay ISO 8601. `parse_moment` reads a moment a person typed.
"""
from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

MONTHS_NB = ("januar", "februar", "mars", "april", "mai", "juni",
             "juli", "august", "september", "oktober", "november", "desember")


def format_date_nb(day: date) -> str:
    """"1. mars 2026": day with a period, the month's name in lower case, the year."""
    return f"{day.day}. {MONTHS_NB[day.month - 1]} {day.year}"


# A plain date means "at the end of that day" where the ministries keep their books.
BOOKKEEPING_ZONE = ZoneInfo("Europe/Oslo")
MOMENT_RULE = "a date (2026-06-30: the end of that day, Norwegian time) or an RFC 3339 timestamp with a time zone " \
              "(2026-06-30T12:00:00Z)"


def parse_moment(text: str) -> datetime:
    """A moment as people give it: `2026-06-30` is the end of that day in Norway; a timestamp needs its zone.

    The one rule for `?as_of=` over HTTP and `--as-of` on the command line. Raises ValueError saying what is allowed.
    """
    try:
        return datetime.combine(date.fromisoformat(text), time.max, BOOKKEEPING_ZONE)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text[:40]!r} is neither a date (2026-06-30) nor a timestamp with a time zone "
                         "(2026-06-30T12:00:00Z)") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text[:40]!r} has no time zone: add Z or +01:00, or give a plain date")
    return moment
