"""Hostile input over real HTTP: every bad request is a 4xx problem naming the field, the server
stays ready and keeps scoring, and a batch never loses, duplicates or reorders an item."""

import io
import json
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import numpy as np
import pytest
import requests

from tests.live import live_server
from training.simulators.a import simulate

MAX_BATCH = 64
MAX_BODY = 1024 * 1024
GOOD_ROW = [0.5] * 32
GOOD = [GOOD_ROW] * 9
PROBLEM = "application/problem+json"
SCORE, BATCH = "/v1/score", "/v1/score/batch"


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    env = {"LINESCORE_MAX_BATCH": str(MAX_BATCH), "LINESCORE_MAX_BODY_BYTES": str(MAX_BODY)}
    with live_server(tmp_path_factory.mktemp("hostile"), env=env) as live:
        yield live.url
        log = live.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


def with_cutout(cutout) -> dict:
    return {"detectid": 7, "cutout": cutout}


def json_text(text: str) -> tuple[str, bytes]:
    return "application/json", text.encode()


def npy(array: np.ndarray) -> tuple[str, bytes]:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return "application/x-npy", buffer.getvalue()


def npz(**arrays: np.ndarray) -> tuple[str, bytes]:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return "application/x-npz", buffer.getvalue()


def single(document) -> tuple[str, bytes]:
    return "application/json", json.dumps(document).encode()


def with_literal(token: str) -> tuple[str, bytes]:
    """A JSON cutout whose first pixel is written as ``token`` (NaN, Infinity, 1e400...)."""
    rows = [[token] + ["0"] * 31] + [["0"] * 32] * 8
    text = ", ".join("[" + ", ".join(row) + "]" for row in rows)
    return json_text('{"cutout": [' + text + "]}")


def nested(depth: int) -> bytes:
    return b'{"cutout": ' + b"[" * depth + b"]" * depth + b"}"


THREE = np.full((3, 9, 32), 0.5, dtype=np.float32)

