"""Reading budsjett's totals the way a user does: GET /v1/lines/{line_id} and /metrics."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

TOTAL_NAMES = ("bevilget_ore", "forpliktet_ore", "utbetalt_ore")


def get_json(url: str, timeout_s: float = 5.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def line_totals(base_url: str, line_id: str) -> dict[str, int] | None:
    """The line's totals (bevilget/forpliktet/utbetalt øre), or None while the line is unknown."""
    body = get_json(f"{base_url}/v1/lines/{line_id}")
    if not body:
        return None
    totals = body.get("totals", body)
    return {name: int(totals.get(name, 0)) for name in TOTAL_NAMES}


def matches(expected: dict[str, int], actual: dict[str, int] | None) -> bool:
    return actual is not None and all(actual.get(name) == expected[name] for name in TOTAL_NAMES)


_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format → (name, labels, value) samples."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match.group("labels") or ""))
        try:
            samples.append((match.group("name"), labels, float(match.group("value"))))
        except ValueError:
            continue
    return samples


def metric_line_amount(samples, name_part: str, line_id: str) -> float | None:
    """Sum of every series whose name contains `name_part` and whose line label is `line_id`.

    Series that aggregate another way (e.g. with no ministry/phase labels next
    to per-cell ones) would double count, so per-cell series win when both exist.
    """
    picked = [(labels, value) for name, labels, value in samples
              if name_part in name and line_id in (labels.get("line_id"), labels.get("line"))]
    if not picked:
        return None
    per_cell = [value for labels, value in picked if "ministry" in labels and "phase" in labels]
    return sum(per_cell) if per_cell else sum(value for _, value in picked)


def fetch_metrics(base_url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout_s) as response:
        return response.read().decode("utf-8", "replace")
