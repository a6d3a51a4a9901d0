"""`reformspor tokens …` (credentials) and `reformspor publish FILE` (send events to ingest)."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.ingest.client import IngestClient, IngestError, IngestUnavailable
from services.ingest.publishfile import FORMATS, EventsFile, read_events_file
from services.shared.clikit import GlobalOptions, HelpGroup, console_on, pass_options, print_table
from services.shared.secretinput import secret_from
from services.shared.usererror import UserError

BATCH_EVENTS = 200
DEFAULT_WAIT_TIMEOUT_S = 60.0
WAIT_POLL_S = 1.0


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
@click.option("--wait", is_flag=True, help="after the upload, wait until every accepted event is applied or rejected "
                                           "downstream (budsjett, milepael) and print each rejection with its row; "
                                           "exit 1 if any was rejected or is still pending at the timeout")
@click.option("--wait-timeout-s", type=click.FloatRange(min=0), default=DEFAULT_WAIT_TIMEOUT_S, show_default=True,
              metavar="N", help="how long --wait waits, in seconds")
@pass_options
def publish(options: GlobalOptions, file: str, url: str | None, token: str | None, token_file: str | None,
            atomic: bool, file_format: str | None, wait: bool, wait_timeout_s: float) -> int:
    token = secret_from(token, token_file, "REFORMSPOR_TOKEN")
    if not token:
        raise UserError("give --token or --token-file, or set REFORMSPOR_TOKEN "
                        "(create one with `reformspor tokens create`)")
    events_file = read_events_file(file, file_format)
    if not events_file.events and not events_file.problems:
        raise UserError(f"{file}: no events in the file; nothing was sent", exit_code=1)
    err = console_on(stderr=True)  # retry lines go through the console that draws the bar, so they print above it
    with IngestClient(url or options.settings().service_url("ingest"), token, on_retry=err.print) as client:
        return publish_events(client, events_file, atomic=atomic, err=err,
                              wait_timeout_s=wait_timeout_s if wait else None)


@contextmanager
def progress_bar(err: Console, total_events: int) -> Iterator[Progress]:
    """rich's progress bar on stderr, drawn only on a terminal (a pipe or a log gets none)."""
    with Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
                  TimeRemainingColumn(), console=err, disable=not err.is_terminal, transient=False) as progress:
        yield progress


def publish_events(client: IngestClient, events_file: EventsFile, atomic: bool = False,
                   out: TextIO | None = None, err: Console | None = None, batch_events: int = BATCH_EVENTS,
                   wait_timeout_s: float | None = None) -> int:
    """Upload the file's events and print the summary; with wait_timeout_s, then wait for the downstream outcomes."""
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
    code = print_summary(results, events_file, out)
    if wait_timeout_s is None:
        return code
    waited = wait_for_outcomes(client, accepted_locations(results, events_file), wait_timeout_s, out, err.file)
    return max(code, waited.exit_code)


def accepted_locations(results: list[dict[str, Any]], events_file: EventsFile) -> dict[str, str]:
    """Event id → where it is in the file, for every event ingest took (accepted now or before)."""
    return {result["id"]: events_file.locations[result["index"]] for result in results
            if result.get("status") in ("accepted", "duplicate") and result.get("id")}


@dataclass(frozen=True)
class Outcome:
    event_id: str
    location: str
    status: str
    reason: str = ""
    reason_label: str = ""


@dataclass(frozen=True)
class WaitSummary:
    applied: tuple[str, ...]
    rejected: tuple[Outcome, ...]
    pending: tuple[Outcome, ...]  # still pending (or unknown to ingest) at the timeout

    @property
    def exit_code(self) -> int:
        return 1 if self.rejected or self.pending else 0


def wait_for_outcomes(client: IngestClient, ids: dict[str, str], timeout_s: float, out: TextIO,
                      err: TextIO | None = None, poll_s: float = WAIT_POLL_S,
                      clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> WaitSummary:
    """Poll GET /v1/events/{id} for `ids` (id → row) until none is pending or timeout_s has passed.

    A progress line goes to `err`; each rejection (with its row and reason) and what is still pending
    go to `out`. The CLI's --wait is a thin flag over this.
    """
    err = err or sys.stderr
    deadline = clock() + timeout_s
    decided: dict[str, Outcome] = {}
    while True:
        for event_id in [i for i in ids if i not in decided]:
            outcome = poll_outcome(client, event_id, ids[event_id])
            if outcome is not None and outcome.status != "pending":
                decided[event_id] = outcome
        waiting = len(ids) - len(decided)
        rejected = sum(1 for o in decided.values() if o.status == "rejected")
        err.write(f"waiting for downstream outcomes: {len(decided) - rejected} applied, {rejected} rejected, "
                  f"{waiting} pending\n")
        err.flush()
        if not waiting or clock() >= deadline:
            break
        sleep(min(poll_s, max(deadline - clock(), 0.0)))
    return report_outcomes(ids, decided, timeout_s, out)


def poll_outcome(client: IngestClient, event_id: str, location: str) -> Outcome | None:
    """One event's outcome now (None: not known to ingest, or ingest did not answer this time)."""
    try:
        status = client.event_status(event_id)
    except IngestUnavailable:
        return None
    if status is None:
        return None
    return Outcome(event_id, location, status["status"], status.get("reason") or "", status.get("reason_label") or "")


def report_outcomes(ids: dict[str, str], decided: dict[str, Outcome], timeout_s: float, out: TextIO) -> WaitSummary:
    rejected = tuple(o for o in decided.values() if o.status == "rejected")
    applied = tuple(i for i, o in decided.items() if o.status == "applied")
    pending = tuple(Outcome(i, location, "pending") for i, location in ids.items() if i not in decided)
    print(f"downstream: applied {len(applied)}, rejected {len(rejected)}, still pending {len(pending)}", file=out)
    for outcome in rejected:
        print(f"  {outcome.location} id={outcome.event_id} rejected downstream ({outcome.reason_label}): "
              f"{outcome.reason}", file=out)
    for outcome in pending:
        print(f"  {outcome.location} id={outcome.event_id} still pending after {timeout_s:.0f} s", file=out)
    return WaitSummary(applied, rejected, pending)


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
