"""A real Mosquitto running the production configuration (mosquitto/mosquitto.conf), rewritten only
for paths and ports, with accounts made by the project's own scripts (init-auth.sh, add-meter.sh)
and, optionally, the TLS listener with a certificate signed by a CA made here."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enerlink.devservices import MOSQUITTO_DIR, prepare_data_dir, secured_mosquitto_config
from tests.support.services import free_port, wait_port

SERVICE_PASSWORDS = {
    "MQTT_INGEST_PASSWORD": "ingest-secret",
    "MQTT_API_PASSWORD": "api-secret",
    "MQTT_SIM_PASSWORD": "sim-secret",
    "MQTT_OPERATOR_PASSWORD": "operator-secret",
    "MQTT_HEALTH_PASSWORD": "health-secret",
    "MQTT_HASS_PASSWORD": "hass-secret",
    "MQTT_HOMEASSISTANT_PASSWORD": "homeassistant-secret",
}


def _mosquitto() -> str:
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_test_ca(certs: Path, *, client_auth: bool = False) -> Path:
    """A CA and a server certificate for 127.0.0.1/localhost under ``certs``; returns the CA file.
    ``client_auth``: the certificate may also authenticate its holder as a client (Redis Cluster nodes
    present it to each other)."""
    certs.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("EnerLink test CA"))
        .issuer_name(_name("EnerLink test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
                + ([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = certs / "ca.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (certs / "server.crt").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(certs / "server.key", server_key)
    return ca_file


@dataclass
class SecuredBroker:
    """Mosquitto from the production file under ``root`` (standing in for the container's /mosquitto)."""

    root: Path
    tls: bool = True
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    ca_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def auth_dir(self) -> Path:
        return self.root / "auth"

    def script(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of the project's mosquitto/*.sh scripts against this broker's auth folder."""
        env = {**os.environ, "AUTH_DIR": str(self.auth_dir), **SERVICE_PASSWORDS}
        return subprocess.run(
            ["sh", str(MOSQUITTO_DIR / name), *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )

    def start(self) -> SecuredBroker:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self.script("init-auth.sh")
        includes = []
        if self.tls:
            self.ca_file = make_test_ca(self.root / "config" / "certs")
            includes.append(MOSQUITTO_DIR / "conf.d" / "tls.conf.example")
        conf = self.root / "mosquitto.conf"
        conf.write_text(
            secured_mosquitto_config(
                root=self.root, ports={1883: self.port, 8883: self.tls_port}, includes=includes
            ),
            encoding="utf-8",
        )
        prepare_data_dir(self.root)
        self.process = subprocess.Popen([_mosquitto(), "-c", str(conf)])
        wait_port(self.port)
        if self.tls:
            wait_port(self.tls_port)
        return self

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads the password and ACL files."""
        assert self.process is not None
        prepare_data_dir(self.root)
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        path = self.root / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""
