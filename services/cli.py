"""`reformspor`: one command for every service, the local stack, the demo and tools.

Each service package may add its own subcommands through a `cli.register`
function; this module owns the shared ones (up, down, demo, kafka …) and the
one place where errors become a single line on stderr and an exit code
(`run_handler`): commands raise `UserError` for bad input, and anything else
is shown as one line too, with the traceback only under `--debug`.

The CLI stays on argparse: every command is already built on it, and the
extension modules register through it.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from services.shared.config import Settings
from services.shared.usererror import UserError

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command whose reader went away
EXIT_INTERRUPTED = 130

SERVICE_HELP = {
    "ingest": "run the ingest service (HTTP front door + raw inbound topic) in the foreground",
    "budsjett": "run the budsjett service (shared budget lines, tiltak 1.7) in the foreground",
    "milepael": "run the milepael service (staged reforms and gates, tiltak 1.8) in the foreground",
}
# Modules that add subcommands of their own: each has register(subparsers).
EXTENSION_MODULES = ("services.ingest.cli", "services.budsjett.cli", "services.milepael.cli", "services.shared.grafana")


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        home=Path(args.home).resolve() if getattr(args, "home", None) else None,
        kafka_bootstrap=getattr(args, "kafka", None),
        topic_prefix=getattr(args, "prefix", None),
    )


def _run_service(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.port:
        settings = replace(settings, **{f"{args.command}_port": args.port})
    module = importlib.import_module(f"services.{args.command}.app")
    module.main(settings)
    return 0


def _up(args: argparse.Namespace) -> int:
    from services.localstack.stack import LocalStack

    settings = settings_from_args(args)
    if args.tls:
        settings = replace(settings, kafka_security_protocol="SASL_SSL")
    stack = LocalStack(settings)
    stack.up(tuple(args.services))
    print("\nReformspor is running:")
    for service in args.services:
        print(f"  {service:9s} {stack.settings.service_url(service)}  (logs: {stack.log_path(service)})")
    print(f"  kafka     {stack.settings.kafka_bootstrap}")
    print("Stop everything with: reformspor down")
    return 0


def _down(args: argparse.Namespace) -> int:
    from services.localstack.stack import LocalStack

    LocalStack(settings_from_args(args)).down()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from services.localstack.demo import run_demo

    return run_demo(settings_from_args(args), keep_running=not args.stop)


def _kafka(args: argparse.Namespace) -> int:
    from services.localstack import kafka_local
    from services.localstack.stack import LocalStack, require_kafka
    from services.shared.topics import ensure_topics

    settings = settings_from_args(args)
    if args.action == "fetch":
        print(kafka_local.fetch())
    elif args.action == "start":
        LocalStack(settings).start_kafka()
        print(f"Kafka {kafka_local.KAFKA_VERSION} running on {settings.kafka_bootstrap}; topics ready")
    elif args.action == "stop":
        print("stopped" if LocalStack(settings).kafka.stop() else "not running")
    elif args.action == "topics":
        require_kafka(settings)
        created = ensure_topics(settings)
        print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reformspor",
        description="Reformspor: shared cross-ministry budget lines (tiltak 1.7) and staged reforms (tiltak 1.8), on Kafka.",
        epilog="Settings come from REFORMSPOR_* environment variables; see README.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    debug_from_env = os.environ.get("REFORMSPOR_DEBUG", "").lower() in ("1", "true", "yes")
    parser.add_argument("--debug", action="store_true", default=debug_from_env,
                        help="show the Python traceback of an error (also REFORMSPOR_DEBUG=1)")
    parser.add_argument("--home", help="state, logs and pid files, one per user (default: $REFORMSPOR_HOME, "
                                       "else $XDG_DATA_HOME/reformspor, i.e. ~/.local/share/reformspor)")
    parser.add_argument("--kafka", help="Kafka bootstrap server host:port (default 127.0.0.1:9092)")
    parser.add_argument("--prefix", help="topic name prefix (default 'reformspor.')")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for service, help_text in SERVICE_HELP.items():
        service_parser = sub.add_parser(service, help=help_text, description=help_text)
        service_parser.add_argument("--port", type=int, help="HTTP port for the API, /metrics and health")
        service_parser.set_defaults(handler=_run_service)

    up = sub.add_parser("up", help="start Kafka and the services in the background",
                        description="Fetch Kafka if needed, start a local KRaft broker, create topics, start services.")
    up.add_argument("--services", nargs="+", default=["ingest", "budsjett", "milepael"], choices=list(SERVICE_HELP))
    up.add_argument("--tls", action="store_true",
                    help="run the broker with SASL_SSL (a CA and broker certificate made by the JDK's keytool under "
                         "the stack's home; every client verifies it) instead of SASL_PLAINTEXT on loopback")
    up.set_defaults(handler=_up)

    down = sub.add_parser("down", help="stop everything `up` or `demo` started (by pid)",
                          description="Stop the services and the Kafka broker that `reformspor up` or `demo` started "
                                      "for this stack home, each by the pid recorded under <home>/run. "
                                      "Works from any folder; processes it did not start are never touched.")
    down.set_defaults(handler=_down)

    demo = sub.add_parser("demo", help="start the stack, publish a realistic scenario, print the totals",
                          description="Start the local stack, publish a shared budget line funded by three ministries "
                                      "(with a duplicate and an invalid event) and a staged reform, then print a summary.")
    demo.add_argument("--stop", action="store_true", help="stop the stack after the summary (default: leave it running)")
    demo.set_defaults(handler=_demo)

    kafka = sub.add_parser("kafka", help="the local Kafka broker: fetch, start, stop, topics",
                           description="The single-node KRaft broker of the local stack (jars cached under "
                                       "~/.cache/reformspor), and the topics the services need.")
    kafka.add_argument("action", choices=["fetch", "start", "stop", "topics"],
                       help="fetch: download jars into the cache; start/stop the broker; topics: create missing topics")
    kafka.set_defaults(handler=_kafka)

    for module_name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        register = getattr(module, "register", None)
        if register is not None:
            register(sub, settings_from_args)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("reformspor")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def describe_error(error: BaseException) -> tuple[str, int]:
    """One line for stderr and the exit code, for an error a handler did not turn into a UserError itself."""
    if isinstance(error, UserError):
        return str(error), error.exit_code
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}", 2
    name = type(error).__name__
    text = str(error).strip()
    what = text if text.startswith(name) else f"{name}: {text}" if text else name
    module = type(error).__module__.split(".")[0]
    if module == "kafka":  # kafka-python: NoBrokersAvailable, KafkaTimeoutError, …
        return f"Kafka: {what} (is the broker running? `reformspor up`)", 2
    if module in ("httpx", "httpcore"):
        return f"HTTP: {what} (is the stack running? `reformspor up`)", 2
    if name in ("StartupError", "TimeoutError"):  # their message names the log to read: keep it whole
        return what, 1
    return f"{what.splitlines()[0]} (run with --debug for the traceback)", 1


def run_handler(args: argparse.Namespace) -> int:
    """Run the command; every error ends here as one line on stderr and a non-zero exit code."""
    try:
        code = args.handler(args) or 0
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `reformspor status | head`: the reader has all it wanted. Point stdout at /dev/null so the
        # interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if args.debug:
            traceback.print_exc()
        message, code = describe_error(error)
        print(f"error: {message}", file=sys.stderr)
        return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
