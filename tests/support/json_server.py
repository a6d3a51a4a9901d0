"""A stand-in HTTP service on a loopback port: answers GETs with JSON from a route function, records each path.

Used where a command talks to a running service (budsjett's /v1/lines for `status` and
`export`) and the test wants that service's answers without a Kafka broker.
"""
from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# route(path without query, query as a dict) -> the JSON body, or None for 404
Route = Callable[[str, dict[str, str]], Any]


class JsonServer(ThreadingHTTPServer):
    def __init__(self, route: Route):
        self.route = route
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def __enter__(self) -> JsonServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(10)


class _Handler(BaseHTTPRequestHandler):
    server: JsonServer

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        path, _, query_text = self.path.partition("?")
        body = self.server.route(path, dict(urllib.parse.parse_qsl(query_text)))
        if body is None:
            self.send_error(404)
            return
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass
