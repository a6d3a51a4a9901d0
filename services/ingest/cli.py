"""`reformspor tokens …` (credentials) and `reformspor publish FILE` (send events to ingest)."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from services.ingest.client import IngestClient, IngestError, IngestUnavailable
from services.ingest.publishfile import FORMATS, EventsFile, read_events_file
from services.shared.secretinput import secret_from
from services.shared.usererror import UserError

BATCH_EVENTS = 200
DEFAULT_WAIT_TIMEOUT_S = 60.0
WAIT_POLL_S = 1.0


def register(subparsers, settings_from_args: Callable) -> None:
    tokens = subparsers.add_parser(
        "tokens", help="per-ministry credentials for ingest: create, list, revoke",
        description="HTTP bearer tokens (stored hashed) and Kafka users (SCRAM) for the ministry's own inbound topic.")
    actions = tokens.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a credential and print it (shown only once)",
                                description="An HTTP bearer token for POST /v1/events (stored hashed) or, with "
                                            "--kind kafka, the ministry's Kafka user (SCRAM) that may write only its "
                                            "own topic <prefix>inbound.<CODE>; stdout is then exactly the client "
                                            "properties for `kcat -F`. Either lets that ministry publish only its "
                                            "own money and milestones.")
    create.add_argument("--ministry", required=True, help="ministry short code, e.g. BFD")
    create.add_argument("--name", default="", help="a note: which system uses it")
    create.add_argument("--kind", choices=["http", "kafka"], default="http",
                        help="http: bearer token for POST /v1/events; kafka: the ministry's SCRAM user (kcat -F properties)")
    create.set_defaults(handler=lambda args: _tokens_create(args, settings_from_args(args)))
    listing = actions.add_parser("list", help="list credentials (never the secrets)",
                                 description="Every HTTP token and Kafka user of this stack: id, ministry, kind, "
                                             "when it was created and whether it is revoked. Secrets are never shown.")
    listing.set_defaults(handler=lambda args: _tokens_list(settings_from_args(args)))
    revoke = actions.add_parser("revoke", help="revoke a credential by id",
                                description="Refuse a token from now on, or delete a Kafka user and its ACLs (the "
                                            "row is kept for the audit trail). Find the id with `reformspor tokens list`.")
    revoke.add_argument("id", type=int, help="the credential's id, as `tokens list` shows it")
    revoke.set_defaults(handler=lambda args: _tokens_revoke(args, settings_from_args(args)))

    publish = subparsers.add_parser(
        "publish", help="send events from an NDJSON, JSON, CSV or xlsx file to ingest",
        description="Send events to ingest in batches with a progress bar. Transient failures (503, timeouts) are "
                    "retried with a line per retry (same ids, so it is safe); a wrong URL or a stopped stack fails at "
                    "once. CSV/xlsx columns: id, ministry|source, kind|type, time, data.<field>; CSV as Excel saves it "
                    "(';' or ',', decimal comma, UTF-8 or Windows-1252). Messages name the row as the spreadsheet "
                    "shows it. Exit code 1 if any event was rejected or the file held none, 2 if nothing could be sent.")
    publish.add_argument("file", help="events file (.ndjson/.jsonl, .json, .csv, .xlsx; '-' for stdin as NDJSON/JSON)")
    publish.add_argument("--url", help="ingest base URL (default: this stack's ingest)")
    publish.add_argument("--token", help="bearer token (default: $REFORMSPOR_TOKEN, or the file $REFORMSPOR_TOKEN_FILE)")
    publish.add_argument("--token-file", help="read the bearer token from this file (keeps it out of `ps`)")
    publish.add_argument("--atomic", action="store_true", help="all or nothing, per request (at most 500 events)")
    publish.add_argument("--format", choices=FORMATS, help="override detection by file name and content")
    publish.add_argument("--wait", action="store_true",
                         help="after the upload, wait until every accepted event is applied or rejected downstream "
                              "(budsjett, milepael) and print each rejection with its row; exit 1 if any was "
                              "rejected or is still pending at the timeout")
    publish.add_argument("--wait-timeout-s", type=float, default=DEFAULT_WAIT_TIMEOUT_S, metavar="N",
                         help=f"how long --wait waits, in seconds (default {DEFAULT_WAIT_TIMEOUT_S:.0f})")
    publish.set_defaults(handler=lambda args: publish_command(args, settings_from_args(args)))


def _tokens_create(args, settings) -> int:
    from services.ingest.tokens import CredentialError, issue_credential

    try:
        issued = issue_credential(settings, args.ministry, name=args.name, kind=args.kind)
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


def _tokens_list(settings) -> int:
    from services.ingest.store import IngestStore

    rows = IngestStore(settings.db_url("ingest")).list_credentials()
    print(f"{'ID':>4}  {'MINISTRY':8}  {'KIND':5}  {'CREATED':20}  {'STATUS':8}  NAME")
    for row in rows:
        status = "revoked" if row.revoked_at else "active"
        print(f"{row.id:>4}  {row.ministry:8}  {row.kind:5}  {row.created_at:%Y-%m-%d %H:%M:%S}  {status:8}  {row.name}")
    return 0


def _tokens_revoke(args, settings) -> int:
    from services.ingest.tokens import CredentialError, revoke_credential

    try:
        revoked = revoke_credential(settings, args.id)
    except CredentialError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if revoked:
        print(f"Revoked credential {args.id}; it is refused from now on.")
        return 0
    raise UserError(f"no active credential with id {args.id} (see `reformspor tokens list`)", exit_code=1)


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, width: int = 30):
        self.total = max(total, 1)
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()

    def update(self, done: int) -> None:
        filled = int(self.width * done / self.total)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} events"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def publish_command(args: argparse.Namespace, settings) -> int:
    token = secret_from(args.token, args.token_file, "REFORMSPOR_TOKEN")
    if not token:
        raise UserError("give --token or --token-file, or set REFORMSPOR_TOKEN "
                        "(create one with `reformspor tokens create`)")
    events_file = read_events_file(args.file, args.format)
    if not events_file.events and not events_file.problems:
        raise UserError(f"{args.file}: no events in the file; nothing was sent", exit_code=1)
    # On a terminal the progress bar holds the current line: a retry line starts below it.
    below_bar = "\n" if sys.stderr.isatty() else ""
    with IngestClient(args.url or settings.service_url("ingest"), token,
                      on_retry=lambda line: print(below_bar + line, file=sys.stderr, flush=True)) as client:
        return publish_events(client, events_file, atomic=args.atomic,
                              wait_timeout_s=args.wait_timeout_s if args.wait else None)


def publish_events(client: IngestClient, events_file: EventsFile, atomic: bool = False,
                   out: TextIO | None = None, err: TextIO | None = None, batch_events: int = BATCH_EVENTS,
                   wait_timeout_s: float | None = None) -> int:
    """Upload the file's events and print the summary; with wait_timeout_s, then wait for the downstream outcomes."""
    out, err = out or sys.stdout, err or sys.stderr  # looked up now: tests and pipes replace sys.stdout
    events = events_file.events
    progress = Progress(len(events), err)
    results: list[dict[str, Any]] = []
    try:
        for start in range(0, len(events), batch_events):
            for result in client.publish(events[start:start + batch_events], atomic=atomic):
                results.append({**result, "index": start + int(result.get("index", 0))})
            progress.update(min(start + batch_events, len(events)))
    except IngestError as error:
        progress.close()
        if not results:
            raise  # nothing was answered: the CLI's one-line error says it all
        print(f"error: {error}", file=err)
        print(f"{len(results)} of {len(events)} events were answered before the error; resending the file is safe.",
              file=err)
        return 2
    progress.close()
    code = print_summary(results, events_file, out)
    if wait_timeout_s is None:
        return code
    waited = wait_for_outcomes(client, accepted_locations(results, events_file), wait_timeout_s, out, err)
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
