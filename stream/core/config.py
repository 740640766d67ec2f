"""One place for configuration: every setting, its environment variable and its default.

`Settings.from_env()` is called once in the entry point, never at import. The README's
configuration table is generated from `SETTINGS_DOC` below (tests check they agree).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


def parse_duration_seconds(text: str) -> int:
    """`90s`, `5m`, `12h`, `30d` -> whole seconds."""
    match = _DURATION.match(text)
    if not match or match.group(2) == "ms":
        raise ConfigError(f"not a duration (want e.g. 90s, 5m, 12h, 30d): {text!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_duration_list(text: str) -> tuple[int, ...]:
    values = tuple(parse_duration_seconds(part) for part in text.split(",") if part.strip())
    if not values:
        raise ConfigError(f"empty duration list: {text!r}")
    return values


def format_duration(seconds: int) -> str:
    """The label used in KPI keys: the largest unit that divides exactly (30d, 12h, 5m, 90s)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class ClockSetting:
    """KPI_CLOCK: wall clock (mode 'wall'), pinned at `pinned_us`, or following event time."""

    mode: str  # "wall" | "pinned" | "event"
    pinned_us: int | None = None


def parse_clock(text: str | None) -> ClockSetting:
    if text is None or text.strip() == "":
        return ClockSetting("wall")
    if text.strip() == "event":
        return ClockSetting("event")
    from stream.core.timeparse import parse_rfc3339_us  # local: config must stay import-light

    pinned = parse_rfc3339_us(text.strip())
    if pinned is None:
        raise ConfigError(f"KPI_CLOCK must be unset, 'event' or an RFC 3339 instant: {text!r}")
    return ClockSetting("pinned", pinned)


