"""`kpi-stream` (also `python -m stream`): worker, replay, send, generate, stack up/down, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from stream.core.config import ConfigError, KpiSettings, ServiceSettings, hot_outlets_from_env

log = logging.getLogger("stream")


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """Writes `****` in place of each secret in every formatted line, tracebacks included.

    Our code never logs a secret, but libraries at DEBUG print what they send: aiokafka prints
    each SASL request, and with SASL PLAIN that holds the password itself."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(_LOG_FORMAT)
        self.secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "****")
        return text


def _setup_logging(level: str, secrets: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(secrets))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


def use_event_loop(kind: str) -> None:
    """Make loops of `kind` (KPI_EVENT_LOOP) the policy's: faust's consumer thread makes its own
    loop through the policy, and should run on the same kind as the worker's."""
    if kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


class _HeldBack(logging.Handler):
    """Keeps the messages of the last WARNING and ERROR records instead of printing them."""

    def __init__(self, keep: int = 20) -> None:
        super().__init__(logging.WARNING)
        self.messages: deque[str] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


@contextmanager
def _client_errors_held_back(debug: bool) -> Iterator[_HeldBack]:
    """The Kafka client logs the reason a connection failed (refused, TLS, SASL) and then raises a
    bare "unable to bootstrap": its reasons are held back meanwhile, to be told in one line
    (`_failure_with_reasons`). At DEBUG they are printed as well."""
    held = _HeldBack()
    client_log = logging.getLogger("aiokafka")
    client_log.addHandler(held)
    client_log.propagate = debug
    try:
        yield held
    finally:
        client_log.removeHandler(held)
        client_log.propagate = True


def _failure_with_reasons(error: BaseException, held: _HeldBack) -> str:
    reasons = "; ".join(dict.fromkeys(list(held.messages)[-3:]))
    return _describe_chain(error) + (f" (the client said: {reasons})" if reasons else "")


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    use_event_loop(kind)
    return asyncio.new_event_loop()


