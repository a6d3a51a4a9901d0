"""Two budsjett workers on four partitions: each holds its share, and the totals are still the oracle's.

A line's state lives under its key on its key's partition, so it follows the partition to
whichever worker holds it; a cross-line credit goes through the budget topic to the worker of
the target line. When one worker stops, the other takes its partitions over with their state.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from services.localstack.processes import free_port, wait_until
from services.shared.contract import make_event
from tests.integration.test_budsjett_crash import assert_equals_oracle, oracle
from tests.integration.test_budsjett_group import member_partitions
from tests.integration.test_budsjett_service import metrics_text, publish

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=timezone.utc)
LINES = [f"linje-{i}" for i in range(12)]


def ledger(first: int, count: int) -> list[dict]:
    """Grants on every line, then cross-line reallocations (credits land on other partitions)."""
    events = []
    for i in range(first, first + count):
        events.append(make_event("bevilget", "BFD", {
            "line_id": LINES[i % len(LINES)], "ministry": "BFD", "phase": "utredning", "amount_nok": f"{1000 + i}.00",
            "kap": 840, "post": 70, "fiscal_year": 2026}, f"b{i}", T0 + timedelta(seconds=i)))
    for i in range(first, first + 12):
        source, target = LINES[i % len(LINES)], LINES[(i + 5) % len(LINES)]
        events.append(make_event("omdisponert", "BFD", {
            "line_id": source, "amount_nok": "10.00", "fiscal_year": 2026,
            "from": {"ministry": "BFD", "phase": "utredning"},
            "to": {"ministry": "BFD", "phase": "utredning", "line_id": target}}, f"o{i}", T0 + timedelta(hours=1)))
    return events


def events_applied(settings, port: int) -> int:
    """What one worker has applied, from its /metrics (the read model is shared by both)."""
    text = metrics_text(settings.model_copy(update={"budsjett_port": port}))
    return int(sum(float(value) for value in
                   re.findall(r'^reformspor_budsjett_events_total\{outcome="applied",[^}]*\} (\S+)$', text, re.M)))


def test_two_workers_share_four_partitions_and_match_the_oracle(stack, settings):
    port_a, port_b = settings.budsjett_port, free_port()
    stack.start_service("budsjett", instance="budsjett-a")
    stack.start_service("budsjett", instance="budsjett-b", port=port_b)
    held = lambda: (member_partitions(settings, "budsjett:budsjett-a"),  # noqa: E731
                    member_partitions(settings, "budsjett:budsjett-b"))
    try:
        wait_until(lambda: held() == (2, 2), 60, "two partitions each")
    except TimeoutError as error:
        raise AssertionError(f"{error}: {held()}") from None
    first = ledger(0, 240)
    publish(settings, first)  # once both hold their partitions, so both have lines to apply
    assert_equals_oracle(settings, oracle(first), stack)
    assert events_applied(settings, port_a) > 0 and events_applied(settings, port_b) > 0

    # b stops; a takes its partitions (and their lines' state) over once b's session expires.
    stack.stop_service("budsjett-b")
    second = ledger(1000, 120)
    publish(settings, second)
    assert_equals_oracle(settings, oracle(first + second), stack)
    assert member_partitions(settings, "budsjett:budsjett-a") == 4
