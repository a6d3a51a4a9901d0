"""deploy/compose.yaml and deploy/systemd: the two ways to run the whole system."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


def _compose_plugin() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


def test_compose_config_is_valid_for_docker_compose():
    command = _compose_plugin()
    if command is None:
        pytest.skip("the docker compose plugin is not installed here (no Docker engine either); "
                    "test_compose_wires_every_part_together checks the file's structure instead")
    result = subprocess.run([*command, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_compose_wires_every_part_together():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "ingest", "budsjett", "milepael", "prometheus", "alertmanager", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    for name in ("ingest", "budsjett", "milepael"):
        service = services[name]
        assert service["command"] == [name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        # Inside a container the web server must listen beyond loopback to be scraped.
        assert service["environment"]["REFORMSPOR_WEB_BIND"] == "0.0.0.0"
        assert service["environment"]["REFORMSPOR_KAFKA_BOOTSTRAP"] == "kafka:9092"
    # Every file a container mounts exists in the repository.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.compose.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in scrape["scrape_configs"]}
    for name in ("ingest", "budsjett", "milepael"):
        port = targets[f"reformspor-{name}"][0].rsplit(":", 1)[1]
        assert targets[f"reformspor-{name}"] == [f"{name}:{port}"], "Prometheus must scrape each service by its name"
    grafana_env = services["grafana"]["environment"]
    provisioning = (DEPLOY / "grafana/provisioning/datasources/reformspor.yml").read_text()
    for variable in ("REFORMSPOR_PROMETHEUS_URL", "REFORMSPOR_GRAFANA_PG_HOST", "REFORMSPOR_GRAFANA_PG_DATABASE"):
        assert f"${{{variable}}}" in provisioning and variable in grafana_env
    assert (DEPLOY / "Dockerfile").read_text().count("ENTRYPOINT") == 1


def test_systemd_units_are_valid():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert [u.name for u in units] == ["reformspor-kafka.service", "reformspor@.service"]
    for unit in units:
        result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        # The only complaint allowed: /opt/reformspor is not installed on this machine.
        problems = [line for line in (result.stdout + result.stderr).splitlines()
                    if line.strip() and "/opt/reformspor/.venv/bin/reformspor" not in line]
        assert not problems, f"{unit.name}: {problems}"
