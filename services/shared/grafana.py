"""Grafana dashboards as code, and `reformspor grafana build|push`.

The four dashboards are built with Grafana's own grafana-foundation-sdk (typed
builders that emit the dashboard JSON model). `build` writes them under
deploy/grafana/dashboards/ (committed; a unit test fails on drift), and
`push` publishes them, with the datasources they use, through Grafana's HTTP
API (grafana-client). Every panel query here is also run against a real
Prometheus in tests/integration/test_promql_dashboards.py.

Finance dashboards speak Norwegian (the users' terms: bevilget, forpliktet …);
the operations dashboard speaks English like the rest of the code.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models import prometheus as prometheus_model
from grafana_foundation_sdk.models.common import BigValueGraphMode, BigValueColorMode

from services.shared.clikit import HelpGroup

# Fixed datasource uids: provisioning files, push and every panel agree on them.
PROMETHEUS_UID = "reformspor-prometheus"
POSTGRES_UID = "reformspor-postgres"
PROMETHEUS_REF = dashboard_model.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
POSTGRES_REF = dashboard_model.DataSourceRef(type_val="grafana-postgresql-datasource", uid=POSTGRES_UID)
FOLDER_UID = "reformspor"
FOLDER_TITLE = "Reformspor"

GRAFANA_DIR = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"

# Variables Grafana itself defines; a panel may use them without a templating entry.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__timeFilter", "__from", "__to"}
NOK = "currencyNOK"

# Budget metrics will carry the fiscal year as a label. `=~"$fiscal_year"` with
# "All" (.*) also matches series without the label, so the panels work before
# and after it exists.
FISCAL_YEAR = 'fiscal_year=~"$fiscal_year"'

# Table columns for Prometheus labels: finance staff read Norwegian, the
# operations dashboard English like the rest of the code.
LABEL_TITLES_NB = {"line": "Linje", "ministry": "Departement", "phase": "Fase", "fiscal_year": "Budsjettår",
                   "reform": "Reform", "stage": "Trinn", "status": "Status", "dimension": "Toleranse"}
LABEL_TITLES_EN = {"service": "Service", "reason": "Reason", "ministry": "Ministry"}


def value_texts(texts: dict[str, tuple[str, str | None]]) -> list[dashboard_model.ValueMap]:
    """Grafana value mappings: raw value -> (text shown, colour or None to keep the cell's own)."""
    return [dashboard_model.ValueMap(options={
        value: dashboard_model.ValueMappingResult(text=text, color=color, index=index)
        for index, (value, (text, color)) in enumerate(texts.items())})]


# reformspor_reform_stage_tolerance_level: 0 inside, 1 warning band, 2 critical band.
TOLERANCE_LEVELS = value_texts({"0": ("innenfor", "green"), "1": ("varsel", "orange"), "2": ("kritisk", "red")})
TOLERANCE_DIMENSIONS = value_texts({"time": ("tid", None), "cost": ("kostnad", None)})
YES_NO = value_texts({"0": ("nei", "green"), "1": ("ja", "red")})

# budsjett's read model (services/budsjett/readmodel.py) that the audit-trail
# table reads; tests/integration/test_promql_dashboards.py runs the query on it.
BUDGET_EVENT_TABLE = "budsjett_event"
BUDGET_EFFECT_TABLE = "budsjett_effect"


# --- a PostgreSQL query the SDK has no builder for ------------------------------

class _SqlTarget(cogvariants.Dataquery):
    def __init__(self, raw_sql: str, ref_id: str):
        self.raw_sql = raw_sql
        self.ref_id = ref_id

    def to_json(self) -> dict[str, Any]:
        return {"refId": self.ref_id, "datasource": POSTGRES_REF, "editorMode": "code",
                "format": "table", "rawQuery": True, "rawSql": self.raw_sql}


class SqlQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, raw_sql: str, ref_id: str = "A"):
        self._target = _SqlTarget(raw_sql, ref_id)

    def build(self) -> cogvariants.Dataquery:
        return self._target


# --- small helpers so each panel reads as one line of intent ------------------

def prom(expr: str, legend: str = "", ref_id: str = "A", instant: bool = False, table_format: bool = False):
    query = prometheus.Dataquery().expr(expr).ref_id(ref_id).datasource(PROMETHEUS_REF)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant()
    else:
        query = query.range()
    if table_format:
        query = query.format(prometheus_model.PromQueryFormat.TABLE)
    return query


