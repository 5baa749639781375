"""Decode cost of a batch request: JSON vs binary (.npz, .npy), through service.codec.

Prints a Markdown table of medians over repeated runs, measured side by side in one process.
Run: .venv/bin/python -m bench.decode [--repeats 15] (also part of `make bench`)
"""

import argparse
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from bench.timing import median_seconds
from service import codec


def bodies(cutouts: np.ndarray) -> dict[str, tuple[str, bytes]]:
    """The same batch as a JSON, an npz (with ids) and an npy request body."""
    ids = np.arange(len(cutouts), dtype=np.int64) + 1_000_500_000
    as_json = json.dumps(
        {
            "detections": [
                {"detectid": int(i), "cutout": c.tolist()}
                for i, c in zip(ids, cutouts, strict=True)
            ]
        }
    ).encode()
    npz, npy = io.BytesIO(), io.BytesIO()
    np.savez(npz, cutout=cutouts, detectid=ids)
    np.save(npy, cutouts)
    return {
        "json": (codec.JSON, as_json),
        "npz": (codec.NPZ, npz.getvalue()),
        "npy": (codec.NPY, npy.getvalue()),
    }


@contextmanager
def full_json_path() -> Iterator[None]:
    """Decode JSON as bodies the fast (simdjson) path does not take: orjson and pydantic."""
    plain_document = codec.plain_document
    codec.plain_document = lambda body: None
    try:
        yield
    finally:
        codec.plain_document = plain_document


def table(repeats: int) -> list[str]:
    """Markdown rows: decode medians per format and batch size, and the ratio to JSON; JSON
    also through the full path (what a body with any problem takes), side by side."""
    rng = np.random.default_rng(0)
    rows = [
        "| batch | format | body MB | decode median ms | per cutout us | JSON / this |",
        "|---|---|---|---|---|---|",
    ]
    for n in (256, 1024):
        forms = bodies((rng.standard_normal((n, 9, 100)) * 12.0).astype(np.float32))
        medians = {
            name: median_seconds(
                lambda m=media, b=body: codec.decode_batch(b, m, max_batch=1 << 20), repeats
            )
            for name, (media, body) in forms.items()
        }
        with full_json_path():
            forms["json, full path"] = forms["json"]
            medians["json, full path"] = median_seconds(
                lambda b=forms["json"][1]: codec.decode_batch(b, codec.JSON, 1 << 20), repeats
            )
        for name, (_, body) in forms.items():
            rows.append(
                f"| {n} | {name} | {len(body) / 1e6:.2f} | {medians[name] * 1e3:.2f} | "
                f"{medians[name] / n * 1e6:.1f} | {medians['json'] / medians[name]:.1f} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    print("\n".join(table(parser.parse_args().repeats)))


if __name__ == "__main__":
    main()
