"""`reformspor tokens …` (credentials) and `reformspor publish FILE` (send events to ingest)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.ingest.client import IngestClient, IngestError
from services.ingest.publishfile import FORMATS, EventsFile, read_events_file
from services.shared.clikit import GlobalOptions, HelpGroup, console_on, pass_options, print_table
from services.shared.secretinput import secret_from
from services.shared.usererror import UserError

BATCH_EVENTS = 200


def register(cli: click.Group) -> None:
    cli.add_command(tokens)
    cli.add_command(publish)


@click.group(cls=HelpGroup, short_help="per-ministry credentials for ingest: create, list, revoke",
             help="HTTP bearer tokens (stored hashed) and Kafka users (SCRAM) for the ministry's own inbound topic.")
def tokens() -> None:
    pass


@tokens.command("create", short_help="create a credential and print it (shown only once)",
                help="An HTTP bearer token for POST /v1/events (stored hashed) or, with --kind kafka, the "
                     "ministry's Kafka user (SCRAM) that may write only its own topic <prefix>inbound.<CODE>; "
                     "stdout is then exactly the client properties for `kcat -F`. Either lets that ministry "
                     "publish only its own money and milestones.")
@click.option("--ministry", required=True, metavar="CODE", help="ministry short code, e.g. BFD")
@click.option("--name", default="", help="a note: which system uses it")
@click.option("--kind", type=click.Choice(["http", "kafka"]), default="http", show_default=True,
              help="http: bearer token for POST /v1/events; kafka: the ministry's SCRAM user (kcat -F properties)")
@pass_options
def tokens_create(options: GlobalOptions, ministry: str, name: str, kind: str) -> int:
    from services.ingest.tokens import CredentialError, issue_credential

    settings = options.settings()
    try:
        issued = issue_credential(settings, ministry, name=name, kind=kind)
    except CredentialError as error:
        raise UserError(str(error)) from None
    if issued.kind == "http":
        print(f"Created HTTP token id {issued.id} for {issued.ministry}. It is shown only once:")
        print(issued.secret)
        print("Use it as: Authorization: Bearer <token>   (or REFORMSPOR_TOKEN for `reformspor publish`)", file=sys.stderr)
    else:  # stdout is exactly the client properties file: `... --kind kafka > bfd.properties; kcat -F bfd.properties`
        print(f"Created Kafka user for {issued.ministry} (credential id {issued.id}); the password is shown only once. "
              f"Publish to its own topic {settings.topics.inbound_for(issued.ministry)}.", file=sys.stderr)
        print(issued.secret, end="")
    return 0


TOKEN_COLUMNS = ("ID", "MINISTRY", "KIND", "CREATED", "STATUS", "NAME")


@tokens.command("list", short_help="list credentials (never the secrets)",
                help="Every HTTP token and Kafka user of this stack: id, ministry, kind, when it was created and "
                     "whether it is revoked. Secrets are never shown.")
@pass_options
def tokens_list(options: GlobalOptions) -> int:
    from services.ingest.store import IngestStore

    rows = IngestStore(options.settings().db_url("ingest")).list_credentials()
    print_table(TOKEN_COLUMNS, [(str(row.id), row.ministry, row.kind, f"{row.created_at:%Y-%m-%d %H:%M:%S}",
                                 "revoked" if row.revoked_at else "active", row.name) for row in rows],
                right_aligned=[0])
    return 0


@tokens.command("revoke", short_help="revoke a credential by id",
                help="Refuse a token from now on, or delete a Kafka user and its ACLs (the row is kept for the "
                     "audit trail). Find the id with `reformspor tokens list`.\n\nID is the credential's id, as "
                     "`tokens list` shows it.")
@click.argument("credential_id", metavar="ID", type=int)
@pass_options
def tokens_revoke(options: GlobalOptions, credential_id: int) -> int:
    from services.ingest.tokens import CredentialError, revoke_credential

    try:
        revoked = revoke_credential(options.settings(), credential_id)
    except CredentialError as error:
        raise UserError(str(error)) from None
    if revoked:
        print(f"Revoked credential {credential_id}; it is refused from now on.")
        return 0
    raise UserError(f"no active credential with id {credential_id} (see `reformspor tokens list`)", exit_code=1)


@click.command(short_help="send events from an NDJSON, JSON, CSV or xlsx file to ingest",
               help="Send events to ingest in batches with a progress bar. Transient failures (503, timeouts) are "
                    "retried with a line per retry (same ids, so it is safe); a wrong URL or a stopped stack fails "
                    "at once. CSV/xlsx columns: id, ministry|source, kind|type, time, data.<field>; CSV as Excel "
                    "saves it (';' or ',', decimal comma, UTF-8 or Windows-1252). Messages name the row as the "
                    "spreadsheet shows it. Exit code 1 if any event was rejected or the file held none, 2 if "
                    "nothing could be sent.\n\nFILE is .ndjson/.jsonl, .json, .csv or .xlsx; '-' for stdin as "
                    "NDJSON/JSON.")
@click.argument("file")
@click.option("--url", metavar="URL", help="ingest base URL (default: this stack's ingest)")
@click.option("--token", metavar="TOKEN",
              help="bearer token (default: $REFORMSPOR_TOKEN, or the file $REFORMSPOR_TOKEN_FILE)")
@click.option("--token-file", metavar="FILE", help="read the bearer token from this file (keeps it out of `ps`)")
@click.option("--atomic", is_flag=True, help="all or nothing, per request (at most 500 events)")
@click.option("--format", "file_format", type=click.Choice(FORMATS), help="override detection by file name and content")
@pass_options
def publish(options: GlobalOptions, file: str, url: str | None, token: str | None, token_file: str | None,
            atomic: bool, file_format: str | None) -> int:
    token = secret_from(token, token_file, "REFORMSPOR_TOKEN")
    if not token:
        raise UserError("give --token or --token-file, or set REFORMSPOR_TOKEN "
                        "(create one with `reformspor tokens create`)")
    events_file = read_events_file(file, file_format)
    if not events_file.events and not events_file.problems:
        raise UserError(f"{file}: no events in the file; nothing was sent", exit_code=1)
    err = console_on(stderr=True)  # retry lines go through the console that draws the bar, so they print above it
    with IngestClient(url or options.settings().service_url("ingest"), token, on_retry=err.print) as client:
        return publish_events(client, events_file, atomic=atomic, err=err)


@contextmanager
def progress_bar(err: Console, total_events: int) -> Iterator[Progress]:
    """rich's progress bar on stderr, drawn only on a terminal (a pipe or a log gets none)."""
    with Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
                  TimeRemainingColumn(), console=err, disable=not err.is_terminal, transient=False) as progress:
        yield progress