@dataclass(frozen=True, slots=True)
class KpiSettings:
    """The settings of spec section 6: the ones that change KPI values."""

    slot_seconds: int = 60
    windows_seconds: tuple[int, ...] = (7 * 86400, 30 * 86400, 60 * 86400)
    conversion_horizons_seconds: tuple[int, ...] = (7 * 86400, 14 * 86400, 30 * 86400)
    dormancy_seconds: int = 30 * 86400
    base_currency: str = "USD"
    future_tolerance_seconds: int = 300
    max_event_bytes: int = 65536
    dedupe_horizon_seconds: int = 7 * 86400
    clock: ClockSetting = field(default_factory=lambda: ClockSetting("wall"))
    # the business calendar (spec 8): zone, period kinds computed, closed periods kept per kind
    timezone: str = "Asia/Jakarta"
    periods: tuple[str, ...] = ("day", "week", "month", "quarter")
    period_history: int = 2
    # derived once: read for every scope of every publication round
    window_labels: tuple[str, ...] = field(init=False, repr=False, compare=False)
    horizon_labels: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.slot_seconds <= 0:
            raise ConfigError("KPI_SLOT_SECONDS must be positive")
        for window in self.windows_seconds:
            if window <= 0 or window % self.slot_seconds:
                raise ConfigError(
                    f"window {format_duration(window)} is not a positive multiple of the "
                    f"{self.slot_seconds}s slot (KPI_WINDOWS / KPI_SLOT_SECONDS)"
                )
        if len(set(map(format_duration, self.windows_seconds))) != len(self.windows_seconds):
            raise ConfigError("KPI_WINDOWS has a repeated window")
        if len(set(self.conversion_horizons_seconds)) != len(self.conversion_horizons_seconds):
            raise ConfigError("KPI_CONVERSION_HORIZONS has a repeated horizon")
        if not re.fullmatch(r"[A-Z]{3}", self.base_currency):
            raise ConfigError(f"KPI_BASE_CURRENCY must be an ISO 4217 code: {self.base_currency!r}")
        if self.max_event_bytes <= 0:
            raise ConfigError("KPI_MAX_EVENT_BYTES must be positive")
        self._check_calendar()
        object.__setattr__(self, "window_labels", tuple(format_duration(w) for w in self.windows_seconds))
        object.__setattr__(self, "horizon_labels", tuple(format_duration(h) for h in self.conversion_horizons_seconds))

    def _check_calendar(self) -> None:
        from stream.core.calendar import PERIOD_KINDS, UnknownZone, zone_named, zone_offsets_seconds  # local: light

        try:
            zone_named(self.timezone)
        except UnknownZone:
            raise ConfigError(f"KPI_TIMEZONE must be an IANA time zone name such as Asia/Jakarta: "
                              f"{self.timezone!r}") from None
        unknown = [kind for kind in self.periods if kind not in PERIOD_KINDS]
        if unknown:
            raise ConfigError(f"KPI_PERIODS must list kinds among {','.join(PERIOD_KINDS)}: unknown {unknown}")
        if len(set(self.periods)) != len(self.periods):
            raise ConfigError("KPI_PERIODS has a repeated kind")
        if self.period_history < 0:
            raise ConfigError("KPI_PERIOD_HISTORY must be 0 or more")
        if self.periods:
            # Period bounds must fall on slot boundaries: an outlet keeps its orders and visits per
            # slot, and moving it between scopes places them in periods by slot.
            odd = sorted(o for o in zone_offsets_seconds(self.timezone) if o % self.slot_seconds)
            if 86400 % self.slot_seconds or odd:
                raise ConfigError(
                    f"KPI_SLOT_SECONDS={self.slot_seconds} does not put the local midnights of "
                    f"KPI_TIMEZONE={self.timezone} on slot boundaries (needed by KPI_PERIODS): use a "
                    f"slot dividing a day and every UTC offset of the zone, or KPI_PERIODS= (none)")

    @property
    def slot_us(self) -> int:
        return self.slot_seconds * 1_000_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "KpiSettings":
        env = os.environ if env is None else env
        return cls(
            slot_seconds=_whole_number("KPI_SLOT_SECONDS", env.get("KPI_SLOT_SECONDS", "60"), 1),
            windows_seconds=_durations("KPI_WINDOWS", env.get("KPI_WINDOWS", "7d,30d,60d")),
            conversion_horizons_seconds=_durations("KPI_CONVERSION_HORIZONS",
                                                   env.get("KPI_CONVERSION_HORIZONS", "7d,14d,30d")),
            dormancy_seconds=_duration("KPI_DORMANCY", env.get("KPI_DORMANCY", "30d")),
            base_currency=env.get("KPI_BASE_CURRENCY", "USD"),
            future_tolerance_seconds=_duration("KPI_FUTURE_TOLERANCE", env.get("KPI_FUTURE_TOLERANCE", "5m")),
            max_event_bytes=_whole_number("KPI_MAX_EVENT_BYTES", env.get("KPI_MAX_EVENT_BYTES", "65536"), 1),
            dedupe_horizon_seconds=_duration("KPI_DEDUPE_HORIZON", env.get("KPI_DEDUPE_HORIZON", "7d")),
            clock=parse_clock(env.get("KPI_CLOCK")),
            timezone=env.get("KPI_TIMEZONE", "Asia/Jakarta"),
            periods=_period_kinds(env.get("KPI_PERIODS", "day,week,month,quarter")),
            period_history=_whole_number("KPI_PERIOD_HISTORY", env.get("KPI_PERIOD_HISTORY", "2"), 0),
        )


