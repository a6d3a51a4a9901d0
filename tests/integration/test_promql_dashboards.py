"""The test that matters for deploy/: every query a user or on-call sees, run
against a real Prometheus scraping the real services after a real scenario.

- Every PromQL expression in the generated dashboards must return at least one
  series: a panel that shows "No data" fails here.
- Every recording rule must return data; alert rules may be quiet in a healthy
  scenario (they are listed), except the over-commitment the scenario causes.
- The finance panels show the numbers the scenario implies (øre / 100 = NOK).
- The audit-trail table's SQL runs on budsjett's PostgreSQL read model and
  lists the events behind those numbers.
"""
from __future__ import annotations

import importlib.util
import json
import urllib.request
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from kafka import KafkaProducer

from services.shared.kafka_security import ADMIN, kafka_python_options
from services.shared import grafana
from services.shared.config import Settings
from services.shared.contract import make_event
from services.localstack.processes import wait_until
from services.localstack.stack import SERVICES
from tests.support.prometheus import LocalPrometheus

pytestmark = [pytest.mark.integration, pytest.mark.prometheus, pytest.mark.postgres, pytest.mark.timeout(420)]

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
LINE = "0-24"


def _require_services() -> None:
    missing = [s for s in SERVICES if importlib.util.find_spec(f"services.{s}.app") is None]
    if missing:
        pytest.fail(f"services not built yet: {', '.join(missing)} (services/<name>/app.py); this test needs all three")


def _ore(amount_nok: str) -> int:
    return int(Decimal(amount_nok) * 100)


def _scenario(now: datetime) -> tuple[list[dict], list[dict], list[dict], str]:
    """(budget events, reform events, events through ingest, reform id)."""
    from services.milepael.scenario import demo_events, reform_id_for
    from services.localstack.demo import budget_scenario, invalid_event

    year = now.year
    budget = budget_scenario(now)
    # HOD commits more than its utvikling contribution: over-committed.
    budget.append(make_event("forpliktet", "HOD", {
        "line_id": LINE, "ministry": "HOD", "phase": "utvikling", "commitment_id": "HOD-K-OVER",
        "amount_nok": "2000000.00", "fiscal_year": year, "description": "Avtale ut over bevilgningen"},
        "promql-over-1", now))
    reform_budget, reform = [], []
    for event in demo_events(LINE, now):
        (reform_budget if event["type"].startswith("no.reformspor.budsjett.") else reform).append(event)
    # Through the ingest front door: one good contribution and one invalid event (dead letter).
    through_ingest = [
        make_event("bevilget", "JD", {"line_id": LINE, "ministry": "JD", "phase": "implementering",
                                      "amount_nok": "400000.00", "kap": 400, "post": 1, "fiscal_year": year},
                   "promql-jd-1", now),
        invalid_event(now),
    ]
    return budget + reform_budget, reform, through_ingest, reform_id_for(LINE)


def _expected(events: list[dict], kind: str) -> dict[str, int]:
    """Sum of amount per ministry on LINE for one simple event kind, in øre."""
    sums: dict[str, int] = defaultdict(int)
    for event in events:
        data = event["data"]
        if event["type"] == f"no.reformspor.budsjett.{kind}.v1" and data["line_id"] == LINE:
            sums[data["ministry"]] += _ore(data["amount_nok"])
    return dict(sums)


def _publish(settings: Settings, topic: str, events: list[dict], key_field: str) -> None:
    producer = KafkaProducer(**kafka_python_options(settings, ADMIN), acks="all", linger_ms=5)
    try:
        for event in events:
            producer.send(topic, key=event["data"][key_field].encode(), value=json.dumps(event).encode())
        producer.flush(30)
    finally:
        producer.close(10)


def prometheus_alert(server: LocalPrometheus, alertname: str) -> dict | None:
    """The first pending or firing alert of that name, with its rendered annotations."""
    with urllib.request.urlopen(f"{server.url}/api/v1/alerts", timeout=10) as response:
        alerts = json.loads(response.read())["data"]["alerts"]
    return next((a for a in alerts if a["labels"]["alertname"] == alertname), None)


def _rules() -> tuple[list[dict], list[dict]]:
    recording, alerting = [], []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                (alerting if "alert" in rule else recording).append(rule)
    return recording, alerting