def publish_events(client: IngestClient, events_file: EventsFile, atomic: bool = False,
                   out: TextIO | None = None, err: Console | None = None, batch_events: int = BATCH_EVENTS) -> int:
    out, err = out or sys.stdout, err or console_on(stderr=True)  # looked up now: tests and pipes replace sys.stdout
    events = events_file.events
    results: list[dict[str, Any]] = []
    try:
        with progress_bar(err, len(events)) as progress:
            task = progress.add_task("publish", total=len(events))
            for start in range(0, len(events), batch_events):
                for result in client.publish(events[start:start + batch_events], atomic=atomic):
                    results.append({**result, "index": start + int(result.get("index", 0))})
                progress.update(task, completed=min(start + batch_events, len(events)))
    except IngestError as error:
        if not results:
            raise  # nothing was answered: the CLI's one-line error says it all
        err.print(f"error: {error}")
        err.print(f"{len(results)} of {len(events)} events were answered before the error; resending the file is safe.")
        return 2
    return print_summary(results, events_file, out)


def print_summary(results: list[dict[str, Any]], events_file: EventsFile, out: TextIO) -> int:
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0, "conflict": 0}
    for result in results:
        counts[result.get("status", "rejected")] = counts.get(result.get("status", "rejected"), 0) + 1
    counts["rejected"] += len(events_file.problems)
    print(f"accepted {counts['accepted']}, duplicate {counts['duplicate']}, "
          f"rejected {counts['rejected']}, conflict {counts['conflict']}", file=out)
    for problem in events_file.problems:
        print(f"  {problem.location}: unreadable: {problem.reason}", file=out)
    for result in results:
        if result.get("status") in ("rejected", "conflict"):
            reasons = "; ".join(f"{r['path'] + ': ' if r.get('path') else ''}{r['reason']}" for r in result.get("reasons", []))
            print(f"  {events_file.locations[result['index']]} id={result.get('id')} {result['status']} "
                  f"({result.get('code', '')}): {reasons}", file=out)
    return 1 if counts["rejected"] or counts["conflict"] else 0
