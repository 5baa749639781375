"""Export the CNN to one self-contained ONNX file with a dynamic batch axis, and check it."""

import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from service.contract import COLUMNS, ROWS
from service.preprocess import CHANNELS
from training.cnn import LineCNN, ScoreAndEmbedding

INPUT_NAME = "cutout"
OUTPUT_NAMES = ("score", "embedding")


def export_onnx(cnn: LineCNN, path: Path) -> Path:
    """Write ``path``: input ``cutout`` (N, 2, 9, 32); outputs ``score`` (N,), ``embedding``."""
    graph = ScoreAndEmbedding(cnn).eval()
    example = torch.zeros(3, CHANNELS, ROWS, COLUMNS)  # a batch of 1 would fix the batch axis
    batch = torch.export.Dim("batch", min=1)
    # The exporter reports its own progress through logging and warnings; keep them quiet.
    for name in ("torch.onnx", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"cutout": {0: batch}},
            verbose=False,
        )
    path = Path(path)
    program.save(str(path), external_data=False)
    return path


def max_disagreement(cnn: LineCNN, path: Path, model_input: np.ndarray) -> dict:
    """Largest absolute difference between PyTorch and ONNX Runtime on the same input."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_score, onnx_embedding = session.run(None, {INPUT_NAME: model_input})
    with torch.no_grad():
        torch_score, torch_embedding = ScoreAndEmbedding(cnn.eval())(torch.from_numpy(model_input))
    return {
        "score": float(np.abs(onnx_score - torch_score.numpy()).max()),
        "embedding": float(np.abs(onnx_embedding - torch_embedding.numpy()).max()),
    }
