"""Run kcat with a librdkafka that can authenticate to Kafka 4.x with SCRAM.

librdkafka before 2.6.1 sends a SCRAM nonce that Kafka 4.x rejects
(confluentinc/librdkafka#4895), and Debian 12's kcat links 2.0.2. When the
system library is older, kcat is pointed at the librdkafka that the
confluent-kafka wheel bundles (the same one Quix Streams uses).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

MIN_LIBRDKAFKA = (2, 6, 1)


def _librdkafka_version(env: dict[str, str]) -> tuple[int, ...]:
    banner = subprocess.run(["kcat", "-V"], capture_output=True, text=True, env=env, timeout=10).stdout
    found = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", banner)
    return tuple(int(part) for part in found.groups()) if found else (0,)


@lru_cache(maxsize=1)
def kcat_env() -> dict[str, str]:
    """The environment for kcat; raises RuntimeError when no usable librdkafka is found."""
    if shutil.which("kcat") is None:
        raise RuntimeError("kcat is not installed (Debian package kcat)")
    env = dict(os.environ)
    if _librdkafka_version(env) >= MIN_LIBRDKAFKA:
        return env
    import confluent_kafka

    bundled = sorted((Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs").glob("librdkafka*.so*"))
    if not bundled:
        raise RuntimeError(f"kcat's librdkafka is older than {MIN_LIBRDKAFKA} and confluent-kafka bundles none")
    # One fixed directory per user and library: sessions share it, nothing accumulates in /tmp.
    digest = hashlib.sha256(str(bundled[0]).encode()).hexdigest()[:12]
    shim = Path(tempfile.gettempdir()) / f"reformspor-librdkafka-{os.getuid()}-{digest}"
    shim.mkdir(mode=0o700, exist_ok=True)
    link = shim / "librdkafka.so.1"
    try:
        link.symlink_to(bundled[0])
    except FileExistsError:  # another session made it: the same library
        pass
    env["LD_LIBRARY_PATH"] = f"{shim}:{env.get('LD_LIBRARY_PATH', '')}"
    if _librdkafka_version(env) < MIN_LIBRDKAFKA:
        raise RuntimeError("could not point kcat at a librdkafka >= 2.6.1")
    return env


def kcat(*arguments: str, stdin: bytes = b"", timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    """kcat with these arguments (no secrets here: pass them in a -F file)."""
    return subprocess.run(["kcat", *arguments], input=stdin, capture_output=True, env=kcat_env(), timeout=timeout_s)