def cmd_worker(args: argparse.Namespace) -> int:
    settings = ServiceSettings.from_env()
    _setup_logging(settings.log_level, settings.secret_values())
    from aiokafka.admin import AIOKafkaAdminClient
    from faust.worker import Worker

    from stream.core.gcpause import GcPauseRecorder
    from stream.kafka.local_tables import trust_local_tables_or_discard
    from stream.kafka.topics import TopicNames, ensure_topics
    from stream.worker.app import KpiWorker

    loop = new_event_loop(settings.event_loop)
    asyncio.set_event_loop(loop)

    async def prepare() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_options())
        await admin.start()
        try:
            await ensure_topics(admin, TopicNames(settings.topic_prefix, settings.app_id),
                                settings.partitions, settings.replication_factor)
        finally:
            await admin.close()

    with _client_errors_held_back(settings.log_level == "DEBUG") as client_errors:
        try:
            loop.run_until_complete(prepare())
        except Exception as error:  # noqa: BLE001 - one line saying why (redacted), then exit non-zero
            log.debug("creating or checking the topics failed", exc_info=True)
            log.error("worker not started: cannot create or check its topics on Kafka %s (KAFKA_BOOTSTRAP_SERVERS; "
                      "address, TLS or authentication): %s", settings.kafka_bootstrap,
                      _failure_with_reasons(error, client_errors))
            return 1
    kpi_worker = KpiWorker(settings)
    pauses = [kpi_worker.metrics.gc_pause.labels(str(generation)) for generation in range(3)]
    GcPauseRecorder(lambda generation, seconds: pauses[generation].observe(seconds)).install()
    log.info("worker starting: app=%s kafka=%s web=:%d clock=%s loop=%s", settings.app_id, settings.kafka_bootstrap,
             settings.web_port, settings.kpi.clock.mode, type(loop).__module__)
    table_dir = Path(kpi_worker.app.conf.tabledir)
    trust_local_tables_or_discard(table_dir, settings.store)
    worker = Worker(kpi_worker.app, loglevel=settings.log_level.lower(), loop=loop,
                    override_logging=False, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    settings = KpiSettings.from_env()
    _setup_logging("INFO")
    from stream.replay import run_replay

    events = Path(args.events)
    if not events.is_file():
        raise UsageError(f"replay: cannot read {args.events}: {'not a file' if events.exists() else 'no such file'}")
    run_replay(events, settings, Path(args.deadletter) if args.deadletter else None, hot_outlets_from_env())
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    # the broker address from --kafka; how to authenticate from the same variables as the worker
    settings = ServiceSettings.from_env() if args.kafka else None
    _setup_logging("INFO", settings.secret_values() if settings else ())
    from stream.devtools import generator

    if args.events is not None and args.events < 0:
        raise UsageError("generate: --events must be 0 or more")
    if args.rate is not None and args.rate <= 0:
        raise UsageError("generate: --rate must be more than 0")
    if args.live:
        return _generate_live(args, settings)
    if args.history_days is not None or args.history_events is not None or args.progress:
        raise UsageError("generate: --history-days, --history-events and --progress go with --live")
    config = generator.GeneratorConfig(
        seed=args.seed, outlets=args.outlets, events=20000 if args.events is None else args.events,
        **({"days": args.days} if args.days else {}),
    )
    messages = generator.generate(config)
    if args.out:
        count = generator.write_jsonl(messages, Path(args.out))
        log.info("wrote %s messages to %s", count, args.out)
        return 0
    if not args.kafka:
        print("generate: give --out FILE or --kafka BOOTSTRAP", file=sys.stderr)
        return 2
    counts = asyncio.run(generator.produce(messages, args.kafka, args.rate, topic_prefix=args.topic_prefix,
                                           **settings.kafka_client_options()))
    log.info("produced %s", counts)
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    # where to from --kafka (or KAFKA_BOOTSTRAP_SERVERS); how to authenticate, and the topics'
    # prefix, from the same variables as the worker
    settings = ServiceSettings.from_env()
    # INFO at least: the summary is the command's answer (KPI_LOG_LEVEL=DEBUG shows the client's logs)
    _setup_logging("DEBUG" if settings.log_level == "DEBUG" else "INFO", settings.secret_values())
    from stream.send import (CountsLine, Destination, SendError, SendReport, TerminalBar, Unreadable, format_summary,
                             open_events, send_events)

    bootstrap = args.kafka or os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if not bootstrap:
        raise UsageError("send: give --kafka HOST:PORT (or set KAFKA_BOOTSTRAP_SERVERS)")
    try:
        handle, total = open_events(args.events)
    except Unreadable as error:
        raise UsageError(f"send: {error}") from None
    progress = TerminalBar(sys.stderr, total) if sys.stderr.isatty() else CountsLine()
    prefix = settings.topic_prefix if args.topic_prefix is None else args.topic_prefix
    destination = Destination(bootstrap, prefix, settings.kafka_client_options())
    report = SendReport()
    with _client_errors_held_back(settings.log_level == "DEBUG") as client_errors, handle:
        try:
            asyncio.run(send_events(handle, destination, report, progress))
        except KeyboardInterrupt:
            log.warning("send interrupted (the last messages may not have reached Kafka; sending the file again "
                        "is safe): %s", format_summary(report))
            return 130
        except SendError as error:
            log.error("send stopped: %s", error)
            return 1
        except Exception as error:  # noqa: BLE001 - one line saying why (redacted), then exit non-zero
            log.debug("sending failed", exc_info=True)
            log.error("send stopped: cannot send to Kafka %s (--kafka; address, TLS or authentication): %s",
                      bootstrap, _failure_with_reasons(error, client_errors))
            return 1
    log.info("send done: %s", format_summary(report))
    return 1 if report.too_large else 0


def _generate_live(args: argparse.Namespace, settings: ServiceSettings | None) -> int:
    """--live: a recent history ending now (sent at once), then traffic on the wall clock."""
    import time

    from stream.devtools import generator, live_traffic

    if args.days:
        raise UsageError("generate: --days is for the fixed period; with --live give --history-days")
    history_days = 60 if args.history_days is None else args.history_days
    history_events = 40_000 if args.history_events is None else args.history_events
    if history_days < 0 or history_events < 0:
        raise UsageError("generate: --history-days and --history-events must be 0 or more")
    events = args.events or None  # 0 or absent: never stop
    if args.out and events is None:
        raise UsageError("generate: --live with --out needs --events (live traffic never ends)")
    if not args.out and not args.kafka:
        raise UsageError("generate: give --kafka BOOTSTRAP (or --out FILE with --events)")
    config = live_traffic.LiveConfig(
        seed=args.seed, outlets=args.outlets, history_days=history_days, history_events=history_events,
        rate=40.0 if args.rate is None else args.rate, events=events, topic_prefix=args.topic_prefix,
        utc_offset_minutes=time.localtime().tm_gmtoff // 60,
    )
    stream = live_traffic.live(config, int(time.time() * 1_000_000))
    if args.out:
        count = generator.write_jsonl((timed.message for timed in stream), Path(args.out))
        log.info("wrote %s messages to %s", count, args.out)
        return 0
    progress_path = Path(args.progress) if args.progress else None
    started = time.time()

    def progress(counts: dict[str, int], sent: int, history: int | None) -> None:
        if progress_path is None:
            return
        state = {"sent": sent, "by_topic": counts, "live": history is not None, "history": history,
                 "started": started, "at": time.time()}
        partial = progress_path.with_suffix(".tmp")
        partial.write_text(json.dumps(state))
        partial.replace(progress_path)  # readers never see half a file

    log.info("live traffic to %s: %d days of history (about %d events) at once, then up to %.0f events/s "
             "on the wall clock", args.kafka, history_days, history_events, config.rate)
    counts = asyncio.run(live_traffic.produce_live(stream, args.kafka, progress=progress,
                                                **settings.kafka_client_options()))
    log.info("produced %s", counts)
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    _setup_logging("INFO")
    from stream.devtools.localstack import start_stack, stop_stack

    run_dir = Path(args.run_dir)
    if args.action == "up":
        info = start_stack(run_dir)
        print(json.dumps(info, indent=2))
    else:
        stop_stack(run_dir)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _setup_logging("INFO")
    from stream.devtools.demo import run_demo

    if args.rate <= 0:
        raise UsageError("demo: --rate must be more than 0")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("demo: --duration must be more than 0")
    if args.status_interval <= 0:
        raise UsageError("demo: --status-interval must be more than 0")
    if args.history_days < 0 or args.history_events < 0 or (args.events is not None and args.events < 0):
        raise UsageError("demo: --history-days, --history-events and --events must be 0 or more")
    return run_demo(Path(args.run_dir), args.duration, args.rate, args.events, keep=args.keep,
                    history_days=args.history_days, history_events=args.history_events,
                    status_interval=args.status_interval)


class UsageError(Exception):
    """The command line asks for something that cannot be done: one line, exit 2."""


class _OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0] if text.strip() else type(error).__name__