def ts(title: str, *targets, unit: str = "", height: int = 8, span: int = 12, description: str = ""):
    panel = timeseries.Panel().title(title).datasource(PROMETHEUS_REF).height(height).span(span)
    for target in targets:
        panel = panel.with_target(target)
    if unit:
        panel = panel.unit(unit)
    if description:
        panel = panel.description(description)
    return panel


def big_number(title: str, expr: str, unit: str = "", span: int = 6, description: str = "", decimals: int | None = None):
    panel = (stat.Panel().title(title).datasource(PROMETHEUS_REF).height(4).span(span)
             .with_target(prom(expr, instant=True)).graph_mode(BigValueGraphMode.NONE)
             .color_mode(BigValueColorMode.VALUE))
    if unit:
        panel = panel.unit(unit)
    if decimals is not None:
        panel = panel.decimals(decimals)
    if description:
        panel = panel.description(description)
    return panel


def prom_table(title: str, columns: list[tuple[str, str]], join_labels: list[str], unit: str = "",
               span: int = 24, height: int = 8, description: str = "",
               label_titles: dict[str, str] = LABEL_TITLES_NB):
    """A table of instant queries, one column each, joined on `join_labels` (Grafana's merge).

    The label columns get their titles from `label_titles` (a missing one fails the build).
    """
    panel = table.Panel().title(title).datasource(PROMETHEUS_REF).height(height).span(span)
    rename = {label: label_titles[label] for label in join_labels}
    for index, (column, expr) in enumerate(columns):
        ref_id = chr(ord("A") + index)
        panel = panel.with_target(prom(expr, ref_id=ref_id, instant=True, table_format=True))
        rename[f"Value #{ref_id}"] = column
    panel = panel.with_transformation(dashboard_model.DataTransformerConfig(id_val="merge", options={}))
    panel = panel.with_transformation(dashboard_model.DataTransformerConfig(
        id_val="organize",
        options={"excludeByName": {"Time": True, "__name__": True}, "renameByName": rename,
                 "indexByName": {label: i for i, label in enumerate(join_labels)}}))
    if unit:
        panel = panel.unit(unit)
    if description:
        panel = panel.description(description)
    return panel


