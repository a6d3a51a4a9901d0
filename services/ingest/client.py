"""A small publisher client for ministry systems (httpx for HTTP, tenacity for the retries).

    with IngestClient("http://127.0.0.1:8180", token) as client:
        results = client.publish([event, ...])   # [{"id", "status", "reasons", ...}, ...]

Errors are sorted into two kinds:

- permanent, raised at once: a malformed URL, a host name that does not
  resolve, a refused connection before ingest ever answered (wrong port, the
  stack is not running), and any answer other than 429/502/503/504;
- transient, retried with backoff (honouring `Retry-After`), one line per
  retry through `on_retry`: 429/502/503/504, timeouts, a connection dropped
  mid-request, or refused after ingest has answered once (a restart).

Retrying is safe: every event carries its id, so an event Kafka already has
comes back as `duplicate`, never twice.
"""
from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any, Callable

import httpx
import tenacity

from services.shared.jsonio import dumps_raw
from services.shared.usererror import UserError

MAX_BATCH_EVENTS = 500
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
MAX_BACKOFF_FACTOR = 10


class IngestError(UserError):
    """The request as a whole was refused (401, 413, 400 …); `problem` is the server's RFC 9457 body."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after_s: float = 0.0):
        self.status = status
        self.problem = problem
        self.retry_after_s = retry_after_s
        title, detail = problem.get("title", ""), problem.get("detail", "")
        text = f"{title}: {detail}" if title and detail else title or detail
        super().__init__(f"HTTP {status}: {text}" if status else text)


class IngestUnavailable(IngestError):
    """Transient: ingest or Kafka is unavailable right now; retried, raised when the retries run out."""


class IngestUnreachable(IngestError):
    """Permanent: nothing answers at that URL (bad URL, unknown host, connection refused); not retried."""


def _unreachable(base_url: str, error: Exception) -> IngestUnreachable:
    reason = str(error) or type(error).__name__
    if "refused" in reason.lower():
        reason = "connection refused (is the stack running? `reformspor up`)"
    return IngestUnreachable(0, {"title": f"ingest is not reachable at {base_url}", "detail": reason})


class IngestClient:
    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0, retries: int = 8,
                 backoff_s: float = 1.0, sleep: Callable[[float], None] = time.sleep,
                 on_retry: Callable[[str], None] = lambda line: None):
        self.base_url = base_url.rstrip("/")
        url = httpx.URL(self.base_url) if "://" in self.base_url else None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise IngestUnreachable(0, {"title": f"not an http(s) URL: {base_url!r}",
                                        "detail": "give it like http://127.0.0.1:8180"})
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.on_retry = on_retry
        self.http = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {token}"})
        self.answered = False  # once ingest has answered, a refused connection is a restart: transient

    def __enter__(self) -> "IngestClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def publish(self, events: list[Any], atomic: bool = False) -> list[dict[str, Any]]:
        """POST events (split into batches of at most 500); one result per event, in order.

        Each result has id, status (accepted | duplicate | rejected | conflict),
        code (finer: invalid, forbidden, not_sent …) and reasons [{path, reason}].
        """
        if atomic and len(events) > MAX_BATCH_EVENTS:
            raise UserError(f"an atomic publish is one request: at most {MAX_BATCH_EVENTS} events")
        results: list[dict[str, Any]] = []
        for start in range(0, len(events), MAX_BATCH_EVENTS):
            batch = events[start:start + MAX_BATCH_EVENTS]
            for result in self._post_batch(batch, atomic):
                results.append({**result, "index": start + int(result.get("index", 0))})
        return results

    def event_status(self, event_id: str) -> dict[str, Any] | None:
        """GET /v1/events/{id}: {"id", "status": applied | pending | rejected, "reason", …}; None when ingest
        knows no event of this publisher with that id. Transient failures raise IngestUnavailable (not retried:
        the caller polls again)."""
        url = f"{self.base_url}/v1/events/{urllib.parse.quote(event_id, safe='')}"
        try:
            response = self.http.get(url)
        except httpx.ConnectError as error:
            raise IngestUnavailable(0, {"title": "ingest unreachable", "detail": str(error)}) from None
        except httpx.TransportError as error:
            raise IngestUnavailable(0, {"title": "no answer from ingest",
                                        "detail": str(error) or type(error).__name__}) from None
        if response.status_code == 404:
            return None
        if response.status_code in TRANSIENT_STATUSES:
            raise IngestUnavailable(response.status_code, _problem(response.content))
        document = _problem(response.content)
        if response.status_code != 200 or "status" not in document:
            raise IngestError(response.status_code, document)
        return document

    def _post_batch(self, batch: list[Any], atomic: bool) -> list[dict[str, Any]]:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=self._wait_s,
            retry=tenacity.retry_if_exception_type(IngestUnavailable),
            before_sleep=self._report_retry,
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(self._post_once, dumps_raw(batch), atomic)

    def _post_once(self, body: bytes, atomic: bool) -> list[dict[str, Any]]:
        url = f"{self.base_url}/v1/events" + ("?atomic=true" if atomic else "")
        try:
            response = self.http.post(url, content=body, headers={"Content-Type": "application/json"})
        except httpx.ConnectError as error:
            if not self.answered:
                raise _unreachable(self.base_url, error) from None
            raise IngestUnavailable(0, {"title": "ingest unreachable", "detail": str(error)}) from None
        except httpx.UnsupportedProtocol as error:
            raise _unreachable(self.base_url, error) from None
        except httpx.TransportError as error:  # timeouts, a connection dropped mid-request
            raise IngestUnavailable(0, {"title": "no answer from ingest",
                                        "detail": str(error) or type(error).__name__}) from None
        self.answered = True
        if response.status_code in TRANSIENT_STATUSES:
            raise IngestUnavailable(response.status_code, _problem(response.content),
                                    retry_after_s=_retry_after_s(response.headers.get("Retry-After")))
        return self._results(response.status_code, response.content)

    def _wait_s(self, state: tenacity.RetryCallState) -> float:
        backoff_s = self.backoff_s * min(2 ** (state.attempt_number - 1), MAX_BACKOFF_FACTOR)
        error = state.outcome.exception() if state.outcome else None
        return max(backoff_s, error.retry_after_s if isinstance(error, IngestError) else 0.0)

    def _report_retry(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        self.on_retry(f"ingest: {error}; retry {state.attempt_number}/{self.retries} in {wait_s:.1f} s "
                      "(same event ids, so resending is safe)")

    @staticmethod
    def _results(status: int, payload: bytes) -> list[dict[str, Any]]:
        document = _problem(payload)
        results = document.get("results")
        if not isinstance(results, list):
            raise IngestError(status, document)
        return results


def _retry_after_s(header: str | None) -> float:
    try:
        return max(float(header or 0), 0.0)
    except ValueError:
        return 0.0  # an HTTP date: fall back to our own backoff


def _problem(payload: bytes) -> dict[str, Any]:
    try:
        document = json.loads(payload.decode("utf-8"))
        return document if isinstance(document, dict) else {"detail": str(document)}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"detail": payload[:500].decode("utf-8", "replace")}
