"""Per-request plumbing: bearer-token auth, request ids, JSON access lines, no debug, no paths."""

import json
import logging

import pytest
from pydantic import SecretStr

from service.drain import DrainFlag
from service.web.app import create_app

TOKEN = "s3cret-token"
GOOD = {"detectid": 1, "cutout": [[0.5] * 32] * 9}


@pytest.fixture
def guarded(tiny_runtime):
    settings = tiny_runtime.settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    return create_app(settings, runtime=tiny_runtime).test_client()


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"]
)
def test_scoring_needs_the_token_when_one_is_set(guarded, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method, path in (("post", "/v1/score"), ("post", "/v1/score/batch"), ("get", "/v1/model")):
        reply = getattr(guarded, method)(path, json=GOOD, headers=headers)
        assert reply.status_code == 401 and reply.mimetype == "application/problem+json"
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert reply.get_json()["title"] == "Unauthorized"
    assert guarded.get("/v2/models/linescore", headers=headers).status_code == 401


def test_the_right_token_scores_and_probes_stay_open(guarded):
    reply = guarded.post("/v1/score", json=GOOD, headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200
    for path in ("/livez", "/readyz", "/metrics", "/openapi.yaml"):
        assert guarded.get(path).status_code == 200, path


def test_without_a_token_setting_nothing_is_asked(client):
    assert client.post("/v1/score", json=GOOD).status_code == 200


def test_request_ids_are_echoed_or_made(client):
    given = client.get("/livez", headers={"X-Request-ID": "nightly-2026-11-25.batch:17"})
    assert given.headers["X-Request-ID"] == "nightly-2026-11-25.batch:17"
    for unsafe in ("", "a b", "x" * 129, "<script>"):
        made = client.get("/livez", headers={"X-Request-ID": unsafe}).headers["X-Request-ID"]
        assert made != unsafe and len(made) == 32
    problem = client.post("/v1/score", json={"cutout": []}, headers={"X-Request-ID": "abc"})
    assert problem.get_json()["request_id"] == "abc"


def test_each_request_writes_one_json_access_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="linescore.access"):
        client.post("/v1/score", json=GOOD, headers={"X-Request-ID": "r-1"})
    (record,) = [r for r in caplog.records if r.name == "linescore.access"]
    fields = record.fields
    assert fields["request_id"] == "r-1" and fields["status"] == 200
    assert fields["path"] == "/v1/score" and fields["method"] == "POST"
    assert fields["duration_ms"] > 0 and fields["bytes_in"] > 0 and fields["bytes_out"] > 0
    from service.logs import JsonFormatter

    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "r-1" and line["logger"] == "linescore.access"


def test_the_access_log_can_be_turned_off(tiny_runtime, caplog):
    settings = tiny_runtime.settings.model_copy(update={"access_log": False})
    quiet = create_app(settings, runtime=tiny_runtime).test_client()
    with caplog.at_level(logging.INFO, logger="linescore.access"):
        reply = quiet.post("/v1/score", json=GOOD)
    assert reply.status_code == 200 and reply.headers["X-Request-ID"]
    assert not [r for r in caplog.records if r.name == "linescore.access"]


def test_readiness_turns_503_while_draining(tiny_runtime):
    drain = DrainFlag()
    probe = create_app(tiny_runtime.settings, runtime=tiny_runtime, drain=drain).test_client()
    assert probe.get("/readyz").status_code == 200
    drain.set()
    reply = probe.get("/readyz")
    assert reply.status_code == 503 and reply.get_json()["status"] == "draining"
    assert probe.post("/v1/score", json=GOOD).status_code == 200  # still served while draining


def test_no_debug_and_no_route_takes_a_path(app):
    assert not app.debug and not app.testing
    converters = {name for rule in app.url_map.iter_rules() for name in rule._converters.values()}
    assert not any(type(c).__name__ == "PathConverter" for c in converters)


def test_an_unexpected_error_is_a_problem_without_internals(app, caplog):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal state")

    with caplog.at_level(logging.ERROR):
        reply = app.test_client().get("/boom")
    assert reply.status_code == 500 and reply.mimetype == "application/problem+json"
    assert "secret" not in reply.get_data(as_text=True)
    assert "secret internal state" in caplog.text  # logged for the operator instead