@pytest.fixture
def prometheus(stack, tmp_path):
    settings = stack.settings
    jobs = {f"reformspor-{s}": [f"127.0.0.1:{settings.port(s)}"] for s in SERVICES}
    server = LocalPrometheus(tmp_path / "prometheus", jobs, sorted(RULES_DIR.glob("*.yml")), scrape_interval_s=1)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_every_dashboard_and_rule_query_shows_the_scenario(stack, prometheus, postgres_url):
    _require_services()
    from services.ingest.client import IngestClient
    from services.ingest.tokens import issue_token

    settings = stack.settings
    now = datetime.now(timezone.utc).replace(microsecond=0)
    budget, reform, through_ingest, reform_id = _scenario(now)

    stack.start_service("ingest")
    stack.start_service("budsjett", extra_env={"REFORMSPOR_BUDSJETT_DB_URL": postgres_url})
    stack.start_service("milepael")
    wait_until(lambda: set(prometheus.target_health().values()) == {"up"}, 30, "Prometheus to scrape all three services")

    _publish(settings, settings.topics.budget, budget, "line_id")
    _publish(settings, settings.topics.reform, reform, "reform_id")
    results = IngestClient(settings.service_url("ingest"), issue_token(settings, "JD", name="promql-test")).publish(through_ingest)
    assert [r["status"] for r in results] == ["accepted", "rejected"], results
    all_budget = budget + through_ingest[:1]

    # --- wait until Prometheus has scraped what the scenario implies ----------------
    bevilget = _expected(all_budget, "bevilget")
    utbetalt = _expected(all_budget, "utbetalt")
    panel_bevilget = 'sum by (line, ministry) (reformspor_budsjett_bevilget_ore{ministry=~".*"}) / 100'
    expected_nok = {(LINE, m): v / 100 for m, v in bevilget.items()}
    wait_until(lambda: {k: v for k, v in prometheus.values(panel_bevilget, "line", "ministry").items() if k[0] == LINE}
               == expected_nok, 90, f"bevilget per ministry on {LINE} = {expected_nok}")
    wait_until(lambda: prometheus.query(f'reformspor_reform_stage_adjustment_required{{reform="{reform_id}"}} == 1'),
               90, "milepael to flag the drifting stage")
    wait_until(lambda: prometheus.query('reformspor_dead_letters_total{service="ingest"}')
               and prometheus.query("reformspor_ingest_request_seconds_bucket")
               and prometheus.query("reformspor_consumer_lag_messages"), 60, "ingest and lag metrics")
    # Rates need two scrapes after the counters appear; rules need an evaluation.
    wait_until(lambda: prometheus.query("channel_outcome:reformspor_ingest_events:rate5m")
               and prometheus.query("line:reformspor_budsjett_utbetalt_ore:predict_year_end")
               and prometheus.query("service_reason:reformspor_dead_letters:rate5m"), 60, "rates and recording rules")

    # --- every dashboard query returns series ------------------------------------
    # fiscal_year "All" (.*): the services' budget metrics do not carry the label yet.
    variables = {"fiscal_year": ".*", "line": LINE, "ministry": ".*", "reform": reform_id, "__rate_interval": "1m",
                 "__range": "5m"}
    queries = []
    for name, model in grafana.render().items():
        for variable in model.get("templating", {}).get("list", []):
            selector = variable["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0]
            label = variable["query"]["query"].rsplit(",", 1)[1].strip(" )")
            values = {s["metric"].get(label) for s in prometheus.query(grafana.expand(selector, variables))}
            assert variables[variable["name"]] in values or variables[variable["name"]] == ".*", \
                f"{name}: variable ${variable['name']} offers {values}, not the scenario's value"
        queries += [(name, q) for q in grafana.panel_queries(model) if q.datasource_type == "prometheus"]
    checked = len(queries)

    def panels_without_data() -> list[str]:
        return [f"{name} / {q.panel_title}: {q.query}" for name, q in queries
                if not prometheus.query(grafana.expand(q.query, variables))]

    # A rate needs a second scrape after its counter's first sample: allow a
    # few scrapes, then report every panel still empty.
    try:
        wait_until(lambda: not panels_without_data(), 20, "every dashboard panel to have data")
        empty = []
    except TimeoutError:
        empty = panels_without_data()
    assert checked > 40
    assert not empty, "dashboard panels with no data:\n" + "\n".join(empty)

    # --- the finance numbers are the scenario's ----------------------------------
    overview = grafana.render()["linjer-oversikt.json"]
    table_query = next(q.query for q in grafana.panel_queries(overview)
                       if q.panel_title == "Per linje og departement" and "bevilget" in q.query)
    assert {k: v for k, v in prometheus.values(grafana.expand(table_query, variables), "line", "ministry").items()
            if k[0] == LINE} == expected_nok
    detail_utbetalt = f'sum by (ministry) (reformspor_budsjett_utbetalt_ore{{line="{LINE}", ministry=~".*"}}) / 100'
    shown = {k[0]: v for k, v in prometheus.values(detail_utbetalt, "ministry").items() if v}
    assert shown == {m: v / 100 for m, v in utbetalt.items()}
    total = prometheus.values(grafana.expand(
        grafana.money_sum("bevilget", f'{grafana.FISCAL_YEAR}, line="$line", ministry=~"$ministry"'), variables))
    assert list(total.values()) == [sum(bevilget.values()) / 100]

    # --- rules: recording rules have data; alerts parse; the over-commitment shows --
    recording, alerting = _rules()
    no_data = [r["record"] for r in recording if not prometheus.query(r["expr"])]
    assert not no_data, f"recording rules with no data: {no_data}"
    quiet = []
    for rule in alerting:
        if not prometheus.query(rule["expr"]):  # raises on a PromQL error
            quiet.append(rule["alert"])
    print(f"\nalert expressions quiet in this scenario: {', '.join(quiet)}")
    over = prometheus.query(next(r["expr"] for r in alerting if r["alert"] == "ReformsporLineOvercommitted"))
    assert {(s["metric"]["line"], s["metric"]["ministry"], s["metric"]["phase"]) for s in over} == {(LINE, "HOD", "utvikling")}
    assert float(over[0]["value"][1]) < 0  # disponibelt in NOK, negative
    # The alert text as Prometheus renders it (pending while its `for:` runs): Norwegian
    # money, the budget owner's routing labels, an absolute runbook link from the settings.
    disponibelt_nok = Decimal(over[0]["value"][1]).quantize(Decimal("0.01"))
    alert = wait_until(lambda: prometheus_alert(prometheus, "ReformsporLineOvercommitted"), 30,
                       "the over-commitment alert to be pending")
    assert alert["labels"]["team"] == "budsjett" and alert["labels"]["ministry"] == "HOD"
    norwegian = f"{disponibelt_nok:,.2f}".replace(",", " ").replace(".", ",") + " kr"
    assert f"disponibelt er {norwegian}." in alert["annotations"]["description"], alert["annotations"]
    assert f"disponibelt is {disponibelt_nok} NOK." in alert["annotations"]["description_en"]
    runbook = yaml.safe_load((RULES_DIR / "reformspor-settings.yml").read_text())["groups"][0]["rules"][0]["labels"]["url"]
    assert alert["annotations"]["runbook_url"] == f"{runbook}#reformsporlineovercommitted"
    adjustment = prometheus.query(next(r["expr"] for r in alerting if r["alert"] == "ReformsporStageNeedsAdjustment"))
    assert any(s["metric"]["reform"] == reform_id for s in adjustment)
    assert "ReformsporServiceDown" in quiet and "ReformsporLineOverspent" in quiet

    # --- the audit trail: the SQL panel on budsjett's PostgreSQL read model -------
    import psycopg2

    detail = grafana.render()["linje-detalj.json"]
    sql = grafana.expand(next(q.query for q in grafana.panel_queries(detail)
                              if q.datasource_type == "grafana-postgresql-datasource"), variables)
    dsn = postgres_url.replace("postgresql+psycopg2://", "postgresql://")

    def audit_rows():
        with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
            cursor.execute(sql)
            columns = [c.name for c in cursor.description]
            return [dict(zip(columns, row)) for row in cursor.fetchall()]

    bevilget_events = {e["id"] for e in all_budget if e["type"].endswith(".bevilget.v1")}
    rows = wait_until(lambda: (r := audit_rows()) and bevilget_events <= {row["Hendelse"] for row in r} and r,
                      60, "budsjett's read model to hold every bevilget event")
    by_ministry: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        by_ministry[row["Departement"]] += row["Bevilget"]
    assert {m: v for m, v in by_ministry.items() if v} == {m: Decimal(v) / 100 for m, v in bevilget.items()}
    assert "promql-over-1" in {row["Hendelse"] for row in rows}
    assert "demo-invalid-001" not in {row["Hendelse"] for row in rows}
