"""What a process costs, read from /proc (Linux): CPU seconds, peak and current RSS."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Sequence

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")" field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _status_kb(pid: int, name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024


def rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024


def machine_load() -> dict:
    one, five, fifteen = os.getloadavg()
    return {"loadavg_1m": one, "loadavg_5m": five, "loadavg_15m": fifteen, "cpus": os.cpu_count()}


def run_measured(args: Sequence[str], env: dict[str, str] | None = None, timeout_s: float = 900.0,
                 log_path: Path | None = None) -> dict:
    """Run a command to completion; wall seconds, CPU seconds and peak RSS of that child (wait4)."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    start = time.perf_counter()
    try:
        process = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=log,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
    finally:
        if log_path:
            log.close()
    deadline = start + timeout_s
    chunks = []
    os.set_blocking(process.stdout.fileno(), False)
    while True:
        chunk = process.stdout.read()
        if chunk:
            chunks.append(chunk)
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            os.killpg(process.pid, 9)
            os.wait4(process.pid, 0)
            raise TimeoutError(f"{args[0]} … did not finish within {timeout_s:.0f}s")
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    rest = process.stdout.read()
    if rest:
        chunks.append(rest)
    process.stdout.close()
    return {
        "returncode": process.returncode,
        "seconds": time.perf_counter() - start,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "stdout": b"".join(chunks).decode("utf-8", "replace"),
    }