# The worker's HTTP pages that KPI_API_OPEN_PAGES may name (the dashboard's HTML, CSS and JS are
# always open: code, no data -- the page sends its token to /dashboard/data itself).
API_PAGES = ("/metrics", "/health", "/ready", "/openapi.yaml", "/kpi", "/dashboard/data")
DEFAULT_OPEN_PAGES = ("/metrics", "/health", "/ready", "/openapi.yaml")
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True, slots=True)
class SecretStr:
    """A credential that never prints itself."""

    value: str

    def __repr__(self) -> str:
        return "SecretStr('****')" if self.value else "SecretStr('')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Everything else the worker needs: where Kafka and Redis are, topics, ports, intervals."""

    kpi: KpiSettings
    app_id: str = "kpi-stream"
    kafka_bootstrap: str = "localhost:9092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_username: str = ""
    kafka_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: str = ""
    redis_url: str = "redis://localhost:6379/0"
    redis_password: SecretStr = SecretStr("")
    topic_prefix: str = ""
    partitions: int = 8
    replication_factor: int = 1
    web_port: int = 6066
    web_host: str = "0.0.0.0"
    publish_interval_seconds: float = 1.0
    export_scopes: tuple[str, ...] = ("global", "region", "territory")
    state_dir: str = "/tmp/kpi-stream-state"
    store: str = "memory://"
    log_level: str = "INFO"
    session_timeout_seconds: float = 30.0
    fetch_max_wait_ms: int = 20
    fetch_min_bytes: int = 16384
    snapshot_on_stop: bool = True
    snapshot_interval_seconds: float = 300.0  # 0: no snapshots while running
    group_instance_id: str = ""
    hot_outlets: int = 8192  # per partition: outlets kept as objects, the others packed (cold_outlets.py)
    event_loop: str = "uvloop"
    # bearer tokens of the HTTP API (empty: no authentication, every page open as before)
    api_tokens: tuple[SecretStr, ...] = ()
    api_open_pages: tuple[str, ...] = DEFAULT_OPEN_PAGES

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def secret_values(self) -> tuple[str, ...]:
        """The passwords, to be blanked out of every log line (a password written into REDIS_URL
        too, though REDIS_PASSWORD is where it belongs)."""
        from urllib.parse import unquote, urlparse  # local: config must stay import-light

        in_url = urlparse(self.redis_url).password or ""
        values = (self.kafka_password.value, self.redis_password.value, in_url, unquote(in_url),
                  *(token.value for token in self.api_tokens))
        return tuple(dict.fromkeys(value for value in values if value))

    def kafka_client_options(self) -> dict:
        """Security keyword arguments for aiokafka clients (admin, producer, consumer): the same
        settings the worker's Faust app gets through `broker_credentials`."""
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return {}
        import ssl  # local: config must stay import-light

        options: dict = {"security_protocol": protocol}
        if protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = ssl.create_default_context(cafile=self.kafka_ssl_cafile or None)
        if protocol.startswith("SASL"):
            options.update(sasl_mechanism=self.kafka_sasl_mechanism or "SCRAM-SHA-512",
                           sasl_plain_username=self.kafka_username,
                           sasl_plain_password=self.kafka_password.value)
        return options

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ServiceSettings":
        env = os.environ if env is None else env
        scopes = tuple(s.strip() for s in env.get("KPI_EXPORT_SCOPES", "global,region,territory").split(",") if s.strip())
        unknown = set(scopes) - {"global", "region", "territory", "distributor", "channel", "rep"}
        if unknown:
            raise ConfigError(f"KPI_EXPORT_SCOPES has unknown scope types: {sorted(unknown)}")
        interval = _positive_seconds("KPI_PUBLISH_INTERVAL", env.get("KPI_PUBLISH_INTERVAL", "1.0"))
        log_level = env.get("KPI_LOG_LEVEL", "INFO").strip().upper()
        if log_level not in LOG_LEVELS:
            raise ConfigError(f"KPI_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}: {log_level!r}")
        store = env.get("KPI_STORE", "memory://")
        if store.partition("://")[0] + "://" not in STORES:
            raise ConfigError(f"KPI_STORE must be one of {', '.join(STORES)}: {store!r}")
        protocol, mechanism = _kafka_security(env)
        return cls(
            kpi=KpiSettings.from_env(env),
            app_id=env.get("KPI_APP_ID", "kpi-stream"),
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
            kafka_security_protocol=protocol,
            kafka_sasl_mechanism=mechanism,
            kafka_username=env.get("KAFKA_USERNAME", ""),
            kafka_password=SecretStr(env.get("KAFKA_PASSWORD", "")),
            kafka_ssl_cafile=env.get("KAFKA_SSL_CAFILE", ""),
            redis_url=env.get("REDIS_URL", "redis://localhost:6379/0"),
            redis_password=SecretStr(env.get("REDIS_PASSWORD", "")),
            topic_prefix=env.get("KPI_TOPIC_PREFIX", ""),
            partitions=_whole_number("KPI_PARTITIONS", env.get("KPI_PARTITIONS", "8"), 1),
            replication_factor=_whole_number("KPI_REPLICATION_FACTOR", env.get("KPI_REPLICATION_FACTOR", "1"), 1),
            web_port=_port("KPI_WEB_PORT", env.get("KPI_WEB_PORT", "6066")),
            web_host=env.get("KPI_WEB_HOST", "0.0.0.0"),
            publish_interval_seconds=interval,
            export_scopes=scopes,
            state_dir=env.get("KPI_STATE_DIR", "/tmp/kpi-stream-state"),
            store=store,
            log_level=log_level,
            session_timeout_seconds=_positive_seconds("KPI_SESSION_TIMEOUT", env.get("KPI_SESSION_TIMEOUT", "30")),
            fetch_max_wait_ms=_whole_number("KPI_FETCH_MAX_WAIT_MS", env.get("KPI_FETCH_MAX_WAIT_MS", "20"), 1),
            fetch_min_bytes=_whole_number("KPI_FETCH_MIN_BYTES", env.get("KPI_FETCH_MIN_BYTES", "16384"), 1),
            snapshot_on_stop=_boolean("KPI_SNAPSHOT_ON_STOP", env.get("KPI_SNAPSHOT_ON_STOP", "true")),
            snapshot_interval_seconds=_non_negative_seconds(
                "KPI_SNAPSHOT_INTERVAL", env.get("KPI_SNAPSHOT_INTERVAL", "300")),
            group_instance_id=env.get("KPI_GROUP_INSTANCE_ID", "").strip(),
            hot_outlets=hot_outlets_from_env(env),
            event_loop=event_loop_from_env(env),
            api_tokens=_api_tokens(env.get("KPI_API_TOKENS", "")),
            api_open_pages=_api_open_pages(env.get("KPI_API_OPEN_PAGES", ",".join(DEFAULT_OPEN_PAGES))),
        )


