"""`reformspor`: one command for every service, the local stack, the demo and tools.

Each service package may add its own subcommands through a `cli.register`
function; this module owns the shared ones (up, down, demo, kafka …) and the
one place where errors become a single line on stderr and an exit code
(`run_handler`): commands raise `UserError` for bad input, and anything else
is shown as one line too, with the traceback only under `--debug`.

Built on click (commands, options, usage errors, --help) with rich for tables
and progress; services/shared/clikit.py holds what the commands share.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import traceback
from typing import Callable

import click

from services.shared.clikit import GlobalOptions, HelpGroup, pass_options
from services.shared.usererror import UserError

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command whose reader went away
EXIT_INTERRUPTED = 130

SERVICE_HELP = {
    "ingest": "run the ingest service (HTTP front door + raw inbound topic) in the foreground",
    "budsjett": "run the budsjett service (shared budget lines, tiltak 1.7) in the foreground",
    "milepael": "run the milepael service (staged reforms and gates, tiltak 1.8) in the foreground",
}
# Modules that add subcommands of their own: each has register(group).
EXTENSION_MODULES = ("services.ingest.cli", "services.budsjett.cli", "services.milepael.cli", "services.shared.grafana")
# How `reformspor --help` groups the commands.
SECTIONS = (
    ("Local stack", ("up", "down", "demo", "kafka")),
    ("Publish events", ("tokens", "publish")),
    ("Budget lines and reforms", ("status", "export", "reformer", "catalogue", "replay")),
    ("Dashboards", ("grafana",)),
    ("Run one service in the foreground", tuple(SERVICE_HELP)),
)


def service_command(service: str) -> click.Command:
    @click.command(service, short_help=SERVICE_HELP[service], help=SERVICE_HELP[service])
    @click.option("--port", type=int, metavar="PORT", help="HTTP port for the API, /metrics and health")
    @pass_options
    def run_service(options: GlobalOptions, port: int | None) -> int:
        settings = options.settings()
        if port:
            settings = settings.model_copy(update={f"{service}_port": port})
        importlib.import_module(f"services.{service}.app").main(settings)
        return 0

    return run_service


@click.command(short_help="start Kafka and the services in the background",
               help="Fetch Kafka if needed, start a local KRaft broker, create topics, start services.")
@click.option("--services", "services", multiple=True, type=click.Choice(list(SERVICE_HELP)),
              default=tuple(SERVICE_HELP), show_default=True,
              help="a service to start; repeat for several (default: all three)")
@click.option("--tls", is_flag=True,
              help="run the broker with SASL_SSL (a CA and broker certificate made by the JDK's keytool under "
                   "the stack's home; every client verifies it) instead of SASL_PLAINTEXT on loopback")
@pass_options
def up(options: GlobalOptions, services: tuple[str, ...], tls: bool) -> int:
    from services.localstack.stack import LocalStack

    settings = options.settings()
    if tls:
        settings = settings.model_copy(update={"kafka_security_protocol": "SASL_SSL"})
    stack = LocalStack(settings)
    stack.up(services)
    print("\nReformspor is running:")
    for service in services:
        print(f"  {service:9s} {stack.settings.service_url(service)}  (logs: {stack.log_path(service)})")
    print(f"  kafka     {stack.settings.kafka_bootstrap}")
    print("Stop everything with: reformspor down")
    return 0


@click.command(short_help="stop everything `up` or `demo` started (by pid)",
               help="Stop the services and the Kafka broker that `reformspor up` or `demo` started "
                    "for this stack home, each by the pid recorded under <home>/run. "
                    "Works from any folder; processes it did not start are never touched.")
@pass_options
def down(options: GlobalOptions) -> int:
    from services.localstack.stack import LocalStack

    LocalStack(options.settings()).down()
    return 0


@click.command(short_help="start the stack, publish a realistic scenario, print the totals",
               help="Start the local stack, publish a shared budget line funded by three ministries "
                    "(with a duplicate and an invalid event) and a staged reform, then print a summary.")
@click.option("--stop", is_flag=True, help="stop the stack after the summary (default: leave it running)")
@pass_options
def demo(options: GlobalOptions, stop: bool) -> int:
    from services.localstack.demo import run_demo

    return run_demo(options.settings(), keep_running=not stop)


@click.command(short_help="the local Kafka broker: fetch, start, stop, topics",
               help="The single-node KRaft broker of the local stack (jars cached under ~/.cache/reformspor), "
                    "and the topics the services need.\n\nACTION is fetch (download jars into the cache), "
                    "start or stop (the broker), or topics (create missing topics).")
@click.argument("action", type=click.Choice(["fetch", "start", "stop", "topics"]))
@pass_options
def kafka(options: GlobalOptions, action: str) -> int:
    from services.localstack import kafka_local
    from services.localstack.stack import LocalStack, require_kafka
    from services.shared.topics import ensure_topics

    settings = options.settings()
    if action == "fetch":
        print(kafka_local.fetch())
    elif action == "start":
        LocalStack(settings).start_kafka()
        print(f"Kafka {kafka_local.KAFKA_VERSION} running on {settings.kafka_bootstrap}; topics ready")
    elif action == "stop":
        print("stopped" if LocalStack(settings).kafka.stop() else "not running")
    elif action == "topics":
        require_kafka(settings)
        created = ensure_topics(settings)
        print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def build_cli() -> click.Group:
    @click.group(cls=HelpGroup, sections=SECTIONS, context_settings={"max_content_width": 120},
                 help="Reformspor: shared cross-ministry budget lines (tiltak 1.7) and staged reforms "
                      "(tiltak 1.8), on Kafka.",
                 epilog="Settings come from REFORMSPOR_* environment variables; see README.md.")
    @click.version_option(_version(), "--version", prog_name="reformspor", message="%(prog)s %(version)s")
    @click.option("--debug", is_flag=True, envvar="REFORMSPOR_DEBUG",
                  help="show the Python traceback of an error (also REFORMSPOR_DEBUG=1)")
    @click.option("--home", metavar="DIR", help="state, logs and pid files, one per user (default: $REFORMSPOR_HOME, "
                                 "else $XDG_DATA_HOME/reformspor, i.e. ~/.local/share/reformspor)")
    @click.option("--kafka", metavar="HOST:PORT", help="Kafka bootstrap server host:port (default 127.0.0.1:9092)")
    @click.option("--prefix", metavar="PREFIX", help="topic name prefix (default 'reformspor.')")
    @pass_options
    def cli(options: GlobalOptions, debug: bool, home: str | None, kafka: str | None, prefix: str | None) -> None:
        options.debug, options.home, options.kafka, options.prefix = debug, home, kafka, prefix

    for command in (*map(service_command, SERVICE_HELP), up, down, demo, kafka):
        cli.add_command(command)
    for module_name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        register = getattr(module, "register", None)
        if register is not None:
            register(cli)
    return cli


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


def usage_line(error: click.UsageError) -> str:
    """click's usage error as one line, with where to read more."""
    where = f" (see `{error.ctx.command_path} --help`)" if error.ctx is not None else ""
    return " ".join(error.format_message().splitlines()) + where


