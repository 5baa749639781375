"""``linescore score`` scores files locally, with the same numbers as the scoring core."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from service.pipeline import Scorer

LINESCORE = Path(sys.executable).parent / "linescore"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINESCORE), *args], capture_output=True, text=True, timeout=300)


def test_score_npz_prints_one_json_line_per_detection(
    tmp_path, tiny_model_dir, tiny_bundle, tiny_data
):
    cutouts = tiny_data.im_sum[:12]
    buffer = io.BytesIO()
    np.savez(buffer, cutout=cutouts, detectid=tiny_data.detectid[:12])
    path = tmp_path / "batch.npz"
    path.write_bytes(buffer.getvalue())
    result = run("score", str(path), "--model-dir", str(tiny_model_dir))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["detectid"] for line in lines] == tiny_data.detectid[:12].tolist()
    local = Scorer(tiny_bundle).score(cutouts)
    np.testing.assert_allclose([line["cnn_score"] for line in lines], local.cnn_score, rtol=1e-6)
    # novelty is a rank among calibration cutouts: another process's BLAS may move it one step
    np.testing.assert_allclose([line["novelty"] for line in lines], local.novelty, atol=0.01)
    assert all(line["model_version"] == "0.0.1" for line in lines)


def test_score_json_keeps_bad_items_in_place(tmp_path, tiny_model_dir, tiny_data):
    path = tmp_path / "batch.json"
    path.write_text(
        json.dumps(
            {
                "detections": [
                    {"detectid": "ok", "cutout": tiny_data.im_sum[0].tolist()},
                    {"detectid": "bad", "cutout": [[1.0]]},
                ]
            }
        )
    )
    lines = [
        json.loads(line)
        for line in run("score", str(path), "--model-dir", str(tiny_model_dir)).stdout.splitlines()
    ]
    assert [line["detectid"] for line in lines] == ["ok", "bad"]
    assert "cnn_score" in lines[0] and lines[1]["error"]["pointer"] == "/detections/1/cutout"


def test_score_refuses_unknown_files_and_missing_models(tmp_path, tiny_model_dir):
    other = tmp_path / "cutouts.txt"
    other.write_text("1 2 3")
    refused = run("score", str(other), "--model-dir", str(tiny_model_dir))
    assert refused.returncode != 0 and "expected one of .json, .npy, .npz" in refused.stderr
    missing = run("score", str(other), "--model-dir", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "nowhere does not exist" in missing.stderr
