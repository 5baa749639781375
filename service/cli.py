"""``linescore``: serve the packaged model, or score cutout files locally without a server."""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

SUFFIXES = (".json", ".npy", ".npz")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="linescore", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run gunicorn with the packaged config (exec)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=2)
    score = commands.add_parser("score", help="score a file locally and print JSON lines")
    score.add_argument("file", type=Path, help=f"cutouts as {', '.join(SUFFIXES)}")
    score.add_argument("--model-dir", type=Path, help="default: as the server would choose")
    return root


def serve(host: str, port: int, workers: int) -> None:
    """Replace this process with gunicorn so signals reach it directly.

    glibc reads MALLOC_ARENA_MAX only at process start, hence here (and in the image's ENV):
    two arenas keep a threaded worker's memory from fragmenting across per-thread arenas.
    """
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:service.gunicorn_conf",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
    ]
    os.execv(sys.executable, argv)


def read_detections(path: Path, max_batch: int):
    from service import codec

    body = path.read_bytes()
    if path.suffix == ".json":
        return codec.decode_batch(body, codec.JSON, max_batch)
    if path.suffix in (".npy", ".npz"):
        media = codec.NPY if path.suffix == ".npy" else codec.NPZ
        return codec.decode_batch(body, media, max_batch)
    raise SystemExit(f"error: {path}: expected one of {', '.join(SUFFIXES)}")


def score(path: Path, model_dir: Path | None) -> int:
    from service import codec
    from service.config import Settings
    from service.errors import LinescoreError
    from service.runtime import ModelRuntime

    settings = Settings.from_environ()
    if model_dir is not None:
        settings = settings.model_copy(update={"model_dir": model_dir})
    runtime = ModelRuntime(settings)
    runtime.load()
    try:
        plane = runtime.plane
        detections = read_detections(path, max_batch=np.iinfo(np.int32).max)
    except LinescoreError as error:
        raise SystemExit(f"error: {path}: {error.detail} (at {error.pointer or '/'})") from None
    try:
        for result in plane.score(detections).results:
            sys.stdout.buffer.write(codec.encode({**result, "model_version": plane.model_version}))
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the reader (head, less) stopped early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port, args.workers)
    return score(args.file, args.model_dir)
