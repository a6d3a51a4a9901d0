"""The served OpenAPI document drives schemathesis against the live service: no 5xx, responses as documented.

Strings come from schemathesis' default strategies (NUL allowed, any Unicode UTF-8 can carry), in
every declared request media type.
"""
from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings as hsettings

from services.ingest.testing import post
from services.ingest.tokens import issue_token

schemathesis = pytest.importorskip("schemathesis")
pytestmark = pytest.mark.integration


def test_schemathesis_finds_no_server_error_and_responses_match_the_document(stack, settings):
    token = issue_token(settings, "BFD")
    stack.start_service("ingest")
    base_url = settings.service_url("ingest")
    document = json.loads(urllib.request.urlopen(base_url + "/openapi.json", timeout=10).read())
    schema = schemathesis.openapi.from_dict(document)
    operation = schema["/v1/events"]["POST"]
    statuses: set[int] = set()
    media_types: set[str | None] = set()

    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
        @hsettings(max_examples=75, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy(generation_mode=mode))
        def run(case):
            # Our own HTTP call: schemathesis' requests transport clashes with the installed urllib3.
            query = urllib.parse.urlencode(case.query or {}, doseq=True)
            body = case.body if isinstance(case.body, bytes) else \
                json.dumps(case.body, ensure_ascii=False).encode("utf-8", "surrogatepass")
            status, headers, reply = post(f"{base_url}/v1/events" + (f"?{query}" if query else ""), body, token,
                                          headers={"Content-Type": case.media_type or "application/json"})
            statuses.add(status)
            media_types.add(case.media_type)
            assert status < 500, reply
            assert str(status) in document["paths"]["/v1/events"]["post"]["responses"]
            if status >= 400:
                assert headers["Content-Type"].startswith("application/problem+json")
                assert reply["status"] == status and reply["title"] and reply["detail"]
            else:
                assert {r["status"] for r in reply["results"]} <= {"accepted", "duplicate", "rejected", "conflict"}

        run()

    assert statuses & {400, 403, 422}, statuses
    # every media type the document declares was exercised (the CloudEvents ones too)
    assert media_types >= set(document["paths"]["/v1/events"]["post"]["requestBody"]["content"]), media_types
