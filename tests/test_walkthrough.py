"""README "From a night to a better model", end to end, as a person runs it.

A small night of simulator C (which the packaged model never saw) is scored by a real server
with ``score-file``, ``labels suggest`` picks what to label, the labels are cast through the
review app's vote endpoint from the simulator's truth (as if a person knew it), exported, and
``python -m training adapt`` makes a new version that a second real server then serves. Only
the adapt sizes are smaller than the README's (``--epochs``, ``--replay``), to fit a test.
"""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import requests

from service.bundle import ModelBundle
from tests.live import LINESCORE, ROOT, free_port, live_server
from tests.service.client.reviewing import named_session
from tests.service.client.test_review_cli import review_command, wait_until_answering
from training.dataset import write_dataset
from training.simulators.c import simulate

LABELS_TO_CAST = 150
KEYS = {-2: "a", -1: "p", 0: "0", 1: "1", 2: "2", 3: "3", 4: "4", 5: "5"}


def run(*argv: str, env: dict | None = None) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def decisions(catalogue: Path) -> dict[int, tuple[str, str]]:
    with catalogue.open() as handle:
        return {
            int(row["detectid"]): (row["decision"], row["model_version"])
            for row in csv.DictReader(handle)
        }


def test_from_a_night_to_a_better_model(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "2.1.0").symlink_to(ROOT / "models" / "2.1.0")
    env = {"LINESCORE_MODELS_ROOT": str(models)}
    night = write_dataset(
        tmp_path / "night.h5",
        simulate({-2: 120, -1: 10, 0: 60, 1: 20, 2: 10, 3: 10, 4: 40, 5: 230}, seed=515),
    )
    with h5py.File(night) as handle:
        table = handle["Labels"][...]
    truth = dict(zip(table["detectid"].tolist(), table["vis_class"].tolist(), strict=True))

    catalogue = tmp_path / "night.csv"
    with live_server(tmp_path, env) as server:
        run(str(LINESCORE), "score-file", str(night), "--url", server.url, "--out", str(catalogue))

    ask = tmp_path / "ask.csv"
    run(
        str(LINESCORE),
        "labels",
        "suggest",
        str(catalogue),
        "--data",
        str(night),
        "--n",
        str(LABELS_TO_CAST),
        "--out",
        str(ask),
        env=env,
    )
    with ask.open() as handle:
        asked = [int(row["detectid"]) for row in csv.DictReader(handle)]
    assert len(asked) == LABELS_TO_CAST

    db, port = tmp_path / "review.sqlite", free_port()
    review = subprocess.Popen(
        review_command(catalogue, night, db, port),
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answering(f"{url}/", review)
        person, csrf = named_session(url, "ada")
        for detectid in asked:
            answer = person.post(
                f"{url}/vote",
                data={"detectid": detectid, "label": KEYS[truth[detectid]], "csrf": csrf},
                allow_redirects=False,
            )
            assert answer.status_code == 303
    finally:
        review.send_signal(signal.SIGTERM)
        review.wait(timeout=30)

    labels = tmp_path / "labels.h5"
    run(str(LINESCORE), "labels", "export", "--db", str(db), "--out", str(labels))
    with h5py.File(labels) as handle:
        exported = handle["Labels"][...]
    assert sorted(exported["detectid"].tolist()) == sorted(asked)

    out = models / "2.1.1"
    printed = run(
        sys.executable,
        "-m",
        "training",
        "adapt",
        "--model",
        str(models / "2.1.0"),
        "--data",
        str(night),
        "--labels",
        str(labels),
        "--out",
        str(out),
        "--version",
        "2.1.1",
        "--epochs",
        "2",
        "--replay",
        "3000",
    )
    assert '"parent_version": "2.1.0"' in printed
    adapted = ModelBundle.load(out)  # verifies every checksum
    assert adapted.manifest["lineage"]["labels_files"][0]["labels"] == LABELS_TO_CAST
    gate = adapted.manifest["adaptation"]["gate"]  # out of fold, on labels it did not train on
    assert gate["adapted"]["fom"] > gate["parent"]["fom"]

    with live_server(tmp_path, env) as server:  # the newest version under the root is served
        model = requests.get(f"{server.url}/v1/model", timeout=10).json()
        assert model["version"] == "2.1.1"
        assert model["stage2"]["used"] in (True, False) and model["stage2"]["why"]
        rescored = tmp_path / "night-2.1.1.csv"
        run(str(LINESCORE), "score-file", str(night), "--url", server.url, "--out", str(rescored))
    before, after = decisions(catalogue), decisions(rescored)
    assert {version for _, version in after.values()} == {"2.1.1"}
    before = {d: decision for d, (decision, _) in before.items()}
    after = {d: decision for d, (decision, _) in after.items()}
    right_before = np.mean([(before[d] == "real") == (truth[d] >= 3) for d in truth])
    right_after = np.mean([(after[d] == "real") == (truth[d] >= 3) for d in truth])
    assert right_after >= right_before - 0.02, (right_before, right_after)
