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
    "ReformsporServiceDown",
}


def test_alerts_follow_the_conventions():
    rules = _alert_rules()
    assert {rule["alert"] for rule in rules} == REQUIRED_ALERTS
    runbook = (DEPLOY / "RUNBOOK.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
               for heading in re.findall(r"^#+ (.+)$", runbook, flags=re.M)}
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"Reformspor(?:[A-Z][a-z0-9]+)+", name), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule.get("for"), f"{name} has no `for:` to ride out blips"
        annotations = rule["annotations"]
        assert annotations["summary"] and "{{ $" in annotations["description"], f"{name}: description needs the numbers"
        url = annotations["runbook_url"]
        assert url.startswith("deploy/RUNBOOK.md#"), name
        assert url.split("#", 1)[1] in anchors, f"{name}: RUNBOOK.md has no section for #{url.split('#', 1)[1]}"


def test_alertmanager_config_is_valid():
    result = _run(_tool("amtool"), "check-config", str(ALERTMANAGER))
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("labels, receiver", [
    (["severity=critical", "alertname=ReformsporLineOverspent", "line=0-24"], "reformspor-vakt"),
    (["severity=warning", "alertname=ReformsporStageNeedsAdjustment", "reform=r1"], "reformspor-okonomi"),
    (["severity=info", "alertname=Something"], "reformspor-info"),
    (["alertname=NoSeverity"], "reformspor-default"),
])
def test_alertmanager_routes_by_severity(labels, receiver):
    result = _run(_tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.stdout.strip() == receiver


def test_alertmanager_groups_by_reform_and_line():
    route = yaml.safe_load(ALERTMANAGER.read_text())["route"]
    assert {"reform", "line"} <= set(route["group_by"])
