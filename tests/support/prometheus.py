"""A throwaway Prometheus (Debian's package) scraping given targets, for integration tests.

Runs /usr/bin/prometheus on a free loopback port with a generated config: the
project's own rule files, a short scrape and evaluation interval, a temporary
TSDB. Stopped by pid.
"""
from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from services.localstack.processes import free_port, http_ok, spawn, stop_pid, wait_until


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        raise RuntimeError("prometheus not found: install Debian's prometheus package (make setup does)")
    return found


class PrometheusQueryError(RuntimeError):
    pass


class LocalPrometheus:
    def __init__(self, root: Path, jobs: dict[str, list[str]], rule_files: list[Path] = (),
                 scrape_interval_s: int = 1):
        self.root = root
        self.jobs = jobs
        self.rule_files = list(rule_files)
        self.scrape_interval_s = scrape_interval_s
        self.port = free_port()
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "prometheus.log"

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        rules_dir = self.root / "rules"
        rules_dir.mkdir(exist_ok=True)
        for rule_file in self.rule_files:
            shutil.copy(rule_file, rules_dir / rule_file.name)
        interval = f"{self.scrape_interval_s}s"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "rule_files": [str(rules_dir / "*.yml")],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                               for job, targets in self.jobs.items()],
        }
        path = self.root / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, timeout_s: float = 30.0) -> "LocalPrometheus":
        config = self.write_config()
        process = spawn([
            prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ], self.log_path)
        self.pid = process.pid
        try:
            wait_until(lambda: process.poll() is None and http_ok(f"{self.url}/-/ready"), timeout_s,
                       f"Prometheus at {self.url}")
        except TimeoutError as error:
            self.stop()
            raise RuntimeError(f"{error}\n{self.log_path.read_text(errors='replace')[-2000:]}") from None
        return self

    def query(self, expr: str) -> list[dict]:
        """Instant query; the result vector (or [] when empty). Raises on a PromQL error."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
            raise PrometheusQueryError(f"{expr!r}: {body.get('error', error)}") from None
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{expr!r}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def values(self, expr: str, *labels: str) -> dict[tuple, float]:
        """{(label values…): value} for an instant query."""
        return {tuple(s["metric"].get(label, "") for label in labels): float(s["value"][1]) for s in self.query(expr)}

    def target_health(self) -> dict[str, str]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as response:
            active = json.loads(response.read())["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}

    def stop(self) -> None:
        if self.pid is not None:
            stop_pid(self.pid, 15)
            self.pid = None
