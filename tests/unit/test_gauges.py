"""Fast gauges: what Prometheus reads from them is what prometheus_client would have served."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.shared.gauges import GaugeFamilies, format_value

LABELS = ("line", "ministry", "phase")
label_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
series = st.dictionaries(st.tuples(label_text, label_text, label_text),
                         st.integers(min_value=-(2 ** 53), max_value=2 ** 53), max_size=20)


def scraped(text: bytes) -> dict[str, dict[tuple, float]]:
    """name → {label values: value}, as a Prometheus text parser reads the exposition."""
    families = {}
    for family in text_string_to_metric_families(text.decode()):
        families[family.name] = {tuple(sample.labels[name] for name in LABELS): sample.value
                                 for sample in family.samples}
    return families


@given(series)
def test_a_scrape_reads_the_same_as_prometheus_client_would_serve(values):
    gauges = GaugeFamilies()
    fast = gauges.gauge("reformspor_test_ore", 'Amount "per" cell\\ in øre\nsecond line', LABELS)
    registry = CollectorRegistry()
    reference = Gauge("reformspor_test_ore", 'Amount "per" cell\\ in øre\nsecond line', LABELS, registry=registry)
    for labels, amount_ore in values.items():
        fast.set(labels, amount_ore)
        reference.labels(*labels).set(amount_ore)
    assert scraped(gauges.render()) == scraped(generate_latest(registry))


def test_integers_are_served_exactly_and_a_series_keeps_its_latest_value():
    gauges = GaugeFamilies()
    amounts = gauges.gauge("reformspor_test_ore", "amounts", LABELS)
    amounts.set(("L1", "BFD", "utredning"), 5)
    amounts.set(("L1", "BFD", "utredning"), 123_456_789_012)
    text = gauges.render().decode()
    assert 'reformspor_test_ore{line="L1",ministry="BFD",phase="utredning"} 123456789012\n' in text
    assert text.count("reformspor_test_ore{") == 1
    assert text.startswith("# HELP reformspor_test_ore amounts\n# TYPE reformspor_test_ore gauge\n")


def test_special_floats_and_booleans_use_the_exposition_spelling():
    assert [format_value(v) for v in (math.nan, math.inf, -math.inf, True, 1.5)] == ["NaN", "+Inf", "-Inf", "1", "1.5"]


def test_wrong_label_count_and_duplicate_names_are_refused():
    gauges = GaugeFamilies()
    amounts = gauges.gauge("reformspor_test_ore", "amounts", LABELS)
    with pytest.raises(ValueError, match="takes labels"):
        amounts.set(("L1",), 1)
    with pytest.raises(ValueError, match="already defined"):
        gauges.gauge("reformspor_test_ore", "again", LABELS)



def test_a_scrape_while_another_thread_adds_series_never_fails():
    """The stream thread sets gauges while the HTTP thread renders /metrics."""
    import threading

    from services.shared.gauges import GaugeFamilies

    families = GaugeFamilies()
    gauge = families.gauge("reformspor_test_ore", "test", ("line",))
    series = 30_000

    def add_series() -> None:
        for number in range(series):
            gauge.set((f"line-{number}",), number)

    writer = threading.Thread(target=add_series)
    writer.start()
    try:
        while writer.is_alive():
            families.render()
    finally:
        writer.join(30)
    assert families.render().count(b"\nreformspor_test_ore{") == series
