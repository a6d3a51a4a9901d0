"""Grafana dashboards as code: committed JSON matches the code, the structure
Grafana needs is there, and `reformspor grafana push` speaks Grafana's HTTP API
idempotently (against a recorded contract: no live Grafana here)."""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from services.cli import main as cli_main
from services.shared import grafana
from services.localstack.processes import free_port

FINANCE_DASHBOARDS = ("linjer-oversikt.json", "linje-detalj.json", "reformer.json")


def test_committed_dashboards_equal_the_generated_ones():
    """No drift: anyone editing JSON by hand (or the code without `reformspor grafana build`) fails here."""
    rendered = grafana.render()
    committed = {p.name for p in grafana.DASHBOARD_DIR.glob("*.json")}
    assert committed == set(rendered), "run `reformspor grafana build` and commit deploy/grafana/dashboards/"
    for name, model in rendered.items():
        on_disk = (grafana.DASHBOARD_DIR / name).read_text(encoding="utf-8")
        assert on_disk == grafana.dumps(model), f"{name} differs from the code: run `reformspor grafana build`"


def test_build_command_writes_the_four_dashboards(tmp_path):
    assert cli_main(["grafana", "build", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(grafana.DASHBOARDS)


def test_dashboard_structure():
    models = grafana.render()
    uids = [m["uid"] for m in models.values()]
    assert len(set(uids)) == len(uids) == 4
    known_datasources = {grafana.PROMETHEUS_UID, grafana.POSTGRES_UID}
    for name, model in models.items():
        panels = list(grafana.iter_panels(model))
        assert panels, name
        assert len({p["id"] for p in panels}) == len(panels), f"{name}: panel ids must be unique"
        defined: list[str] = []
        for variable in model.get("templating", {}).get("list", []):
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            # A variable may only refer to variables defined before it.
            assert grafana.variables_used(query) <= set(defined), f"{name}: ${variable['name']} uses later variables"
            assert variable["datasource"]["uid"] in known_datasources
            defined.append(variable["name"])
        for panel in panels:
            where = f"{name} / {panel.get('title')!r}"
            assert panel.get("title"), where
            assert panel["datasource"]["uid"] in known_datasources, where
            assert panel.get("targets"), f"{where} has no targets"
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(set(ref_ids)) == len(ref_ids), where
            for target in panel["targets"]:
                query = target.get("expr") or target.get("rawSql")
                assert query, f"{where}: empty query"
                assert target["datasource"]["uid"] in known_datasources, where
                unresolved = grafana.variables_used(query) - set(defined) - grafana.BUILTIN_VARIABLES
                assert not unresolved, f"{where}: undefined template variables {unresolved}"
            grid = panel["gridPos"]
            assert 0 < grid["w"] <= 24 and grid["x"] + grid["w"] <= 24, where


def test_finance_dashboards_speak_norwegian():
    models = grafana.render()
    for name in FINANCE_DASHBOARDS:
        titles = " ".join(p["title"] for p in grafana.iter_panels(models[name]))
        for english in ("Committed", "Spent", "Available", "Appropriated", "Stage"):
            assert english not in titles, f"{name}: {english!r} in a finance dashboard"
    overview = json.dumps(models["linjer-oversikt.json"], ensure_ascii=False)
    for term in ("Bevilget", "Forpliktet", "Utbetalt", "Disponibelt", "Utnyttelse"):
        assert term in overview


def _promtool() -> str:
    return shutil.which("promtool") or pytest.fail("promtool missing: make setup installs Debian's prometheus")


def test_every_promql_query_parses(tmp_path):
    """promtool checks each panel's PromQL (variables filled in) without a running Prometheus."""
    promtool = _promtool()
    values = {"fiscal_year": ".*", "line": "0-24", "ministry": ".*", "reform": "r1", "__rate_interval": "1m",
              "__range": "1h"}
    rules = []
    for model in grafana.render().values():
        for query in grafana.panel_queries(model):
            if query.datasource_type == "prometheus":
                rules.append({"record": f"dashboard:check_{len(rules)}", "expr": grafana.expand(query.query, values)})
    for model in grafana.render().values():
        for variable in model.get("templating", {}).get("list", []):
            # label_values() is Grafana's own, not PromQL: check its selector.
            selector = variable["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0]
            rules.append({"record": f"dashboard:check_{len(rules)}", "expr": grafana.expand(selector, values)})
    assert len(rules) > 40
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


BUDGET_DASHBOARDS = ("linjer-oversikt.json", "linje-detalj.json")


def test_budget_dashboards_select_a_fiscal_year_defaulting_to_all():
    models = grafana.render()
    for name in BUDGET_DASHBOARDS:
        variables = models[name]["templating"]["list"]
        year = variables[0]
        assert (year["name"], year["label"]) == ("fiscal_year", "Budsjettår"), name
        assert year["query"]["query"] == "label_values(reformspor_budsjett_bevilget_ore, fiscal_year)"
        assert year["includeAll"] and year["allValue"] == ".*" and year["current"]["value"] == "$__all", name
        budget_queries = [q.query for q in grafana.panel_queries(models[name])
                          if q.datasource_type == "prometheus" and "reformspor_budsjett" in q.query]
        budget_queries += [v["query"]["query"] for v in variables[1:]]
        assert budget_queries, name
        for query in budget_queries:
            assert 'fiscal_year=~"$fiscal_year"' in query, f"{name}: {query} ignores the selected fiscal year"


def test_budget_panels_work_with_and_without_the_fiscal_year_label(tmp_path):
    """"All" shows series that have no fiscal_year label yet; a chosen year shows only that year's money."""
    overview = grafana.render()["linjer-oversikt.json"]
    total = next(q.query for q in grafana.panel_queries(overview) if q.panel_title == "Bevilget i alt")
    series = 'reformspor_budsjett_bevilget_ore{line="0-24",ministry="BFD",phase="utredning"%s}'
    test = {"evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": [{"series": series % "", "values": "250000000x5"}],
         "promql_expr_test": [{"expr": grafana.expand(total, {"fiscal_year": ".*", "ministry": ".*"}),
                               "eval_time": "2m", "exp_samples": [{"labels": "{}", "value": 2500000}]}]},
        {"interval": "1m", "input_series": [
            {"series": series % ',fiscal_year="2026"', "values": "250000000x5"},
            {"series": series % ',fiscal_year="2025"', "values": "100000000x5"}],
         "promql_expr_test": [{"expr": grafana.expand(total, {"fiscal_year": "2026", "ministry": ".*"}),
                               "eval_time": "2m", "exp_samples": [{"labels": "{}", "value": 2500000}]}]},
    ]}
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(test))
    result = subprocess.run([_promtool(), "test", "rules", "panels.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _override(panel: dict, column: str, property_id: str):
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"] == {"id": "byName", "options": column}:
            for prop in override["properties"]:
                if prop["id"] == property_id:
                    return prop["value"]
    raise AssertionError(f"{panel['title']}: no {property_id} for column {column!r}")


def _mapped(mappings: list[dict]) -> dict[str, str]:
    return {value: result["text"] for m in mappings if m["type"] == "value" for value, result in m["options"].items()}


def test_tolerance_levels_show_as_words():
    panels = {p["title"]: p for p in grafana.iter_panels(grafana.render()["reformer.json"])}
    tolerance = panels["Toleranse per trinn"]
    assert _mapped(_override(tolerance, "Nivå", "mappings")) == {"0": "innenfor", "1": "varsel", "2": "kritisk"}
    assert _mapped(_override(tolerance, "Toleranse", "mappings")) == {"time": "tid", "cost": "kostnad"}
    assert _mapped(_override(panels["Prognose mot plan"], "Trenger justering", "mappings")) == {"0": "nei", "1": "ja"}


def test_finance_tables_name_their_columns_in_norwegian():
    for name in FINANCE_DASHBOARDS:
        for panel in grafana.iter_panels(grafana.render()[name]):
            organize = [t["options"] for t in panel.get("transformations", []) if t["id"] == "organize"]
            if not organize:
                continue
            rename = organize[0]["renameByName"]
            # Every label column shown (indexByName) gets a Norwegian title.
            for label in organize[0]["indexByName"]:
                assert rename.get(label) == grafana.LABEL_TITLES_NB[label], f"{name} / {panel['title']}: {label}"
            assert not {"line", "ministry", "phase", "stage", "dimension"} & set(rename.values())


def test_overview_shows_omdisponert_beside_the_other_figures():
    overview = grafana.render()["linjer-oversikt.json"]
    stats = [p for p in grafana.iter_panels(overview) if p["type"] == "stat" and p["title"].endswith(" i alt")]
    assert [p["title"] for p in stats] == ["Bevilget i alt", "Omdisponert i alt", "Forpliktet i alt", "Utbetalt i alt",
                                           "Disponibelt i alt"]
    assert "reformspor_budsjett_omdisponert_ore" in stats[1]["targets"][0]["expr"]
    assert sum(p["gridPos"]["w"] for p in stats) == 24  # one row


def test_audit_trail_query_reads_the_budget_read_model():
    detail = grafana.render()["linje-detalj.json"]
    sql = [q for q in grafana.panel_queries(detail) if q.datasource_type == "grafana-postgresql-datasource"]
    assert [q.panel_title for q in sql] == ["Hendelser bak tallene"]
    expanded = grafana.expand(sql[0].query, {"line": "0-24'; drop table x; --", "ministry": "BFD|KD"})
    # ${line:sqlstring} quotes and escapes: a line id can never break out of the string.
    assert "line_id = '0-24''; drop table x; --'" in expanded
    assert "x.ministry ~ '^(BFD|KD)$'" in expanded
    assert f"{grafana.BUDGET_EFFECT_TABLE} x JOIN {grafana.BUDGET_EVENT_TABLE} e" in expanded


def test_provisioning_points_at_the_fixed_uids():
    root = grafana.GRAFANA_DIR / "provisioning"
    datasources = yaml.safe_load((root / "datasources" / "reformspor.yml").read_text())["datasources"]
    assert {d["uid"]: d["type"] for d in datasources} == {
        grafana.PROMETHEUS_UID: "prometheus", grafana.POSTGRES_UID: "grafana-postgresql-datasource"}
    providers = yaml.safe_load((root / "dashboards" / "reformspor.yml").read_text())["providers"]
    assert providers[0]["folderUid"] == grafana.FOLDER_UID


# --- push, against a recorded Grafana HTTP contract -------------------------------

class FakeGrafana(ThreadingHTTPServer):
    """Answers like Grafana 10/11's HTTP API for the calls push makes, and records them."""

    def __init__(self, port: int):
        super().__init__(("127.0.0.1", port), _Handler)
        self.requests: list[dict] = []
        self.datasources: dict[str, dict] = {}
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.fail_status: int | None = None  # answer every request with this status


class _Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _record(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append({"method": self.command, "path": self.path, "body": body,
                                     "authorization": self.headers.get("Authorization")})
        return body

    def do_GET(self):
        self._record()
        state = self.server
        if state.fail_status:
            return self._reply(state.fail_status, {"message": "database is locked"})
        if self.path.startswith("/api/datasources/uid/"):
            uid = self.path.rsplit("/", 1)[1]
            return self._reply(200, state.datasources[uid]) if uid in state.datasources else \
                self._reply(404, {"message": "Data source not found"})
        if self.path.startswith("/api/folders/"):
            uid = self.path.rsplit("/", 1)[1]
            return self._reply(200, state.folders[uid]) if uid in state.folders else \
                self._reply(404, {"message": "folder not found", "status": "not-found"})
        self._reply(404, {"message": "Not found"})

    def do_POST(self):
        body = self._record()
        state = self.server
        if self.path == "/api/datasources":
            if body["uid"] in state.datasources:
                return self._reply(409, {"message": "data source with the same uid already exists"})
            state.datasources[body["uid"]] = {**body, "id": len(state.datasources) + 1}
            return self._reply(200, {"message": "Datasource added", "id": len(state.datasources), "datasource": body})
        if self.path == "/api/folders":
            state.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": len(state.folders) + 1}
            return self._reply(200, state.folders[body["uid"]])
        if self.path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            if uid in state.dashboards and not body.get("overwrite"):
                return self._reply(412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"})
            version = state.dashboards.get(uid, {}).get("version", 0) + 1
            state.dashboards[uid] = {"dashboard": body["dashboard"], "folderUid": body.get("folderUid"), "version": version}
            return self._reply(200, {"status": "success", "uid": uid, "version": version, "url": f"/d/{uid}"})
        self._reply(404, {"message": "Not found"})


@pytest.fixture
def fake_grafana():
    server = FakeGrafana(free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _push(server: FakeGrafana) -> int:
    return cli_main(["grafana", "push", "--url", f"http://127.0.0.1:{server.server_address[1]}",
                     "--token", "glsa_test_token", "--prometheus-url", "http://prometheus:9090",
                     "--postgres-host", "db:5432", "--postgres-db", "budsjett", "--postgres-user", "reader"])


def test_push_publishes_dashboards_and_missing_datasources(fake_grafana, capsys):
    assert _push(fake_grafana) == 0
    calls = [(r["method"], r["path"]) for r in fake_grafana.requests]
    assert calls == [
        ("GET", f"/api/datasources/uid/{grafana.PROMETHEUS_UID}"), ("POST", "/api/datasources"),
        ("GET", f"/api/datasources/uid/{grafana.POSTGRES_UID}"), ("POST", "/api/datasources"),
        ("GET", f"/api/folders/{grafana.FOLDER_UID}"), ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * 4,
    ]
    assert {r["authorization"] for r in fake_grafana.requests} == {"Bearer glsa_test_token"}
    created = {uid: ds for uid, ds in fake_grafana.datasources.items()}
    assert created[grafana.PROMETHEUS_UID]["url"] == "http://prometheus:9090"
    assert created[grafana.POSTGRES_UID]["jsonData"]["database"] == "budsjett"
    posted = [r["body"] for r in fake_grafana.requests if r["path"] == "/api/dashboards/db"]
    assert all(body["overwrite"] is True and body["folderUid"] == grafana.FOLDER_UID for body in posted)
    assert all("id" not in body["dashboard"] for body in posted)
    assert [body["dashboard"]["uid"] for body in posted] == [m["uid"] for m in grafana.render().values()]
    assert posted[0]["dashboard"]["panels"] == grafana.render()["linjer-oversikt.json"]["panels"]
    assert "dashboards published" in capsys.readouterr().out


def test_second_push_updates_in_place(fake_grafana):
    assert _push(fake_grafana) == 0
    first = len(fake_grafana.requests)
    assert _push(fake_grafana) == 0
    second = [(r["method"], r["path"]) for r in fake_grafana.requests[first:]]
    # Datasources and folder exist now: looked up, not created again.
    assert ("POST", "/api/datasources") not in second and ("POST", "/api/folders") not in second
    assert second.count(("POST", "/api/dashboards/db")) == 4
    # Same uids overwritten: still four dashboards, each at version 2.
    assert {uid: d["version"] for uid, d in fake_grafana.dashboards.items()} == {
        m["uid"]: 2 for m in grafana.render().values()}
    assert len(fake_grafana.datasources) == 2 and len(fake_grafana.folders) == 1


def test_push_stops_on_an_unexpected_grafana_error(fake_grafana, capsys):
    fake_grafana.fail_status = 500
    assert _push(fake_grafana) == 1  # the CLI's one-line error, no traceback
    assert "error: GrafanaServerError: Server Error 500" in capsys.readouterr().err
    # A lookup that fails is not taken for "missing": nothing is created or published.
    assert not fake_grafana.datasources and not fake_grafana.dashboards


def test_push_takes_its_token_from_the_environment(fake_grafana, monkeypatch, capsys):
    from services.cli import main as cli_main

    monkeypatch.setenv("REFORMSPOR_GRAFANA_TOKEN", "glsa_env_token")  # not on the command line, not in `ps`
    assert cli_main(["grafana", "push", "--url", f"http://127.0.0.1:{fake_grafana.server_address[1]}"]) == 0
    assert {r["authorization"] for r in fake_grafana.requests} == {"Bearer glsa_env_token"}
    monkeypatch.delenv("REFORMSPOR_GRAFANA_TOKEN")
    monkeypatch.delenv("REFORMSPOR_GRAFANA_TOKEN_FILE", raising=False)
    assert cli_main(["grafana", "push", "--url", "http://127.0.0.1:9"]) == 2
    assert "give the Grafana token with --token-file" in capsys.readouterr().err