# (name, path, (content type, body), status, pointer prefix)
HOSTILE = [
    ("malformed JSON", SCORE, json_text('{"cutout": [['), 400, "/"),
    ("invalid UTF-8", SCORE, ("application/json", b'{"cutout": "\xff\xfe"}'), 400, "/"),
    ("text/plain", SCORE, ("text/plain", b"1 2 3"), 415, "/"),
    ("no content type", SCORE, ("", json.dumps(with_cutout(GOOD)).encode()), 415, "/"),
    ("form data", SCORE, ("application/x-www-form-urlencoded", b"cutout=1"), 415, "/"),
    ("missing cutout", SCORE, single({"detectid": 1}), 422, "/cutout"),
    ("unknown field", SCORE, single({"cutout": GOOD, "colour": "red"}), 422, "/colour"),
    ("top-level list", SCORE, single([GOOD]), 422, "/"),
    ("top-level number", SCORE, json_text("3"), 422, "/"),
    ("8x32", SCORE, single(with_cutout([GOOD_ROW] * 8)), 422, "/cutout"),
    ("10x32", SCORE, single(with_cutout([GOOD_ROW] * 10)), 422, "/cutout"),
    ("9x31", SCORE, single(with_cutout([[0.5] * 31] * 9)), 422, "/cutout"),
    ("ragged rows", SCORE, single(with_cutout([GOOD_ROW] * 8 + [[0.5] * 5])), 422, "/cutout"),
    ("1-D", SCORE, single(with_cutout([0.5] * 288)), 422, "/cutout/0"),
    ("3-D", SCORE, single(with_cutout([GOOD])), 422, "/cutout/0/0"),
    ("empty", SCORE, single(with_cutout([])), 422, "/cutout"),
    ("empty rows", SCORE, single(with_cutout([[]] * 9)), 422, "/cutout"),
    ("string pixel", SCORE, single(with_cutout([["a"] * 32] * 9)), 422, "/cutout/0/0"),
    ("boolean pixel", SCORE, single(with_cutout([[True] * 32] * 9)), 422, "/cutout/0/0"),
    ("null pixel", SCORE, single(with_cutout([[None] * 32] * 9)), 422, "/cutout/0/0"),
    ("null cutout", SCORE, single(with_cutout(None)), 422, "/cutout"),
    ("NaN literal", SCORE, with_literal("NaN"), 422, "/cutout/0/0"),
    ("Infinity literal", SCORE, with_literal("Infinity"), 422, "/cutout/0/0"),
    ("-Infinity literal", SCORE, with_literal("-Infinity"), 422, "/cutout/0/0"),
    ("1e400", SCORE, with_literal("1e400"), 422, "/cutout/0/0"),
    ("beyond float32", SCORE, single(with_cutout([[1e39] * 32] * 9)), 422, "/cutout"),
    ("deep nesting", SCORE, ("application/json", nested(100_000)), 400, "/"),
    ("moderate nesting", SCORE, ("application/json", nested(500)), 422, "/cutout/0/0"),
    ("object id", SCORE, single({"detectid": {"a": 1}, "cutout": GOOD}), 422, "/detectid"),
    ("float id", SCORE, single({"detectid": 1.5, "cutout": GOOD}), 422, "/detectid"),
    ("boolean id", SCORE, single({"detectid": True, "cutout": GOOD}), 422, "/detectid"),
    ("huge id", SCORE, single({"detectid": 2**70, "cutout": GOOD}), 422, "/detectid"),
    ("long id", SCORE, single({"detectid": "x" * 65, "cutout": GOOD}), 422, "/detectid"),
    ("empty id", SCORE, single({"detectid": "", "cutout": GOOD}), 422, "/detectid"),
    ("negative wave", SCORE, single({"cutout": GOOD, "wave": -1}), 422, "/wave"),
    ("string wave", SCORE, single({"cutout": GOOD, "wave": "5000"}), 422, "/wave"),
    ("too many values", SCORE, json_text('{"cutout": [' + "0," * 20_000 + "0]}"), 413, "/"),
    ("huge body", SCORE, ("application/json", b" " * (MAX_BODY + 1)), 413, "/"),
    ("batch not a list", BATCH, single({"detections": "all"}), 422, "/detections"),
    ("batch missing", BATCH, single({}), 422, "/detections"),
    ("batch extra key", BATCH, single({"detections": [], "x": 1}), 422, "/x"),
    (
        "huge batch",
        BATCH,
        single({"detections": [{"cutout": [[0]]}] * (MAX_BATCH + 1)}),
        413,
        "/detections",
    ),
    ("huge binary batch", BATCH, npy(np.zeros((MAX_BATCH + 1, 9, 32), np.float32)), 413, "/cutout"),
    ("npy of int64", BATCH, npy(np.zeros((2, 9, 32), np.int64)), 422, "/cutout"),
    ("npy of complex", BATCH, npy(np.zeros((2, 9, 32), np.complex64)), 422, "/cutout"),
    ("npy of objects", BATCH, npy(np.array([None, 1], dtype=object)), 400, "/cutout"),
    ("npy wrong shape", BATCH, npy(np.zeros((2, 8, 32), np.float32)), 422, "/cutout"),
    ("npy 1-D", BATCH, npy(np.zeros(288, np.float32)), 422, "/cutout"),
    ("npy truncated", BATCH, ("application/x-npy", npy(THREE)[1][:200]), 400, "/cutout"),
    (
        "npy junk header",
        BATCH,
        ("application/x-npy", b"\x93NUMPY\x01\x00" + b"junk" * 30),
        400,
        "/",
    ),
    ("not npy at all", BATCH, ("application/x-npy", b"hello"), 400, "/"),
    ("JSON sent as npz", BATCH, ("application/x-npz", b'{"detections": []}'), 400, "/"),
    ("npz unknown array", BATCH, npz(pixels=THREE), 422, "/pixels"),
    ("npz without cutout", BATCH, npz(wave=np.ones(3)), 422, "/cutout"),
    ("npz ids too short", BATCH, npz(cutout=THREE, detectid=np.arange(2)), 422, "/detectid"),
    ("npz float ids", BATCH, npz(cutout=THREE, detectid=np.ones(3)), 422, "/detectid"),
    (
        "npz pickled ids",
        BATCH,
        npz(cutout=THREE, detectid=np.array([{}, 1, 2], dtype=object)),
        400,
        "/detectid",
    ),
]


