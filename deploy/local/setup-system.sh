#!/usr/bin/env bash
# Install the system packages the local stack and the tests need, if missing:
# Java + Maven (the Kafka broker), kcat (non-Python publisher test),
# Prometheus + Alertmanager (promtool/amtool, the PromQL test), PostgreSQL.
# Idempotent: does nothing when everything is there.
set -euo pipefail

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v kcat >/dev/null || need+=(kcat)
command -v promtool >/dev/null || need+=(prometheus)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
python3.11 --version >/dev/null 2>&1 || python3 -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || need+=(python3.11 python3.11-venv)

if [ ${#need[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
echo "system packages: installing ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts a default PostgreSQL cluster and Prometheus on install; the
# project runs its own on free ports, so stop the distribution's services.
if command -v systemctl >/dev/null && systemctl list-units >/dev/null 2>&1; then
  $SUDO systemctl disable --now prometheus prometheus-alertmanager postgresql >/dev/null 2>&1 || true
else
  for svc in prometheus prometheus-alertmanager postgresql; do $SUDO service "$svc" stop >/dev/null 2>&1 || true; done
fi
echo "system packages: done"
