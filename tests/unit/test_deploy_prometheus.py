"""deploy/prometheus and deploy/alertmanager: what on-call staff rely on.

promtool/amtool come from Debian's prometheus and prometheus-alertmanager
packages (deploy/local/setup-system.sh installs them).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's prometheus / prometheus-alertmanager packages (make setup)")
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _alert_rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def test_prometheus_configs_are_valid():
    for config in ("prometheus.yml", "prometheus.compose.yml"):
        _run(_tool("promtool"), "check", "config", config, cwd=PROMETHEUS)


def test_rule_files_are_valid():
    result = _run(_tool("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_pass():
    """The alerts fire when they should, with the numbers in their text, and stay quiet otherwise."""
    tests = sorted(str(p) for p in (PROMETHEUS / "tests").glob("*.yml"))
    assert len(tests) >= 4
    result = _run(_tool("promtool"), "test", "rules", *tests, cwd=PROMETHEUS)
    assert "FAILED" not in result.stdout


def test_scrape_config_names_the_three_services():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs == {"reformspor-ingest": ["127.0.0.1:8180"], "reformspor-budsjett": ["127.0.0.1:8181"],
                    "reformspor-milepael": ["127.0.0.1:8182"]}


REQUIRED_ALERTS = {
    "ReformsporLineOvercommitted", "ReformsporLineOverspent", "ReformsporLineExhaustedBeforeYearEnd",
    "ReformsporStageNeedsAdjustment", "ReformsporStageToleranceWarning", "ReformsporStageToleranceCritical",
    "ReformsporMinistryStoppedReporting", "ReformsporDeadLettersArriving", "ReformsporConsumerLagGrowing",
    "ReformsporReadModelStuck", "ReformsporServiceDown",
}
# What on call can fix, and so the only alerts that page.
ON_CALL_ALERTS = {"ReformsporServiceDown", "ReformsporReadModelStuck", "ReformsporConsumerLagGrowing",
                  "ReformsporDeadLettersArriving"}
TEAMS = {"vakt", "budsjett", "reform", "integrasjon"}
SETTINGS = PROMETHEUS / "rules" / "reformspor-settings.yml"
RUNBOOK_URL_TEMPLATE = '{{ with query "reformspor:runbook_info" }}{{ . | first | label "url" }}{{ end }}#'


def _runbook_anchors() -> set[str]:
    runbook = (DEPLOY / "RUNBOOK.md").read_text()
    return {re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", runbook, flags=re.M)}


def test_alerts_follow_the_conventions():
    rules = _alert_rules()
    assert {rule["alert"] for rule in rules} == REQUIRED_ALERTS
    anchors = _runbook_anchors()
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"Reformspor(?:[A-Z][a-z0-9]+)+", name), name
        labels = rule["labels"]
        assert labels["severity"] in {"critical", "warning", "info"}, name
        assert labels["team"] in TEAMS, f"{name}: team says who acts and routes the alert"
        assert rule.get("for"), f"{name} has no `for:` to ride out blips"
        annotations = rule["annotations"]
        assert annotations["summary"], name
        for field in ("description", "description_en"):
            assert "{{ $" in annotations[field], f"{name}: {field} needs the numbers"
        url = annotations["runbook_url"]
        assert url.startswith(RUNBOOK_URL_TEMPLATE), f"{name}: runbook_url must start with the configured base URL"
        assert url.removeprefix(RUNBOOK_URL_TEMPLATE) in anchors, f"{name}: RUNBOOK.md has no section for {url}"


def test_only_what_on_call_can_fix_is_critical():
    for rule in _alert_rules():
        if rule["labels"]["severity"] == "critical":
            assert rule["alert"] in ON_CALL_ALERTS, f"{rule['alert']} is critical but on call cannot fix it"


def test_money_is_formatted_by_one_template():
    """Every Norwegian description that shows money defines "nok" with the same text (one way to format)."""
    text = "\n".join(path.read_text() for path in RULE_FILES)
    definitions = {re.sub(r"\s+", " ", d) for d in re.findall(r'\{\{- define "nok" -\}\}(.*?)\{\{- end -\}\}', text, re.S)}
    assert len(definitions) == 1, definitions
    for rule in _alert_rules():
        description = rule["annotations"]["description"]
        if "NOK" in rule["annotations"]["description_en"]:
            assert 'template "nok"' in description and "NOK" not in description, rule["alert"]


def test_runbook_url_base_is_set_in_one_place(tmp_path):
    """An operator changes the URL in reformspor-settings.yml; every alert's runbook_url follows.

    The rule tests run again on a copy in which only the setting and the expected URLs differ.
    """
    default_url = yaml.safe_load(SETTINGS.read_text())["groups"][0]["rules"][0]["labels"]["url"]
    assert re.match(r"(https?|file)://", default_url), "the default runbook URL must be absolute"
    published = "https://wiki.example.org/reformspor/RUNBOOK.md"
    for folder in ("rules", "tests"):
        (tmp_path / folder).mkdir()
        for path in (PROMETHEUS / folder).glob("*.yml"):
            text = path.read_text()
            assert folder == "rules" or f"runbook_url: {default_url}#" in text, path.name
            (tmp_path / folder / path.name).write_text(text.replace(default_url, published))
    result = _run(_tool("promtool"), "test", "rules", *sorted(p.name for p in (tmp_path / "tests").glob("*.yml")),
                  cwd=tmp_path / "tests")
    assert "FAILED" not in result.stdout and published in (tmp_path / "tests" / "operations.yml").read_text()


def test_runbook_first_step_for_a_service_down_checks_the_services():
    runbook = (DEPLOY / "RUNBOOK.md").read_text()
    section = runbook.split("## ReformsporServiceDown", 1)[1].split("\n## ", 1)[0]
    first_step = re.search(r"^1\. (.+?)(?=^\d+\. |\Z)", section, flags=re.M | re.S).group(1)
    for port in (8180, 8181, 8182):
        assert f"{port}" in first_step
    assert "/readyz" in first_step and "systemctl status" in first_step
    assert "reformspor status" not in first_step  # that lists budget lines, not services


def test_alertmanager_config_is_valid():
    result = _run(_tool("amtool"), "check-config", str(ALERTMANAGER))
    assert "SUCCESS" in result.stdout


def _receiver(labels: dict[str, str]) -> str:
    result = _run(_tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                  *(f"{k}={v}" for k, v in labels.items()))
    return result.stdout.strip()


def _rule_labels(alertname: str) -> dict[str, str]:
    rule = next(r for r in _alert_rules() if r["alert"] == alertname)
    return {"alertname": alertname, **rule["labels"]}


@pytest.mark.parametrize("alertname", ["ReformsporLineOverspent", "ReformsporLineOvercommitted"])
def test_budget_alert_goes_to_the_ministrys_budget_owner(alertname):
    labels = {**_rule_labels(alertname), "line": "0-24", "ministry": "BFD", "phase": "utredning"}
    assert _receiver(labels) == "reformspor-budsjetteier-BFD"
    assert _receiver({**labels, "ministry": "KD"}) == "reformspor-budsjetteier-KD"


def test_line_level_budget_alert_goes_to_the_shared_lines_owner():
    labels = {**_rule_labels("ReformsporLineExhaustedBeforeYearEnd"), "line": "0-24"}
    assert _receiver(labels) == "reformspor-budsjett-felles"
    # A ministry code from before a reorganisation (KMD until 2021) has no receiver of its own.
    assert _receiver({**_rule_labels("ReformsporLineOverspent"), "line": "0-24", "ministry": "KMD"}) \
        == "reformspor-budsjett-felles"


def test_service_down_pages_on_call():
    labels = {**_rule_labels("ReformsporServiceDown"), "job": "reformspor-budsjett", "instance": "127.0.0.1:8181"}
    assert _receiver(labels) == "reformspor-vakt"


def test_only_what_on_call_can_fix_pages():
    for rule in _alert_rules():
        labels = {**_rule_labels(rule["alert"]), "line": "0-24", "ministry": "BFD", "reform": "r1"}
        paged = _receiver(labels) == "reformspor-vakt"
        assert paged == (rule["alert"] in ON_CALL_ALERTS), f"{rule['alert']}: paged={paged}"
    assert _receiver(_rule_labels("ReformsporStageToleranceCritical") | {"reform": "r1"}) == "reformspor-programkontor"


def test_budget_and_reform_alerts_repeat_daily_not_hourly():
    routes = {tuple(r["matchers"]): r for r in yaml.safe_load(ALERTMANAGER.read_text())["route"]["routes"]}
    for team in ("budsjett", "reform", "integrasjon"):
        assert routes[(f'team="{team}"',)]["repeat_interval"] == "24h", team


def test_every_current_ministry_has_a_budget_owner_receiver():
    from services.shared.ministries import MinistryRegistry

    registry = MinistryRegistry.from_csv_text(
        (Path(__file__).resolve().parents[2] / "services" / "shared" / "data" / "departementer.csv").read_text())
    current = [code for code in registry.codes() if registry.get(code).valid_to_year is None]
    assert len(current) >= 15
    for code in current:
        labels = {**_rule_labels("ReformsporLineOverspent"), "line": "0-24", "ministry": code}
        assert _receiver(labels) == f"reformspor-budsjetteier-{code}", code


@pytest.mark.parametrize("labels, receiver", [
    (["severity=info", "alertname=Something"], "reformspor-info"),
    (["alertname=NoSeverity"], "reformspor-default"),
])
def test_alertmanager_falls_back_by_severity(labels, receiver):
    result = _run(_tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.stdout.strip() == receiver


def test_alertmanager_groups_by_reform_and_line():
    route = yaml.safe_load(ALERTMANAGER.read_text())["route"]
    assert {"reform", "line"} <= set(route["group_by"])
