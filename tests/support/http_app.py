"""A service's aiohttp application served in-process on a loopback port, for tests of its HTTP views."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from services.shared.config import Settings
from services.shared.streaming import ServiceHttp


def service_app(service: str, settings: Settings) -> web.Application:
    """The application the service's ServiceHttp builds (standard routes, problem+json boundary), not started."""
    return ServiceHttp(service, settings, CollectorRegistry()).app


@contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (a port the OS picks) in a thread; yield its base URL; stop it after."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def csv_rows(self) -> list[dict[str, str]]:
        """The CSV as Excel would read it: BOM, `;` separator."""
        assert self.body.startswith(b"\xef\xbb\xbf"), "no BOM: Excel would not read UTF-8"
        return list(csv.DictReader(io.StringIO(self.body.decode("utf-8-sig"), newline=""), delimiter=";"))


def get(url: str, accept: str | None = None, timeout_s: float = 10.0) -> Reply:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), error.read())


def registered_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route the application serves (HEAD is aiohttp's, for each GET)."""
    return {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
            if route.method != "HEAD"}


def documented_routes(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}
