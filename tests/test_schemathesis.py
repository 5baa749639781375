"""Property-based API testing: schemathesis generates requests from openapi.yaml, valid and not,
against real gunicorn; every response must be a non-5xx that conforms to the document.

``make test`` runs a few hundred cases; ``make soak`` sets SCHEMATHESIS_EXAMPLES for thousands.
The server requires a token and every case sends it, so the token path is the one exercised
(requests without it are tests/service/web/test_hooks.py's).
"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.live import ROOT, live_server

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "30"))
TOKEN = "schemathesis-token"
AUTHORIZATION = {"Authorization": f"Bearer {TOKEN}"}

BINARY = ("application/x-npy", "application/x-npz")

schemathesis.serializer.alias(list(BINARY), "application/octet-stream")  # arbitrary bytes
schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
cases: list[int] = []


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    env = {"LINESCORE_API_TOKEN": TOKEN, "LINESCORE_MAX_BATCH": "64"}
    with live_server(tmp_path_factory.mktemp("schemathesis"), env=env) as live:
        yield live.url
        log = live.log()
    assert "Traceback" not in log, log[-3000:]
    print(f"schemathesis: {len(cases)} cases against {len(schema)} operations")
    assert len(cases) >= 5 * EXAMPLES  # the run really generated and sent hundreds of cases


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_contract(case, base_url):
    cases.append(1)
    # Any bytes are a schema-valid binary body, but only real .npy/.npz files can be accepted.
    excluded = [positive_data_acceptance] if case.media_type in BINARY else []
    response = case.call_and_validate(
        base_url=base_url, headers=AUTHORIZATION, excluded_checks=excluded, timeout=30
    )
    assert response.status_code < 500
