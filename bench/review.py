"""Speed of ``linescore review`` on a night of 100,000 detections.

Writes a synthetic night (noise cutouts in the FiberImages layout with ``im_wave``, and a
score-file journal whose scores, places and flags look like a night's), then measures with the
app's test client: loading (catalogue, file, checks), opening the summary (the page, then its five
pictures, drawn on this first request), the two together (what a person waits for after starting
``linescore review``), and the next queue item after a vote, with votes already in the database.
Goals: start to summary shown under 2 s, next item under 100 ms.
Run: .venv/bin/python -m bench.review [--detections 100000] [--workdir build/bench-review]
"""

import argparse
import re
import statistics
import time
from pathlib import Path

import h5py
import numpy as np
from flask.testing import FlaskClient

from service.client.catalogue import Journal, result_row
from service.client.review.app import SUMMARY_PLOTS, Review, create_app
from service.config import CHECKOUT_MODELS
from service.manifest import newest_model_dir

CHUNK = 10_000


def write_night(directory: Path, total: int, seed: int = 0) -> tuple[Path, Path]:
    """A FiberImages file and its journal, written a chunk at a time."""
    rng = np.random.default_rng(seed)
    model = newest_model_dir(CHECKOUT_MODELS)
    places = np.load(model / "umap_map.npz")["coords"]
    data, journal = directory / "night.h5", directory / "night.csv"
    ids = np.arange(total, dtype=np.int64) + 3_000_000_000
    fields = [("detectid", "<i8"), ("im_wave", "<f4", (100,)), ("im_sum", "<f4", (9, 100))]
    journal.unlink(missing_ok=True)
    with h5py.File(data, "w") as handle, Journal.open(journal, ids) as rows:
        table = handle.create_dataset("FiberImages", shape=(total,), dtype=fields)
        for start in range(0, total, CHUNK):
            chunk = ids[start : start + CHUNK]
            block = np.empty(len(chunk), dtype=fields)
            block["detectid"] = chunk
            centre = rng.uniform(3500, 5530, len(chunk))
            block["im_wave"] = centre[:, None] + 2.0 * (np.arange(100) - 50)
            block["im_sum"] = rng.normal(0, 1, (len(chunk), 9, 100))
            table[start : start + len(chunk)] = block
            score = rng.beta(0.3, 0.3, len(chunk))
            place = places[rng.integers(len(places), size=len(chunk))] + rng.normal(
                0, 0.2, (len(chunk), 2)
            )
            novelty = rng.uniform(0, 1, len(chunk))
            rows.append(
                [
                    result_row(
                        int(i),
                        {
                            "cnn_score": s,
                            "umap": p.tolist(),
                            "svm_score": float(rng.normal()),
                            "novelty": n,
                            "decision": "real" if s >= 0.5 else "fake",
                            "stage": "svm" if 0.3 <= s < 0.7 else "cnn",
                            "flags": ["novel"] if n > 0.99 else [],
                        },
                        model.name,
                    )
                    for i, s, p, n in zip(chunk, score, place, novelty, strict=True)
                ]
            )
    return journal, data


def summary(client: FlaskClient) -> float:
    """Seconds to the summary page and its pictures, fetched one after another like a browser."""
    started = time.perf_counter()
    assert client.get("/").status_code == 200
    for name in SUMMARY_PLOTS:
        assert client.get(f"/plot/{name}.png").status_code == 200
    return time.perf_counter() - started


def sign_in(client: FlaskClient, name: str) -> str:
    """Give a name at the prompt, as a reviewer does; the session token the forms carry."""
    token = re.compile(r'name="csrf" value="([0-9a-f]+)"')
    prompt = client.get("/queue").text
    signed = client.post("/reviewer", data={"reviewer": name, "csrf": token.search(prompt)[1]})
    assert signed.status_code == 303, signed.text
    return token.search(client.get("/queue").text)[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--detections", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=Path("build/bench-review"))
    parser.add_argument("--votes", type=int, default=2000, help="already in the database")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    journal, data = write_night(args.workdir, args.detections)
    db = args.workdir / "review.sqlite"
    for stale in args.workdir.glob("review.sqlite*"):
        stale.unlink()

    started = time.perf_counter()
    review = Review.load(journal, data, db, CHECKOUT_MODELS)
    load = time.perf_counter() - started
    client = create_app(review).test_client()
    summaries = [summary(client) for _ in range(5)]  # the first draws the pictures
    for detectid in review.night.catalogue.detectid[-args.votes :].tolist():
        review.store.vote(detectid, "earlier", 0)
    csrf = sign_in(client, "bench")
    nexts = []
    for _ in range(50):
        page = client.get("/queue")
        detectid = int(page.text.split('id="detectid">')[1].split("<")[0])
        started = time.perf_counter()
        voted = client.post("/vote", data={"detectid": detectid, "label": "4", "csrf": csrf})
        assert voted.status_code == 303
        assert client.get("/queue").status_code == 200
        nexts.append(time.perf_counter() - started)
    print(f"night: {args.detections} detections, {args.votes} votes already in the database")
    print(f"load (catalogue, file, checks): {load:.2f} s")
    print(
        f"first summary (page, then its 5 pictures drawn): {summaries[0]:.2f} s; "
        f"start to summary shown: {load + summaries[0]:.2f} s (goal 2 s)"
    )
    print(f"summary again (pictures kept): median {statistics.median(summaries[1:]) * 1000:.0f} ms")
    print(
        f"vote then next queue item: median {statistics.median(nexts) * 1000:.1f} ms, "
        f"max {max(nexts) * 1000:.1f} ms (goal 100 ms)"
    )
    review.night.close()


if __name__ == "__main__":
    main()