@pytest.mark.parametrize(
    ("path", "request_body", "status", "pointer"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_hostile_request_gets_a_problem_naming_the_field(url, path, request_body, status, pointer):
    content_type, body = request_body
    headers = {"Content-Type": content_type} if content_type else {}
    reply = requests.post(url + path, data=body, headers=headers, timeout=30)
    assert reply.status_code == status, reply.text[:500]
    assert reply.headers["Content-Type"] == PROBLEM
    problem = reply.json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert problem["pointer"] == pointer, problem


def test_non_finite_pixels_in_binary_bodies_are_per_item_errors(url):
    batch = np.full((4, 9, 32), 0.5, dtype=np.float32)
    batch[1, 4, 16], batch[2, 0, 0], batch[3, 8, 31] = np.nan, np.inf, -np.inf
    for content_type, body in (npy(batch), npz(cutout=batch, detectid=np.arange(4) + 100)):
        reply = requests.post(
            f"{url}/v1/score/batch", data=body, headers={"Content-Type": content_type}, timeout=30
        )
        assert reply.status_code == 200
        results = reply.json()["results"]
        assert "error" not in results[0]
        for index in (1, 2, 3):
            error = results[index]["error"]
            assert error["status"] == 422 and error["index"] == index
            assert error["pointer"] == f"/cutout/{index}"


def test_the_server_stays_ready_and_scores_after_the_abuse(url):
    for _ in range(6):  # several fresh connections: both workers
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
    reply = requests.post(f"{url}/v1/score", json={"detectid": 1, "cutout": GOOD}, timeout=10)
    assert reply.status_code == 200 and reply.json()["decision"] in ("real", "fake")


def mixed_batch(
    client: int, cutouts: np.ndarray, rng: np.random.Generator
) -> tuple[list[dict], list[int | None]]:
    """Good and bad items in a random order, each with an id naming its client and place; and
    for each place, which of ``cutouts`` it carries (None: a bad item)."""
    items, sources = [], []
    for place in range(int(rng.integers(1, MAX_BATCH))):
        detectid = f"c{client}-{place}"
        kind = rng.integers(0, 4)
        source = None
        if kind == 0:
            items.append({"detectid": detectid, "cutout": [[0.5] * 32] * 8})  # wrong shape
        elif kind == 1:
            items.append({"detectid": detectid, "cutout": GOOD, "wave": -5})  # bad wave
        else:
            source = int(rng.integers(len(cutouts)))
            items.append({"detectid": detectid, "cutout": cutouts[source].tolist()})
        sources.append(source)
    return items, sources


def same_scores(result: dict, alone: dict) -> bool:
    """The same answer as the cutout scored alone. Floats to 2e-5 (UMAP and SVM values move in
    the last float32 digits with the batch's other neighbours, see test_scorefile); novelty to
    one calibration step; decisions, stages and flags exactly."""
    close = all(
        result[name] == pytest.approx(alone[name], rel=2e-5, abs=1e-6)
        for name in ("cnn_score", "umap", "svm_score")
    )
    return (
        close
        and abs(result["novelty"] - alone["novelty"]) <= 1e-3
        and all(result[name] == alone[name] for name in ("decision", "stage", "flags"))
    )


def test_nothing_is_lost_under_concurrency_with_mixed_items(url):
    cutouts = simulate({c: 4 for c in (-2, -1, 0, 1, 2, 3, 4, 5)}, seed=5).im_sum
    alone = []
    for index, cutout in enumerate(cutouts):  # each cutout scored on its own, one at a time
        reply = requests.post(
            f"{url}/v1/score", json={"detectid": index, "cutout": cutout.tolist()}, timeout=10
        )
        assert reply.status_code == 200, reply.text[:300]
        alone.append(reply.json())
    # No two cutouts pass for each other: a score landing on another item cannot look right.
    assert not any(same_scores(a, b) for a, b in combinations(alone, 2))
    rng = np.random.default_rng(2026)
    batches = [mixed_batch(client, cutouts, rng) for client in range(24)]

    def post(items: list[dict]) -> list[dict]:
        reply = requests.post(f"{url}/v1/score/batch", json={"detections": items}, timeout=60)
        assert reply.status_code == 200, reply.text[:300]
        return reply.json()["results"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(post, [items for items, _ in batches]))
    for (items, sources), results in zip(batches, replies, strict=True):
        assert len(results) == len(items)
        assert [r["detectid"] for r in results] == [i["detectid"] for i in items]
        for place, (source, result) in enumerate(zip(sources, results, strict=True)):
            assert ("error" in result) == (source is None)
            if source is None:
                assert result["error"]["index"] == place and result["error"]["status"] == 422
            else:
                assert same_scores(result, alone[source]), (place, result, alone[source])