def variable(name: str, label: str, query: str, multi: bool = False,
             sort: dashboard_model.VariableSort = dashboard_model.VariableSort.ALPHABETICAL_ASC):
    var = (dashboard.QueryVariable(name).label(label).datasource(PROMETHEUS_REF)
           .query({"query": query, "refId": f"{name}-values"})
           .refresh(dashboard_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
           .sort(sort))
    if multi:
        var = var.multi(True).include_all(True).all_value(".*")
    return var


def fiscal_year_variable():
    """Budsjettår: one year or All (the default, and the only choice until the metrics carry the label)."""
    return (variable("fiscal_year", "Budsjettår", "label_values(reformspor_budsjett_bevilget_ore, fiscal_year)",
                     sort=dashboard_model.VariableSort.NUMERICAL_DESC)
            .include_all(True).all_value(".*")
            .current(dashboard_model.VariableOption(selected=True, text="All", value="$__all")))


def base(uid: str, title: str, tags: list[str], description: str):
    return (dashboard.Dashboard(title).uid(uid).tags(["reformspor", *tags]).description(description)
            .refresh("30s").time("now-30d", "now").timezone("browser").editable())


def money_sum(metric: str, selector: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (reformspor_budsjett_{metric}_ore{{{selector}}}) / 100"


BUDGET_COLUMNS = ("bevilget", "omdisponert", "forpliktet", "utbetalt", "disponibelt")


def budget_figures(sel: str, title_suffix: str, scope: str) -> list:
    """One row of the five figures, so it adds up: bevilget ± omdisponert − forpliktet − utbetalt → disponibelt."""
    panels = []
    for column in BUDGET_COLUMNS:
        description = f"Sum {column} {scope}."
        if column == "omdisponert":
            description += " Netto: inn positivt, ut negativt."
        panels.append(big_number(f"{column.capitalize()}{title_suffix}", money_sum(column, sel), NOK,
                                 span=4 if column == "disponibelt" else 5, description=description))
    return panels


# --- the four dashboards --------------------------------------------------------

def lines_overview():
    sel = f'{FISCAL_YEAR}, ministry=~"$ministry"'
    board = base("reformspor-linjer", "Felles budsjettlinjer – oversikt", ["tiltak-1.7", "budsjett"],
                 "Felles eller samordnede budsjettposter (tiltak 1.7): bevilget, omdisponert, forpliktet, utbetalt og "
                 "disponibelt per linje og departement. Beløp i NOK.")
    board = board.with_variable(fiscal_year_variable())
    board = board.with_variable(variable("ministry", "Departement", f"label_values(reformspor_budsjett_bevilget_ore{{{FISCAL_YEAR}}}, ministry)", multi=True))
    for panel in budget_figures(sel, " i alt", "over alle felles linjer (valgte departementer og budsjettår)"):
        board = board.with_panel(panel)
    board = board.with_panel(prom_table(
        "Per linje og departement",
        [(c.capitalize(), money_sum(c, sel, "line, ministry")) for c in BUDGET_COLUMNS]
        + [("Utnyttelse", f'line_ministry:reformspor_budsjett_utnyttelse:ratio{{{sel}}}')],
        ["line", "ministry"], unit=NOK, height=10,
        description="Utnyttelse = andel av bevilget ± omdisponert som er forpliktet eller utbetalt.",
    ).override_by_name("Utnyttelse", [dashboard_model.DynamicConfigValue(id_val="unit", value="percentunit")]))
    board = board.with_panel(
        bargauge.Panel().title("Utnyttelse per linje").datasource(PROMETHEUS_REF).height(8).span(12)
        .with_target(prom(f"line:reformspor_budsjett_utnyttelse:ratio{{{FISCAL_YEAR}}}", legend="{{line}}", instant=True))
        .unit("percentunit").min(0).max(1))
    board = board.with_panel(ts("Disponibelt per linje", prom(f"line:reformspor_budsjett_disponibelt_ore:sum{{{FISCAL_YEAR}}} / 100", "{{line}}"), unit=NOK))
    board = board.with_panel(big_number("Overforpliktede celler", f"sum(reformspor_budsjett_overcommitted{{{sel}}})", span=12, decimals=0,
                                        description="Linje × departement × fase der forpliktet og utbetalt overstiger bevilget ± omdisponert."))
    board = board.with_panel(big_number("Celler med overforbruk", f"sum(reformspor_budsjett_overspent{{{sel}}})", span=12, decimals=0,
                                        description="Linje × departement × fase der utbetalt overstiger bevilget ± omdisponert."))
    return board


def line_detail():
    sel = f'{FISCAL_YEAR}, line="$line", ministry=~"$ministry"'
    board = base("reformspor-linje", "Budsjettlinje i detalj", ["tiltak-1.7", "budsjett"],
                 "Én felles budsjettlinje per fase og departement, over tid, med hendelsene bak tallene.")
    board = board.with_variable(fiscal_year_variable())
    board = board.with_variable(variable("line", "Linje", f"label_values(reformspor_budsjett_bevilget_ore{{{FISCAL_YEAR}}}, line)"))
    board = board.with_variable(variable("ministry", "Departement", f'label_values(reformspor_budsjett_bevilget_ore{{{FISCAL_YEAR}, line="$line"}}, ministry)', multi=True))
    for panel in budget_figures(sel, "", "på linjen (valgte departementer og budsjettår)"):
        board = board.with_panel(panel)
    board = board.with_panel(prom_table(
        "Per departement og fase",
        [(c.capitalize(), money_sum(c, sel, "ministry, phase")) for c in BUDGET_COLUMNS],
        ["ministry", "phase"], unit=NOK, height=9))
    board = board.with_panel(ts("Utbetalt over tid per departement", prom(money_sum("utbetalt", sel, "ministry"), "{{ministry}}"), unit=NOK))
    board = board.with_panel(ts("Forpliktet over tid per fase", prom(money_sum("forpliktet", sel, "phase"), "{{phase}}"), unit=NOK))
    board = board.with_panel(ts(
        "Prognose: utbetalt ved årsslutt mot tilgjengelig",
        prom(f'line:reformspor_budsjett_utbetalt_ore:predict_year_end{{{FISCAL_YEAR}, line="$line"}} / 100', "Prognose utbetalt 31.12.", "A"),
        prom(f'line:reformspor_budsjett_tilgjengelig_ore:sum{{{FISCAL_YEAR}, line="$line"}} / 100', "Bevilget ± omdisponert", "B"),
        unit=NOK, span=24,
        description="Lineær framskriving av de siste 7 dagenes utbetalinger til 31. desember (hele linjen)."))
    # One row per event and cell it moved: exactly what the totals are summed
    # from (an omdisponering between lines shows on both lines).
    audit_sql = (
        'SELECT e.time AS "Tidspunkt", e.event_id AS "Hendelse", e.kind AS "Type", '
        'e.source_ministry AS "Avsender", x.ministry AS "Departement", x.phase AS "Fase",\n'
        '       x.bevilget_ore / 100.0 AS "Bevilget", x.omdisponert_ore / 100.0 AS "Omdisponert",\n'
        '       x.forpliktet_ore / 100.0 AS "Forpliktet", x.utbetalt_ore / 100.0 AS "Utbetalt",\n'
        '       e.corrected_by AS "Korrigert av"\n'
        f"FROM {BUDGET_EFFECT_TABLE} x JOIN {BUDGET_EVENT_TABLE} e ON e.event_id = x.event_id\n"
        # ${line:sqlstring} is quoted and escaped by Grafana; ${ministry:regex} is
        # (A|B) or .* built from contract-validated ministry codes (letters only).
        "WHERE x.line_id = ${line:sqlstring} AND x.ministry ~ '^(${ministry:regex})$'\n"
        "ORDER BY e.time DESC, e.event_id, x.seq\nLIMIT 1000"
    )
    board = board.with_panel(
        table.Panel().title("Hendelser bak tallene").datasource(POSTGRES_REF).height(12).span(24)
        .description("Revisjonsspor fra budsjett-tjenestens lesemodell (PostgreSQL): hver hendelse som er regnet med, én gang.")
        .with_target(SqlQuery(audit_sql))
        .override_by_regexp("Bevilget|Omdisponert|Forpliktet|Utbetalt", [dashboard_model.DynamicConfigValue(id_val="unit", value=NOK)]))
    return board


def reforms():
    sel = 'reform="$reform"'
    board = base("reformspor-reformer", "Reformer – trinn, avvik og justering", ["tiltak-1.8", "reform"],
                 "Trinnvis gjennomføring av reformer (tiltak 1.8): status per trinn, SPI/CPI, prognose mot plan og justeringer.")
    board = board.with_variable(variable("reform", "Reform", "label_values(reformspor_reform_stage_spi, reform)"))
    board = board.with_panel(big_number("Trinn som trenger justering", f"sum(reformspor_reform_stage_adjustment_required{{{sel}}})", span=8, decimals=0))
    board = board.with_panel(big_number("Justeringshendelser", f"sum(reformspor_reform_justering_events_total{{{sel}}})", span=8, decimals=0,
                                        description="Justeringshendelser milepael har sendt for reformen."))
    board = board.with_panel(big_number("Laveste SPI", f"min(reformspor_reform_stage_spi{{{sel}}})", span=8, decimals=2))
    board = board.with_panel(prom_table(
        "Status per trinn",
        [("Status", f"max by (stage, status) (reformspor_reform_stage_status{{{sel}}}) == 1")],
        ["stage", "status"], height=7, span=12,
        description="Gjeldende status for hvert trinn (verdien 1 markerer gjeldende status)."))
    board = board.with_panel(prom_table(
        "Toleranse per trinn",
        [("Nivå", f"max by (stage, dimension) (reformspor_reform_stage_tolerance_level{{{sel}}})")],
        ["stage", "dimension"], height=7, span=12,
        description="Prognosen mot toleransen for tid og kostnad: innenfor, varsel eller kritisk.",
    ).override_by_name("Nivå", [dashboard_model.DynamicConfigValue(id_val="mappings", value=TOLERANCE_LEVELS),
                                dashboard_model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"})])
     .override_by_name("Toleranse", [dashboard_model.DynamicConfigValue(id_val="mappings", value=TOLERANCE_DIMENSIONS)]))
    board = board.with_panel(ts("SPI og CPI per trinn",
                                prom(f"reformspor_reform_stage_spi{{{sel}}}", "SPI {{stage}}", "A"),
                                prom(f"reformspor_reform_stage_spi_t{{{sel}}}", "SPI(t) {{stage}}", "B"),
                                prom(f"reformspor_reform_stage_cpi{{{sel}}}", "CPI {{stage}}", "C"),
                                description="Under 1: bak plan (SPI) eller dyrere enn planlagt (CPI)."))
    board = board.with_panel(ts("Planlagt verdi, opptjent verdi og faktisk kostnad",
                                prom(f"reformspor_reform_stage_planned_value_ore{{{sel}}} / 100", "PV {{stage}}", "A"),
                                prom(f"reformspor_reform_stage_earned_value_ore{{{sel}}} / 100", "EV {{stage}}", "B"),
                                prom(f"reformspor_reform_stage_actual_cost_ore{{{sel}}} / 100", "AC {{stage}}", "C"),
                                unit=NOK))
    board = board.with_panel(prom_table(
        "Prognose mot plan",
        [("Planlagt ferdig", f"max by (stage) (reformspor_reform_stage_planned_finish_timestamp_seconds{{{sel}}}) * 1000"),
         ("Prognose ferdig", f"max by (stage) (reformspor_reform_stage_forecast_finish_timestamp_seconds{{{sel}}}) * 1000"),
         ("Tidsavvik (dager)", f"max by (stage) (reformspor_reform_stage_schedule_variance_days{{{sel}}})"),
         ("Kostnadsavvik (NOK)", f"max by (stage) (reformspor_reform_stage_cost_variance_ore{{{sel}}}) / 100"),
         ("Trenger justering", f"max by (stage) (reformspor_reform_stage_adjustment_required{{{sel}}})")],
        ["stage"], height=8,
    ).override_by_regexp("(Planlagt|Prognose) ferdig", [dashboard_model.DynamicConfigValue(id_val="unit", value="dateTimeAsIsoNoDateIfToday")])
     .override_by_name("Kostnadsavvik (NOK)", [dashboard_model.DynamicConfigValue(id_val="unit", value=NOK)])
     .override_by_name("Trenger justering", [dashboard_model.DynamicConfigValue(id_val="mappings", value=YES_NO)]))
    return board


def operations():
    board = base("reformspor-drift", "Reformspor – operations", ["operations"],
                 "Throughput, consumer lag, dead letters, errors and whether each service is up.")
    board = board.with_panel(
        stat.Panel().title("Services up").datasource(PROMETHEUS_REF).height(4).span(24)
        .with_target(prom('up{job=~"reformspor-.+"}', "{{job}}", instant=True)).graph_mode(BigValueGraphMode.NONE)
        .mappings([dashboard_model.ValueMap(options={
            "0": dashboard_model.ValueMappingResult(text="DOWN", color="red"),
            "1": dashboard_model.ValueMappingResult(text="UP", color="green")})]))
    board = board.with_panel(ts("Ingest events per second by channel and outcome",
                                prom("sum by (channel, outcome) (rate(reformspor_ingest_events_total[$__rate_interval]))", "{{channel}} {{outcome}}"),
                                unit="ops"))
    board = board.with_panel(ts("Ingest request latency p95 by route",
                                prom("histogram_quantile(0.95, sum by (le, route) (rate(reformspor_ingest_request_seconds_bucket[$__rate_interval])))", "{{route}}"),
                                unit="s"))
    board = board.with_panel(ts("Refused events per second (rejected, conflict, forbidden)",
                                prom('sum by (outcome) (rate(reformspor_ingest_events_total{outcome=~"rejected|conflict|forbidden"}[$__rate_interval]))', "{{outcome}}"),
                                unit="ops"))
    board = board.with_panel(ts("budsjett events per second by type and outcome",
                                prom("sum by (type, outcome) (rate(reformspor_budsjett_events_total[$__rate_interval]))", "{{type}} {{outcome}}"),
                                unit="ops"))
    board = board.with_panel(ts("Dead letters per second",
                                prom("service_reason:reformspor_dead_letters:rate5m", "{{service}} {{reason}}"), unit="ops"))
    board = board.with_panel(prom_table("Dead letters since start", [("Dead letters", "sum by (service, reason) (reformspor_dead_letters_total)")],
                                        ["service", "reason"], span=12, label_titles=LABEL_TITLES_EN))
    board = board.with_panel(ts("Consumer lag (messages)",
                                prom("sum by (service, topic) (reformspor_consumer_lag_messages)", "{{service}} {{topic}}"), unit="short", span=12))
    board = board.with_panel(prom_table("Time since each ministry's last event",
                                        [("Silent for", "time() - max by (ministry) (reformspor_ingest_last_event_timestamp_seconds)")],
                                        ["ministry"], unit="s", span=12, label_titles=LABEL_TITLES_EN))
    return board


DASHBOARDS: dict[str, Callable[[], Any]] = {
    "linjer-oversikt.json": lines_overview,
    "linje-detalj.json": line_detail,
    "reformer.json": reforms,
    "drift.json": operations,
}


def _without_nulls(value: Any) -> Any:
    # The SDK emits unset fields as null (e.g. "options": null); Grafana's own
    # export omits them, and some panel plugins do not expect null there.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def render() -> dict[str, dict]:
    """Every dashboard's JSON model, by file name."""
    rendered = {}
    for name, make in DASHBOARDS.items():
        model = _without_nulls(json.loads(json.dumps(make().build(), cls=JSONEncoder)))
        # Stable panel ids (the SDK leaves them unset): links and Grafana's
        # "view panel" URLs use them.
        for panel_id, panel in enumerate(iter_panels(model), start=1):
            panel["id"] = panel_id
        rendered[name] = model
    return rendered


def dumps(model: dict) -> str:
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build(out_dir: Path = DASHBOARD_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in render().items():
        path = out_dir / name
        path.write_text(dumps(model), encoding="utf-8")
        written.append(path)
    return written


# --- reading queries back out (tests, and anyone auditing the dashboards) -------

@dataclass(frozen=True)
class PanelQuery:
    dashboard_uid: str
    panel_title: str
    datasource_type: str
    query: str


def iter_panels(model: dict):
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # rows


def panel_queries(model: dict) -> list[PanelQuery]:
    found = []
    for panel in iter_panels(model):
        for target in panel.get("targets", []):
            ds = target.get("datasource") or panel.get("datasource") or {}
            query = target.get("expr") or target.get("rawSql") or ""
            found.append(PanelQuery(model["uid"], panel.get("title", ""), ds.get("type", ""), query))
    return found


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def variables_used(text: str) -> set[str]:
    return {a or b for a, b in _VARIABLE.findall(text)}


def expand(text: str, values: dict[str, str]) -> str:
    """Substitute $var / ${var} / ${var:format} the way Grafana would for a single value."""
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"no value for template variable ${name}")
        if match.group(0).endswith(":sqlstring}"):
            return "'" + values[name].replace("'", "''") + "'"
        return values[name]
    return _VARIABLE.sub(replace, text)


# --- provisioning datasources and publishing ------------------------------------

def datasource_models(prometheus_url: str, postgres_host: str, postgres_db: str, postgres_user: str,
                      postgres_password: str = "") -> list[dict]:
    """The two datasources the dashboards reference, by fixed uid."""
    return [
        {"uid": PROMETHEUS_UID, "name": "Reformspor Prometheus", "type": "prometheus", "access": "proxy",
         "url": prometheus_url, "isDefault": True, "jsonData": {"timeInterval": "15s"}},
        {"uid": POSTGRES_UID, "name": "Reformspor budsjett (PostgreSQL)", "type": "grafana-postgresql-datasource",
         "access": "proxy", "url": postgres_host, "user": postgres_user,
         "jsonData": {"database": postgres_db, "sslmode": "disable", "postgresVersion": 1500},
         "secureJsonData": {"password": postgres_password} if postgres_password else {}},
    ]


@dataclass
class PushReport:
    datasources_created: list[str]
    datasources_present: list[str]
    dashboards: list[str]
    folder_created: bool


def push(api, dashboards: dict[str, dict], datasources: list[dict]) -> PushReport:
    """Publish dashboards into the Reformspor folder; create missing datasources.

    Idempotent: datasources are looked up by uid and left alone when present
    (an operator may have tuned them); dashboards are saved with their fixed
    uid and overwrite=True, so a second push updates, never duplicates.
    """
    from grafana_client.client import GrafanaClientError

    report = PushReport([], [], [], False)
    for model in datasources:
        try:
            api.datasource.get_datasource_by_uid(model["uid"])
            report.datasources_present.append(model["uid"])
        except GrafanaClientError as error:
            if error.status_code != 404:
                raise
            api.datasource.create_datasource(model)
            report.datasources_created.append(model["uid"])
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as error:
        if error.status_code != 404:
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        report.folder_created = True
    for model in dashboards.values():
        body = {k: v for k, v in model.items() if k not in ("id", "version")}
        api.dashboard.update_dashboard({"dashboard": body, "folderUid": FOLDER_UID, "overwrite": True,
                                        "message": "reformspor grafana push"})
        report.dashboards.append(model["uid"])
    return report


# --- CLI --------------------------------------------------------------------------

@click.group(cls=HelpGroup, short_help="Grafana dashboards: build the JSON, or push them to a running Grafana",
             help="The four dashboards are code: `build` writes their JSON, `push` publishes them to a running "
                  "Grafana over its HTTP API.")
def grafana() -> None:
    pass


@grafana.command("build", short_help="regenerate deploy/grafana/dashboards/*.json from code",
                 help="Render the dashboards from code (Grafana's foundation SDK) into JSON files that Grafana's "
                      "provisioning loads.")
@click.option("--out", metavar="DIR", help=f"output folder (default {DASHBOARD_DIR})")
def build_command(out: str | None) -> int:
    for path in build(Path(out) if out else DASHBOARD_DIR):
        print(path)
    return 0


@grafana.command("push", short_help="publish the dashboards (and missing datasources) to Grafana over its HTTP API",
                 help="Idempotent: dashboards keep their uid and are overwritten; datasources are created only if "
                      "missing.")
@click.option("--url", required=True, metavar="URL", help="Grafana base URL, e.g. http://127.0.0.1:3000")
@click.option("--token", metavar="TOKEN", help="service account token (Editor or Admin); prefer --token-file or "
                              "$REFORMSPOR_GRAFANA_TOKEN, which stay out of `ps` and shell history")
@click.option("--token-file", metavar="FILE", help="read the token from this file (or $REFORMSPOR_GRAFANA_TOKEN_FILE)")
@click.option("--prometheus-url", default="http://127.0.0.1:9090", show_default=True,
              help="Prometheus URL as Grafana sees it")
@click.option("--postgres-host", default="127.0.0.1:5432", show_default=True,
              help="PostgreSQL host:port of budsjett's read model")
@click.option("--postgres-db", default="reformspor_budsjett", show_default=True, help="budsjett's database")
@click.option("--postgres-user", default="grafana_reader", show_default=True, help="a read-only role is enough")
@click.option("--postgres-password", default=None,
              help="prefer --postgres-password-file or $REFORMSPOR_GRAFANA_POSTGRES_PASSWORD")
@click.option("--postgres-password-file", metavar="FILE",
              help="read the password from this file (or $REFORMSPOR_GRAFANA_POSTGRES_PASSWORD_FILE)")
@click.option("--timeout-s", type=float, metavar="SECONDS", default=10.0, show_default=True,
              help="seconds per request to Grafana")
def push_command(url: str, token: str | None, token_file: str | None, prometheus_url: str, postgres_host: str,
                 postgres_db: str, postgres_user: str, postgres_password: str | None,
                 postgres_password_file: str | None, timeout_s: float) -> int:
    from grafana_client import GrafanaApi

    from services.shared.secretinput import secret_from
    from services.shared.usererror import UserError

    token = secret_from(token, token_file, "REFORMSPOR_GRAFANA_TOKEN")
    if not token:
        raise UserError("give the Grafana token with --token-file, REFORMSPOR_GRAFANA_TOKEN(_FILE) or --token")
    password = secret_from(postgres_password, postgres_password_file, "REFORMSPOR_GRAFANA_POSTGRES_PASSWORD")
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    datasources = datasource_models(prometheus_url, postgres_host, postgres_db, postgres_user, password or "")
    report = push(api, render(), datasources)
    print(f"datasources created: {', '.join(report.datasources_created) or 'none'}; "
          f"already present: {', '.join(report.datasources_present) or 'none'}")
    print(f"dashboards published to folder {FOLDER_TITLE!r}: {', '.join(report.dashboards)}")
    return 0


def register(cli: click.Group) -> None:
    cli.add_command(grafana)
