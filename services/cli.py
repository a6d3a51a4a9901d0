"""`reformspor`: one command for every service, the local stack, the demo and tools.

Each service package may add its own subcommands through a `cli.register`
function; this module owns the shared ones (up, down, demo, kafka …).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import replace
from pathlib import Path

from services.shared.config import Settings

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

    stack = LocalStack(settings_from_args(args))
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
    from services.localstack.stack import LocalStack
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
        created = ensure_topics(settings)
        print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reformspor",
        description="Reformspor: shared cross-ministry budget lines (tiltak 1.7) and staged reforms (tiltak 1.8), on Kafka.",
        epilog="Settings come from REFORMSPOR_* environment variables; see README.md.",
    )
    parser.add_argument("--home", help="state, logs and pid files (default: ./.reformspor or $REFORMSPOR_HOME)")
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
    up.set_defaults(handler=_up)

    down = sub.add_parser("down", help="stop everything `up` or `demo` started (by pid)")
    down.set_defaults(handler=_down)

    demo = sub.add_parser("demo", help="start the stack, publish a realistic scenario, print the totals",
                          description="Start the local stack, publish a shared budget line funded by three ministries "
                                      "(with a duplicate and an invalid event) and a staged reform, then print a summary.")
    demo.add_argument("--stop", action="store_true", help="stop the stack after the summary (default: leave it running)")
    demo.set_defaults(handler=_demo)

    kafka = sub.add_parser("kafka", help="the local Kafka broker: fetch, start, stop, topics")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
