"""A CA and a broker certificate for the local broker's SASL_SSL listener, made with the JDK's keytool.

keytool ships with the Java that runs Kafka, so TLS needs nothing else.
Its passwords go through the environment (`-storepass:env`), never argv.
Clients verify the broker against `ca.pem` (librdkafka `ssl.ca.location`,
kafka-python `ssl_cafile`); the certificate names 127.0.0.1 and localhost.
"""
from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from services.shared.kafka_security import read_private_file, write_private_file

VALIDITY_DAYS = "825"
BROKER_NAMES = "SAN=IP:127.0.0.1,DNS:localhost"
_PASSWORD_VARIABLE = "REFORMSPOR_KEYSTORE_PASSWORD"


@dataclass(frozen=True)
class BrokerTls:
    ca_pem: Path  # what clients trust
    keystore: Path  # PKCS12: the broker's key and certificate chain
    keystore_password_file: Path  # 0600

    @property
    def keystore_password(self) -> str:
        return read_private_file(self.keystore_password_file).strip()


def ensure_broker_tls(directory: Path) -> BrokerTls:
    """Create the CA and the broker's keystore once; later calls reuse them."""
    tls = BrokerTls(directory / "ca.pem", directory / "broker.p12", directory / "keystore.password")
    if tls.ca_pem.exists() and tls.keystore.exists() and tls.keystore_password_file.exists():
        return tls
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in (tls.ca_pem, tls.keystore, directory / "ca.p12", directory / "broker.csr", directory / "broker.pem"):
        stale.unlink(missing_ok=True)
    write_private_file(tls.keystore_password_file, secrets.token_urlsafe(24) + "\n")
    env = {**os.environ, _PASSWORD_VARIABLE: tls.keystore_password}
    ca_store, csr, signed = directory / "ca.p12", directory / "broker.csr", directory / "broker.pem"
    store = ["-storetype", "PKCS12", "-storepass:env", _PASSWORD_VARIABLE]
    steps = [
        ["-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=Reformspor local Kafka CA",
         "-ext", "bc:c", "-validity", VALIDITY_DAYS, "-keystore", str(ca_store), *store],
        ["-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), "-file", str(tls.ca_pem), *store],
        ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=127.0.0.1",
         "-ext", BROKER_NAMES, "-validity", VALIDITY_DAYS, "-keystore", str(tls.keystore), *store],
        ["-certreq", "-alias", "broker", "-keystore", str(tls.keystore), "-file", str(csr), *store],
        ["-gencert", "-rfc", "-alias", "ca", "-keystore", str(ca_store), "-infile", str(csr), "-outfile", str(signed),
         "-ext", BROKER_NAMES, "-validity", VALIDITY_DAYS, *store],
        ["-importcert", "-noprompt", "-alias", "ca", "-file", str(tls.ca_pem), "-keystore", str(tls.keystore), *store],
        ["-importcert", "-alias", "broker", "-file", str(signed), "-keystore", str(tls.keystore), *store],
    ]
    for step in steps:
        result = subprocess.run(["keytool", *step], env=env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"keytool {step[0]} failed: {result.stdout}{result.stderr}")
    os.chmod(tls.keystore, 0o600)
    os.chmod(ca_store, 0o600)  # the CA's private key: only the stack's owner may sign
    csr.unlink(missing_ok=True)
    return tls
