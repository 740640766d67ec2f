"""The project's own local services: an Apache Kafka 4.x broker (KRaft, single node, controller +
broker) from the Maven Central jars fetched by scripts/setup.sh, and Debian's redis-server.

Each starts on free ports chosen at run time, in its own process group, and stops by pid.
Standard library only: tests, the demo and the benchmarks all use it.
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
    """A single-node KRaft broker. `extra_properties` add or override server.properties lines."""

    port: int = 0
    controller_port: int = 0
    run_dir: Path | None = None
    pid: int | None = None
    extra_properties: dict[str, str] = field(default_factory=dict)
    heap: str = "768m"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> str:
        assert self.run_dir is not None
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
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
        }
        props.update(self.extra_properties)
        return "".join(f"{key}={value}\n" for key, value in props.items())

    def start(self, run_dir: Path, timeout: float = 90.0) -> "KafkaBroker":
        libs = kafka_libs()
        java = shutil.which("java")
        if java is None:
            raise LocalStackError("java not found: Kafka needs a JRE (Java 17)")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        config = self.run_dir / "server.properties"
        config.write_text(self._properties())
        (self.run_dir / "log4j2.yaml").write_text(_LOG4J2.format(log=self.run_dir / "server.log"))
        classpath = f"{libs}/*"
        if not (self.run_dir / "data" / "meta.properties").exists():
            cluster_id = _cluster_id()
            formatted = subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
                capture_output=True, text=True, timeout=120,
            )
            if formatted.returncode != 0:
                raise LocalStackError(f"kafka storage format failed:\n{formatted.stdout}\n{formatted.stderr}")
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
            if _port_open(self.port) and _kafka_answers(self.port):
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


def _cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


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
    port: int = 0
    password: str | None = None
    run_dir: Path | None = None
    pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, run_dir: Path, timeout: float = 20.0) -> "RedisServer":
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(server).exists():
            raise LocalStackError("redis-server not found: run scripts/setup.sh (Debian package redis-server)")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = self.run_dir / "redis.conf"
        lines = [f"port {self.port}", "bind 127.0.0.1", "daemonize no", "save \"\"", "appendonly no",
                 f"dir {self.run_dir}", f"logfile {self.run_dir / 'redis.log'}"]
        if self.password:
            lines.append(f"requirepass {self.password}")
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
