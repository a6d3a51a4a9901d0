"""A small publisher client for ministry systems: standard library only.

    client = IngestClient("http://127.0.0.1:8180", token)
    results = client.publish([event, ...])   # [{"id", "status", "reasons", ...}, ...]

Retries on 503 and connection errors are safe: every event carries its id, so
an event Kafka already has comes back as `duplicate`, never twice.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from services.shared.jsonio import dumps_raw

MAX_BATCH_EVENTS = 500


class IngestError(RuntimeError):
    """The request as a whole was refused (401, 413, 400 …); `problem` is the server's RFC 9457 body."""

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        super().__init__(f"HTTP {status}: {problem.get('title', '')}: {problem.get('detail', '')}")


class IngestUnavailable(IngestError):
    """Ingest or Kafka stayed unavailable through every retry; nothing unacknowledged was counted."""


class IngestClient:
    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0, retries: int = 8,
                 backoff_s: float = 1.0, sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep

    def publish(self, events: list[Any], atomic: bool = False) -> list[dict[str, Any]]:
        """POST events (split into batches of at most 500); one result per event, in order.

        Each result has id, status (accepted | duplicate | rejected | conflict),
        code (finer: invalid, forbidden, not_sent …) and reasons [{path, reason}].
        """
        if atomic and len(events) > MAX_BATCH_EVENTS:
            raise ValueError(f"an atomic publish is one request: at most {MAX_BATCH_EVENTS} events")
        results: list[dict[str, Any]] = []
        for start in range(0, len(events), MAX_BATCH_EVENTS):
            batch = events[start:start + MAX_BATCH_EVENTS]
            for result in self._post_batch(batch, atomic):
                results.append({**result, "index": start + int(result.get("index", 0))})
        return results

    def _post_batch(self, batch: list[Any], atomic: bool) -> list[dict[str, Any]]:
        url = f"{self.base_url}/v1/events" + ("?atomic=true" if atomic else "")
        body = dumps_raw(batch)
        attempt = 0
        while True:
            attempt += 1
            request = urllib.request.Request(url, data=body, method="POST", headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
            retry_after = self.backoff_s * min(2 ** (attempt - 1), 10)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return self._results(response.status, response.read())
            except urllib.error.HTTPError as error:
                payload = error.read()
                if error.code != 503:
                    return self._results(error.code, payload)
                try:
                    retry_after = max(retry_after, float(error.headers.get("Retry-After", "0")))
                except ValueError:
                    pass
                last: IngestError = IngestUnavailable(503, _problem(payload))
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
                last = IngestUnavailable(0, {"title": "ingest unreachable", "detail": str(error)})
            if attempt > self.retries:
                raise last
            self.sleep(retry_after)

    @staticmethod
    def _results(status: int, payload: bytes) -> list[dict[str, Any]]:
        document = _problem(payload)
        results = document.get("results")
        if not isinstance(results, list):
            raise IngestError(status, document)
        return results


def _problem(payload: bytes) -> dict[str, Any]:
    try:
        document = json.loads(payload.decode("utf-8"))
        return document if isinstance(document, dict) else {"detail": str(document)}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"detail": payload[:500].decode("utf-8", "replace")}
