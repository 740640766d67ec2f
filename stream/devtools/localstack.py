"""The project's own local services: an Apache Kafka 4.x broker (KRaft, single node, controller +
broker) from the Maven Central jars fetched by scripts/setup.sh, and Debian's redis-server.

Each starts on free ports chosen at run time, in its own process group, and stops by pid.
Standard library only: tests, the demo and the benchmarks all use it.

Secured variants, for tests: `make_test_tls` (stream/devtools/tls.py) makes a throwaway CA and a
server certificate for 127.0.0.1; `KafkaBroker(tls=..., scram_users=...)` adds a SASL_SSL listener (SCRAM-SHA-512, users
created when the storage is formatted) next to its PLAINTEXT one, and `RedisServer(tls=...,
username=..., password=...)` serves TLS only, to one ACL user.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from stream.devtools.tls import TlsFiles

KAFKA_VERSION = "4.1.1"


class LocalStackError(RuntimeError):
    """A local service could not be started."""


def cache_dir() -> Path:
    return Path(os.environ.get("KPI_STREAM_CACHE", Path.home() / ".cache" / "kpi-stream"))


def kafka_libs() -> Path:
    libs = cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    if not libs.is_dir() or not any(libs.glob("kafka_2.13-*.jar")):
        raise LocalStackError(f"Kafka {KAFKA_VERSION} jars not found in {libs}: run scripts/setup.sh first")
    return libs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_pid(pid: int | None, timeout: float = 20.0) -> None:
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap if it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class KafkaBroker:
    """A single-node KRaft broker. `extra_properties` add or override server.properties lines.

    With `tls` it also has a SASL_SSL listener on `sasl_ssl_port` (SCRAM-SHA-512 only; clients
    use `sasl_ssl_bootstrap`) whose users are `scram_users` (name -> password), created when the
    storage is formatted. The controller, inter-broker traffic and `bootstrap` stay PLAINTEXT on
    127.0.0.1: a test's own setup may use them, the client under test gets only the secured one."""

    port: int = 0
    controller_port: int = 0
    run_dir: Path | None = None
    pid: int | None = None
    extra_properties: dict[str, str] = field(default_factory=dict)
    heap: str = "768m"
    tls: TlsFiles | None = None
    scram_users: dict[str, str] = field(default_factory=dict, repr=False)
    sasl_ssl_port: int = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        if self.tls is None:
            raise LocalStackError("this broker has no SASL_SSL listener (start it with tls=...)")
        return f"127.0.0.1:{self.sasl_ssl_port}"

    def _properties(self) -> str:
        assert self.run_dir is not None
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}", f"CONTROLLER://127.0.0.1:{self.controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        secured: dict[str, str] = {}
        if self.tls is not None:
            listeners.append(f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}")
            advertised.append(f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}")
            protocols.append("SASL_SSL:SASL_SSL")
            secured = {
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
                "listener.name.sasl_ssl.ssl.keystore.location": str(self.tls.server_keystore),
                "listener.name.sasl_ssl.ssl.client.auth": "none",
            }
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(protocols),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.run_dir / "data"),
            "num.partitions": "8",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.cleaner.backoff.ms": "1000",
            **secured,
        }
        props.update(self.extra_properties)
        return "".join(f"{key}={value}\n" for key, value in props.items())

    def start(self, run_dir: Path, timeout: float = 90.0) -> "KafkaBroker":
        libs = kafka_libs()
        java = shutil.which("java")
        if java is None:
            raise LocalStackError("java not found: Kafka needs a JRE (Java 17)")
        # absolute: redis changes into `dir` before opening `logfile`, and the demo passes run/demo
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        if self.tls is not None:
            if not self.scram_users:
                raise LocalStackError("a SASL_SSL listener needs at least one SCRAM user (scram_users)")
            self.sasl_ssl_port = self.sasl_ssl_port or free_port()
        config = self.run_dir / "server.properties"
        config.write_text(self._properties())
        (self.run_dir / "log4j2.yaml").write_text(_LOG4J2.format(log=self.run_dir / "server.log"))
        classpath = f"{libs}/*"
        if not (self.run_dir / "data" / "meta.properties").exists():
            cluster_id = _cluster_id()
            # SCRAM users exist in KRaft metadata from the start; the passwords appear only on
            # this command line (briefly, to local users) and never in a file or a log.
            scram = [arg for name, password in self.scram_users.items()
                     for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")]
            formatted = subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                 *scram],
                capture_output=True, text=True, timeout=120,
            )
            if formatted.returncode != 0:
                output = f"{formatted.stdout}\n{formatted.stderr}"
                for password in self.scram_users.values():
                    output = output.replace(password, "****")
                raise LocalStackError(f"kafka storage format failed:\n{output}")
        log = open(self.run_dir / "kafka.log", "ab")
        process = subprocess.Popen(
            [java, f"-Xmx{self.heap}", "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={self.run_dir / 'log4j2.yaml'}",
             "-cp", classpath, "kafka.Kafka", str(config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = process.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LocalStackError(f"kafka exited with {process.returncode}:\n{_tail(self.run_dir / 'kafka.log')}")
            if (_port_open(self.port) and _kafka_answers(self.port)
                    and (self.tls is None or _port_open(self.sasl_ssl_port))):
                return self
            time.sleep(0.3)
        self.stop()
        raise LocalStackError(f"kafka did not accept clients within {timeout:.0f}s:\n{_tail(self.run_dir / 'kafka.log')}")

    def stop(self) -> None:
        _stop_pid(self.pid)
        self.pid = None

    def restart(self) -> "KafkaBroker":
        assert self.run_dir is not None
        self.stop()
        return self.start(self.run_dir)

    def set_producer_quota(self, client_id: str, bytes_per_second: int | None) -> None:
        """Throttle (or, with None, stop throttling) what `client_id` may produce per second:
        Kafka's own client quota, set with its ConfigCommand (kafka-configs)."""
        change = (["--delete-config", "producer_byte_rate"] if bytes_per_second is None
                  else ["--add-config", f"producer_byte_rate={bytes_per_second}"])
        done = subprocess.run(
            [shutil.which("java") or "java", "-cp", f"{kafka_libs()}/*", "kafka.admin.ConfigCommand",
             "--bootstrap-server", self.bootstrap, "--alter", *change,
             "--entity-type", "clients", "--entity-name", client_id],
            capture_output=True, text=True, timeout=120,
        )
        if done.returncode != 0:
            raise LocalStackError(f"setting the producer quota of {client_id} failed:\n{done.stdout}\n{done.stderr}")


def _cluster_id() -> str:
    """A KRaft cluster id (URL-safe base64 of 16 bytes) that does not start with "-": the storage
    tool would read such an id as an option and fail (1 start in 64)."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _kafka_answers(port: int) -> bool:
    """A real ApiVersions round trip (request v0: no tagged fields), not just an open socket."""
    import struct

    client_id = b"localstack"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = sock.recv(4)
            if len(header) < 4:
                return False
            size = struct.unpack(">i", header)[0]
            payload = b""
            while len(payload) < size:
                chunk = sock.recv(size - len(payload))
                if not chunk:
                    return False
                payload += chunk
            correlation, error = struct.unpack(">ih", payload[:6])
            return correlation == 1 and error == 0
    except OSError:
        return False


_LOG4J2 = """Configuration:
  Appenders:
    File:
      name: FILE
      fileName: "{log}"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: FILE
"""


@dataclass
class RedisServer:
    """Debian's redis-server. With `password` only: `requirepass`. With `username` too: that ACL
    user is the only one (the `default` user is off). With `tls`: TLS only, on `port` (no
    client certificates asked for)."""

    port: int = 0
    password: str | None = field(default=None, repr=False)
    run_dir: Path | None = None
    pid: int | None = None
    username: str | None = None
    tls: TlsFiles | None = None

    @property
    def url(self) -> str:
        """The URL a client needs, without the password (that goes separately: REDIS_PASSWORD)."""
        scheme = "rediss" if self.tls else "redis"
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        query = f"?ssl_ca_certs={quote(str(self.tls.ca_cert), safe='')}" if self.tls else ""
        return f"{scheme}://{user}127.0.0.1:{self.port}/0{query}"

    def start(self, run_dir: Path, timeout: float = 20.0) -> "RedisServer":
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(server).exists():
            raise LocalStackError("redis-server not found: run scripts/setup.sh (Debian package redis-server)")
        # absolute: redis changes into `dir` before opening `logfile`, and the demo passes run/demo
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = self.run_dir / "redis.conf"
        lines = ["bind 127.0.0.1", "daemonize no", "save \"\"", "appendonly no",
                 f"dir {self.run_dir}", f"logfile {self.run_dir / 'redis.log'}"]
        if self.tls is not None:
            lines += ["port 0", f"tls-port {self.port}", f"tls-cert-file {self.tls.server_cert}",
                      f"tls-key-file {self.tls.server_key}", f"tls-ca-cert-file {self.tls.ca_cert}",
                      "tls-auth-clients no"]
        else:
            lines.append(f"port {self.port}")
        if self.username:
            if not self.password:
                raise LocalStackError("an ACL user needs a password")
            lines += ["user default off", f"user {self.username} on >{self.password} ~* &* +@all"]
        elif self.password:
            lines.append(f"requirepass {self.password}")
        config.touch(mode=0o600)
        config.write_text("\n".join(lines) + "\n")
        process = subprocess.Popen([server, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.pid = process.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LocalStackError(f"redis exited with {process.returncode}:\n{_tail(self.run_dir / 'redis.log')}")
            if _port_open(self.port):
                return self
            time.sleep(0.1)
        self.stop()
        raise LocalStackError(f"redis did not listen within {timeout:.0f}s")

    def stop(self) -> None:
        _stop_pid(self.pid)
        self.pid = None

    def restart(self) -> "RedisServer":
        assert self.run_dir is not None
        self.stop()
        return self.start(self.run_dir)


def start_stack(run_dir: Path) -> dict:
    """Broker + Redis for `kpi-stream stack up`; ports and pids in run_dir/stack.json."""
    run_dir = Path(run_dir)
    broker = KafkaBroker().start(run_dir / "kafka")
    try:
        redis = RedisServer().start(run_dir / "redis")
    except Exception:
        broker.stop()
        raise
    info = {"kafka": {"bootstrap": broker.bootstrap, "pid": broker.pid},
            "redis": {"url": redis.url, "pid": redis.pid}}
    (run_dir / "stack.json").write_text(json.dumps(info, indent=2))
    return info


def stop_stack(run_dir: Path) -> None:
    path = Path(run_dir) / "stack.json"
    if not path.exists():
        return
    info = json.loads(path.read_text())
    _stop_pid(info["redis"]["pid"])
    _stop_pid(info["kafka"]["pid"])
    path.unlink()