def hot_outlets_from_env(env: Mapping[str, str] | None = None) -> int:
    """KPI_HOT_OUTLETS: read by the worker and by `kpi-stream replay` (stream/core/outlets.py)."""
    env = os.environ if env is None else env
    return _whole_number("KPI_HOT_OUTLETS", env.get("KPI_HOT_OUTLETS", "8192"), 0)


EVENT_LOOPS = ("uvloop", "asyncio")


def event_loop_from_env(env: Mapping[str, str] | None = None) -> str:
    """KPI_EVENT_LOOP: read by the worker and by bench/throughput.py's empty-agent ceiling, which
    must run on the same loop to be the worker's ceiling."""
    env = os.environ if env is None else env
    kind = env.get("KPI_EVENT_LOOP", "uvloop").strip().lower()
    if kind not in EVENT_LOOPS:
        raise ConfigError(f"KPI_EVENT_LOOP must be one of {', '.join(EVENT_LOOPS)}: {kind!r}")
    return kind


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
STORES = ("memory://", "rocksdb://")


def _duration(name: str, text: str) -> int:
    try:
        return parse_duration_seconds(text)
    except ConfigError:
        raise ConfigError(f"{name} must be a duration such as 90s, 5m, 12h or 30d: {text!r}") from None


def _durations(name: str, text: str) -> tuple[int, ...]:
    try:
        return parse_duration_list(text)
    except ConfigError:
        raise ConfigError(f"{name} must be a comma-separated list of durations such as 7d,30d: {text!r}") from None


def _period_kinds(text: str) -> tuple[str, ...]:
    """KPI_PERIODS: a comma-separated list of kinds; empty: no periods (checked in KpiSettings)."""
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def _port(name: str, text: str) -> int:
    port = _whole_number(name, text, 1)
    if port > 65535:
        raise ConfigError(f"{name} must be a TCP port, 1 to 65535: {text!r}")
    return port


def _positive_seconds(name: str, text: str) -> float:
    value = _non_negative_seconds(name, text)
    if value == 0:
        raise ConfigError(f"{name} must be more than 0 seconds: {text!r}")
    return value


def _whole_number(name: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number: {text!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be {'positive' if minimum == 1 else f'{minimum} or more'}: {text!r}")
    return value


def _non_negative_seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name} must be 0 or more seconds: {text!r}")
    return value


def _boolean(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false: {text!r}")


def _api_tokens(text: str) -> tuple[SecretStr, ...]:
    """KPI_API_TOKENS: comma-separated bearer tokens; the errors name a token by its position,
    never by its value."""
    tokens = []
    for position, part in enumerate(text.split(","), start=1):
        token = part.strip()
        if not token:
            continue
        if not re.fullmatch(r"[\x21-\x7e]+", token):
            raise ConfigError(f"KPI_API_TOKENS: token {position} has characters a bearer token cannot carry "
                              "(printable ASCII only, no spaces or commas)")
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"KPI_API_TOKENS: token {position} is shorter than {MIN_TOKEN_CHARS} characters "
                              "(e.g. `openssl rand -hex 32`)")
        tokens.append(SecretStr(token))
    return tuple(dict.fromkeys(tokens))


def _api_open_pages(text: str) -> tuple[str, ...]:
    pages = tuple(dict.fromkeys(page.strip() for page in text.split(",") if page.strip()))
    unknown = [page for page in pages if page not in API_PAGES]
    if unknown:
        raise ConfigError(f"KPI_API_OPEN_PAGES names pages the worker does not serve: {', '.join(unknown)} "
                          f"(one or more of {', '.join(API_PAGES)}, or empty)")
    return pages


_KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _kafka_security(env: Mapping[str, str]) -> tuple[str, str]:
    """KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_MECHANISM, checked: a misspelt protocol must not
    quietly become a plaintext connection, and SASL without a user cannot work."""
    protocol = env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").strip().upper()
    if protocol not in _KAFKA_PROTOCOLS:
        raise ConfigError(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(_KAFKA_PROTOCOLS)}: {protocol!r}")
    mechanism = env.get("KAFKA_SASL_MECHANISM", "").strip().upper()
    if protocol.startswith("SASL"):
        mechanism = mechanism or "SCRAM-SHA-512"
        if mechanism not in _SASL_MECHANISMS:
            raise ConfigError(f"KAFKA_SASL_MECHANISM must be one of {', '.join(_SASL_MECHANISMS)}: {mechanism!r}")
        if not env.get("KAFKA_USERNAME") or not env.get("KAFKA_PASSWORD"):
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_USERNAME and KAFKA_PASSWORD")
    return protocol, mechanism


# (variable, default, meaning): rendered into the README's configuration table.
SETTINGS_DOC: tuple[tuple[str, str, str], ...] = (
    ("KPI_SLOT_SECONDS", "60", "slot length R in seconds; windows are whole slots aligned to the Unix epoch"),
    ("KPI_WINDOWS", "7d,30d,60d", "windows W (each a multiple of R)"),
    ("KPI_CONVERSION_HORIZONS", "7d,14d,30d", "first-order conversion horizons N"),
    ("KPI_DORMANCY", "30d", "reactivation gap D"),
    ("KPI_BASE_CURRENCY", "USD", "the only accepted order currency"),
    ("KPI_FUTURE_TOLERANCE", "5m", "how far ahead of the reference instant an event may be"),
    ("KPI_MAX_EVENT_BYTES", "65536", "larger events are dead-lettered as `oversized`"),
    ("KPI_DEDUPE_HORIZON", "7d", "how long an accepted `event_id` is remembered"),
    ("KPI_CLOCK", "(unset)", "unset: wall clock; an RFC 3339 instant: pinned clock; `event`: greatest accepted `occurred_at`"),
    ("KPI_TIMEZONE", "Asia/Jakarta", "the business time zone (IANA name; DST-aware) of the calendar periods"),
    ("KPI_PERIODS", "day,week,month,quarter", "calendar period kinds computed, among `day`, `week` (ISO), `month`, `quarter`, `year`; empty: none (no period, alias or `lmtd` values)"),
    ("KPI_PERIOD_HISTORY", "2", "closed periods of each kind published besides the current one"),
    ("KPI_APP_ID", "kpi-stream", "Faust application id = consumer group and prefix of internal topics"),
    ("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", "Kafka bootstrap servers"),
    ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    ("KAFKA_SASL_MECHANISM", "(empty)", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (the default when SASL is used)"),
    ("KAFKA_USERNAME", "(empty)", "SASL user"),
    ("KAFKA_PASSWORD", "(empty)", "SASL password (secret: never logged)"),
    ("KAFKA_SSL_CAFILE", "(empty)", "CA bundle for TLS to Kafka (empty: the system's CAs)"),
    ("REDIS_URL", "redis://localhost:6379/0", "Redis for latest values: `rediss://` for TLS, an ACL user as `rediss://USER@host:port/0`, a private CA as `?ssl_ca_certs=/path/ca.pem`; no password here"),
    ("REDIS_PASSWORD", "(empty)", "Redis password, of the URL's user or `default` (secret: never logged)"),
    ("KPI_TOPIC_PREFIX", "(empty)", "prefix for every topic name (input, output, dead letter)"),
    ("KPI_PARTITIONS", "8", "partitions of the topics the service creates"),
    ("KPI_REPLICATION_FACTOR", "1", "replication factor of the topics the service creates"),
    ("KPI_WEB_PORT", "6066", "port of the HTTP pages: /metrics, /health, /ready, /kpi, /dashboard, /openapi.yaml"),
    ("KPI_WEB_HOST", "0.0.0.0", "bind address of the web server"),
    ("KPI_API_TOKENS", "(empty)", "bearer tokens of the HTTP API, comma-separated (two during a rotation), each 16+ printable ASCII characters (secret: never logged): pages not in `KPI_API_OPEN_PAGES` answer 401 without `Authorization: Bearer <token>`; empty: no authentication, every page open (docs/operations.md \"HTTP API\")"),
    ("KPI_API_OPEN_PAGES", "/metrics,/health,/ready,/openapi.yaml", "pages that need no token when `KPI_API_TOKENS` is set (any of /metrics, /health, /ready, /openapi.yaml, /kpi, /dashboard/data; empty: all need it). The kubelet's probes send no token: keep /health and /ready open"),
    ("KPI_PUBLISH_INTERVAL", "1.0", "seconds; stage 1 flushes changed scopes at each multiple of it on the wall clock, and a key is republished at most once per flush"),
    ("KPI_EXPORT_SCOPES", "global,region,territory", "scope types exported as Prometheus gauges; with `rep`, also `kpi_stream_rep_territory_outlets{territory, rep}` (outlets per territory and assigned rep: which reps the Reps dashboard lists for a territory), one series per pair a worker's partitions hold (docs/operations.md \"Rep-level gauges\")"),
    ("KPI_STATE_DIR", "/tmp/kpi-stream-state", "Faust data directory"),
    ("KPI_STORE", "memory://", "Faust table store: `memory://`, or `rocksdb://` (stored facts on disk, kept across restarts: faust reads only the changelog written since)"),
    ("KPI_LOG_LEVEL", "INFO", "log level"),
    ("KPI_SESSION_TIMEOUT", "30", "seconds before the group gives a silent (killed) worker's partitions to others"),
    ("KPI_SNAPSHOT_ON_STOP", "true", "on a stop, save each partition's engine under `KPI_STATE_DIR`; the next start restores it and applies only the facts written since, instead of every fact (docs/operations.md \"Restarts and engine snapshots\")"),
    ("KPI_SNAPSHOT_INTERVAL", "300", "seconds between snapshots of every partition's engine while the worker runs, saved by a forked copy of the process at the lowest CPU priority (the worker does not pause; the copy needs memory for the pages the worker changes meanwhile, up to the engines' size): a start after a kill, or a rebalance that gives this worker a partition back, restores the last one and applies only the facts written since; 0: snapshots at a stop only (docs/operations.md \"Restarts and engine snapshots\")"),
    ("KPI_GROUP_INSTANCE_ID", "(empty)", "Kafka static group membership: a name unique to this worker and stable across its restarts (the pod name), with the same `KPI_WEB_PORT` each time. A worker that stops and is back within `KPI_SESSION_TIMEOUT` keeps its partitions, with no rebalance, and restarts from its snapshots; empty: every stop and start rebalances the group"),
    ("KPI_HOT_OUTLETS", "8192", "per partition (for `kpi-stream replay`: in all), how many recently touched outlets stay Python objects (~0.6 KB each); the others are packed into one heap per partition (~72 B each with their ids and index, a few us to unpack and repack when an event touches one): memory against CPU (docs/operations.md \"Memory\")"),
    ("KPI_EVENT_LOOP", "uvloop", "the worker's asyncio event loop: `uvloop` (libuv; faust's delivery of each message is mostly event-loop work, see docs/performance.md) or `asyncio` (the standard library's)"),
    ("KPI_FETCH_MAX_WAIT_MS", "20", "longest the broker may hold a fetch that finds no new records (faust's fixed 1500 stalls busy partitions behind idle ones); each empty fetch costs a little CPU: an idle worker uses ~7 % of a core at 20, ~3 % at 1500"),
    ("KPI_FETCH_MIN_BYTES", "16384", "records the broker gathers for a fetch before answering it, up to `KPI_FETCH_MAX_WAIT_MS`: at a steady rate, 1 (Kafka's default) makes faust's consumer thread fetch hundreds of times a second, a few records each; 16384 cut a worker's CPU at a steady 500 events/s from ~0.6 to ~0.4 of a core, for up to `KPI_FETCH_MAX_WAIT_MS` more latency per hop"),
)


def settings_table_markdown() -> str:
    """The README's configuration table, from SETTINGS_DOC (tests keep the README in step)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | `{default}` | {meaning} |" for name, default, meaning in SETTINGS_DOC]
    return "\n".join(rows)