def _describe_chain(error: BaseException) -> str:
    """The error and the ones it was raised from or while handling, outermost first: a client's
    "unable to bootstrap" often carries the real reason (authentication, TLS) in its context."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        text, name = _describe(current), type(current).__name__
        parts.append(text if text.startswith(name) else f"{name}: {text}")
        current = current.__cause__ or current.__context__
    return " <- ".join(dict.fromkeys(parts))


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="kpi-stream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a stream worker (settings from the environment)")
    worker.set_defaults(func=cmd_worker)

    replay = sub.add_parser("replay", help="decode + engine over a JSON Lines file, no broker (spec 7)")
    replay.add_argument("events", help="file with one raw input message per line")
    replay.add_argument("--deadletter", help="write rejected lines here (JSON Lines: line, reason, detail)")
    replay.set_defaults(func=cmd_replay)

    generate = sub.add_parser("generate", help="synthetic field-sales traffic")
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--events", type=int, default=None,
                          help="messages in all (default 20000; with --live: never stop)")
    generate.add_argument("--outlets", type=int, default=2000)
    generate.add_argument("--days", type=int, default=0, help="length of the fixed period (default 90)")
    generate.add_argument("--out", help="write JSON Lines here instead of producing")
    generate.add_argument("--kafka", help="bootstrap servers to produce to")
    generate.add_argument("--rate", type=float, default=None,
                          help="messages per second (default: as fast as possible; with --live: the peak "
                               "of a working day, default 40)")
    generate.add_argument("--topic-prefix", default="")
    generate.add_argument("--live", action="store_true",
                          help="on the wall clock: a recent history ending now, sent at once, then live "
                               "traffic stamped with the current time (what the demo runs)")
    generate.add_argument("--history-days", type=int, default=None, help="with --live: days of history (default 60)")
    generate.add_argument("--history-events", type=int, default=None,
                          help="with --live: about this many events of history (default 40000; 0: none)")
    generate.add_argument("--progress", help="with --live: keep a JSON file of what was sent here (every second)")
    generate.set_defaults(func=cmd_generate)

    send = sub.add_parser("send", help="send a file of raw input events to the input topics, each line routed "
                                       "by its type (a backfill)")
    send.add_argument("events", nargs="?", default=None,
                      help="file with one raw input message per line, as replay reads it; - or none: standard input")
    send.add_argument("--kafka", help="bootstrap servers to send to (default: KAFKA_BOOTSTRAP_SERVERS)")
    send.add_argument("--topic-prefix", default=None, help="prefix of the topic names (default: KPI_TOPIC_PREFIX)")
    send.set_defaults(func=cmd_send)

    stack = sub.add_parser("stack", help="start/stop the local Kafka broker and Redis")
    stack.add_argument("action", choices=("up", "down"))
    stack.add_argument("--run-dir", default="run/stack")
    stack.set_defaults(func=cmd_stack)

    demo = sub.add_parser("demo", help="local broker + Redis + worker + live generator; Ctrl-C or SIGTERM stops all")
    demo.add_argument("--run-dir", default="run/demo")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--rate", type=float, default=40.0,
                      help="live events per second at the peak of a working day (default 40)")
    demo.add_argument("--history-days", type=int, default=60, help="days of history sent first (default 60)")
    demo.add_argument("--history-events", type=int, default=40_000,
                      help="about this many events of history, sent at once (default 40000)")
    demo.add_argument("--events", type=int, default=None, help="stop the generator after this many messages")
    demo.add_argument("--status-interval", type=float, default=5.0, help="seconds between status lines (default 5)")
    demo.add_argument("--keep", action="store_true",
                      help="keep the broker's data and the worker's state from the last run (and send no new history)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Errors a user can mend -- a setting, an argument, a file -- end in one line and exit 2; a
    closed output pipe (`kpi-stream replay ... | head`) ends quietly."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ConfigError as error:
        print(f"kpi-stream: configuration error: {error}", file=sys.stderr)
        return 2
    except UsageError as error:
        print(f"kpi-stream: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away: nothing more to say, and nothing left for the interpreter to flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