def run_handler(command: Callable[[], int | None], options: GlobalOptions) -> int:
    """Run the command; every error ends here as one line on stderr and a non-zero exit code."""
    try:
        code = command() or 0
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `reformspor status | head`: the reader has all it wanted. Point stdout at /dev/null so the
        # interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (KeyboardInterrupt, click.Abort):  # click turns Ctrl-C into Abort
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except click.exceptions.NoArgsIsHelpError as error:  # `reformspor` alone: the help, as an error
        print(error.format_message(), file=sys.stderr)
        return error.exit_code
    except click.UsageError as error:
        print(f"error: {usage_line(error)}", file=sys.stderr)
        return error.exit_code
    except click.ClickException as error:  # click's other errors (a file option it could not open, …)
        print(f"error: {' '.join(error.format_message().splitlines())}", file=sys.stderr)
        return error.exit_code
    except Exception as error:
        if options.debug:
            traceback.print_exc()
        message, code = describe_error(error)
        print(f"error: {message}", file=sys.stderr)
        return code


def invoke(cli: click.Group, argv: list[str], options: GlobalOptions) -> int | None:
    """Parse and run, leaving every exception to run_handler (click's own main would turn a closed pipe into 1)."""
    try:
        with cli.make_context("reformspor", argv, obj=options) as ctx:
            return cli.invoke(ctx)
    except click.exceptions.Exit as done:  # --help, --version
        return done.exit_code


def main(argv: list[str] | None = None) -> int:
    """`reformspor ARGS` → the exit code (0 for --help and --version too)."""
    options = GlobalOptions()  # filled in by the group; read here when an error needs --debug
    cli = build_cli()
    args = sys.argv[1:] if argv is None else list(argv)
    return run_handler(lambda: invoke(cli, args, options), options)


if __name__ == "__main__":
    sys.exit(main())
