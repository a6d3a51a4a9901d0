"""budsjett's and milepael's OpenAPI documents: valid, every route documented and nothing more, the answers as
documented; schemathesis drives the GET routes (no 5xx, every status documented)."""
from __future__ import annotations

import json
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from aiohttp import web

from services.budsjett.http import LedgerRoutes
from services.milepael.http import ReformRoutes
from services.shared.config import Settings
from tests.support.http_app import documented_routes, get, registered_routes, service_app
from tests.unit.test_budsjett_http import budsjett  # noqa: F401 - fixture
from tests.unit.test_milepael_http import milepael  # noqa: F401 - fixture

schemathesis = pytest.importorskip("schemathesis")

SERVICES = ("budsjett", "milepael")
SAMPLE_PATHS = {"budsjett": ("/v1/lines", "/v1/lines?as_of=2026-03-01", "/v1/lines/0-24", "/v1/lines/0-24/events",
                             "/v1/lines/0-24/events?limit=2&offset=2", "/v1/status"),
                "milepael": ("/v1/reforms", "/v1/reforms/R1")}


@pytest.fixture(params=SERVICES)
def service(request) -> tuple[str, str]:
    """(service, base URL) of a running HTTP view over a filled read model."""
    fixture = request.getfixturevalue(request.param)
    return request.param, fixture[0] if isinstance(fixture, tuple) else fixture


def served_document(base_url: str) -> dict:
    reply = get(f"{base_url}/openapi.json")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
    return reply.json()


def schema_of(document: dict, path: str, status: str, media_type: str = "application/json") -> Draft202012Validator:
    operation = document["paths"][path]["get"]
    schema = operation["responses"][status]["content"][media_type]["schema"]
    return Draft202012Validator({**schema, "components": document["components"]})


def template_of(document: dict, path: str) -> str:
    """The documented path template a concrete path falls under."""
    parts = path.split("?")[0].strip("/").split("/")
    for template in document["paths"]:
        pieces = template.strip("/").split("/")
        if len(pieces) == len(parts) and all(p == q or p.startswith("{") for p, q in zip(pieces, parts)):
            return template
    raise AssertionError(f"{path} is not documented")


def application(name: str, tmp_path) -> web.Application:
    """The service's application with its routes registered, as its main() wires it (registering reads nothing)."""
    app = service_app(name, Settings(home=tmp_path))
    routes = LedgerRoutes(None, None, None) if name == "budsjett" else ReformRoutes(None)
    routes.register(app)
    return app


def test_the_document_is_valid_openapi_and_documents_exactly_the_routes_served(service, tmp_path):
    name, base_url = service
    document = served_document(base_url)
    validate(document)  # OpenAPI 3.1 rules, with its JSON Schema dialect
    assert document["info"]["title"] == f"Reformspor {name}"
    # every route the service's application registers is documented, and nothing else is
    assert documented_routes(document) == registered_routes(application(name, tmp_path))


def test_json_answers_match_their_documented_schemas(service):
    name, base_url = service
    document = served_document(base_url)
    for path in SAMPLE_PATHS[name]:
        reply = get(base_url + path)
        assert reply.status == 200, path
        errors = list(schema_of(document, template_of(document, path), "200").iter_errors(reply.json()))
        assert not errors, (path, [e.message for e in errors[:3]])


def test_schemathesis_finds_no_server_error_and_every_status_is_documented(service):
    name, base_url = service
    document = served_document(base_url)
    schema = schemathesis.openapi.from_dict(document)
    statuses: set[int] = set()
    for path, item in document["paths"].items():
        if path in ("/metrics", "/readyz"):
            continue  # ServiceHttp's, with no Kafka here (readyz would say so)
        operation = schema[path]["GET"]
        modes = [schemathesis.GenerationMode.POSITIVE]
        # Nothing to get wrong without a query parameter (a path's string has no wrong value but the empty one,
        # which cannot be sent).
        if any(parameter["in"] == "query" for parameter in item["get"].get("parameters", [])):
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            @hsettings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(operation.as_strategy(generation_mode=mode))
            def run(case):
                # Our own HTTP call, as ingest's test does (schemathesis' transport clashes with the urllib3 here).
                url = base_url + case.formatted_path + (
                    "?" + urllib.parse.urlencode(case.query or {}, doseq=True) if case.query else "")
                reply = get(url)
                statuses.add(reply.status)
                assert reply.status < 500, (url, reply.body[:300])
                assert str(reply.status) in item["get"]["responses"], (url, reply.status)
                if reply.status >= 400:
                    problem = reply.json()
                    assert reply.headers["Content-Type"].startswith("application/problem+json")
                    assert problem["status"] == reply.status and problem["title"] and problem["detail"]

            run()
    assert 200 in statuses and statuses & {400, 404}, statuses


def test_ingests_document_built_on_the_shared_frame_is_valid_too():
    from services.ingest.openapi import openapi_document

    document = openapi_document()
    validate(document)
    assert {"/v1/events", "/v1/events/{id}", "/v1/status", "/healthz", "/readyz", "/metrics",
            "/openapi.json"} == set(document["paths"])
    assert "errors" in document["components"]["schemas"]["Problem"]["properties"]
