"""A private redis-server for ACL, TLS and dump tests, on a free loopback port.

The shared Redis of the test stack is never reconfigured: these tests start their
own server in a temporary folder and stop it afterwards.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A running private redis-server."""

    process: subprocess.Popen[bytes]
    port: int
    folder: Path
    tls: bool = False

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """Return a client URL for ``user``, with the test CA for TLS servers."""
        credentials = f"{user}:{password}@" if user else ""
        if not self.tls:
            return f"redis://{credentials}127.0.0.1:{self.port}/0"
        query = (
            f"ssl_ca_certs={self.folder}/ca.pem&ssl_certfile={self.folder}/client.pem"
            f"&ssl_keyfile={self.folder}/client.key"
        )
        return f"rediss://{credentials}127.0.0.1:{self.port}/0?{query}"

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_redis(
    folder: Path, *, aclfile: Path | None = None, tls: bool = False
) -> RedisServer:
    """Start redis-server in ``folder`` and wait until it accepts connections."""
    port = free_port()
    args = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--dir",
        str(folder),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dbfilename",
        "dump.rdb",
    ]
    if aclfile is not None:
        args += ["--aclfile", str(aclfile)]
    if tls:
        write_certificates(folder)
        args += [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(folder / "server.pem"),
            "--tls-key-file",
            str(folder / "server.key"),
            "--tls-ca-cert-file",
            str(folder / "ca.pem"),
            "--tls-auth-clients",
            "yes",
        ]
    else:
        args += ["--port", str(port)]
    log = (folder / "redis.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = RedisServer(process, port, folder, tls)
    _wait_listening(server)
    return server


def _wait_listening(server: RedisServer, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = (server.folder / "redis.log").read_text()
            raise RuntimeError(f"redis-server exited: {log[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError("redis-server did not listen in time")


def admin_client(server: RedisServer, user: str, password: str) -> redis.Redis:
    """Return a client authenticated as ``user``."""
    return redis.Redis.from_url(server.url(user, password), socket_timeout=5)


def write_certificates(folder: Path) -> None:
    """Write a test CA and server and client certificates for 127.0.0.1."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prefsync test CA")])
    now = dt.datetime.now(dt.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"prefsync {name}")])
            )
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        (folder / f"{name}.pem").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
        )
        (folder / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
