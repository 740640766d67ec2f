"""A throwaway CA and a server certificate for 127.0.0.1, for the secured local broker and Redis
(stream/devtools/localstack.py) in tests. Made with the `openssl` CLI."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class TlsError(RuntimeError):
    pass


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA and a server certificate signed by it (see `make_test_tls`)."""

    ca_cert: Path  # what clients trust (KAFKA_SSL_CAFILE, `ssl_ca_certs` in REDIS_URL)
    server_cert: Path  # the server's certificate followed by the CA's
    server_key: Path  # the server's private key, PKCS#8, unencrypted
    server_keystore: Path  # key + certificate chain in one file (Kafka's `ssl.keystore.type=PEM`)


_SERVER_EXTENSIONS = """basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_test_tls(directory: Path, days: int = 2) -> TlsFiles:
    """A new CA and a server certificate for 127.0.0.1 / localhost, made with the `openssl` CLI.

    For tests and local runs only: the CA key stays in `directory` (then useless: nothing else
    trusts this CA) and nothing is encrypted."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsError("openssl not found: needed to make test certificates (Debian package openssl)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "server.ext"
    extensions.write_text(_SERVER_EXTENSIONS)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_cert), "-days", str(days),
         "-subj", "/CN=kpi-stream test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", str(days), "-extfile", str(extensions)],
    ]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise TlsError(f"{' '.join(command[:3])} failed:\n{done.stderr}")
    chain = cert.read_text() + ca_cert.read_text()
    (directory / "server-chain.pem").write_text(chain)
    keystore = directory / "server-keystore.pem"
    keystore.write_text(key.read_text() + chain)
    for private in (ca_key, key, keystore):
        private.chmod(0o600)
    return TlsFiles(ca_cert=ca_cert, server_cert=directory / "server-chain.pem", server_key=key,
                    server_keystore=keystore)
