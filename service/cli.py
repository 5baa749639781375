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
    serve = commands.add_parser("serve", help="serve the model over HTTP (gunicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, help="default: LINESCORE_WORKERS, else 2")
    score = commands.add_parser("score", help="score a file locally and print JSON lines")
    score.add_argument("file", type=Path, help=f"cutouts as {', '.join(SUFFIXES)}")
    score.add_argument("--model-dir", type=Path, help="default: as the server would choose")
    batch = commands.add_parser(
        "score-file",
        help="score a HETDEX FiberImages HDF5 file through a server, resumably",
        description="Exit 0: complete; 1: fix the input, an option or what the server refused; "
        "75: server lost, run again to resume; 130: interrupted, run again to resume.",
    )
    batch.add_argument("file", type=Path, help="HDF5 file with a FiberImages table")
    batch.add_argument("--url", required=True, help="server, e.g. http://127.0.0.1:8080")
    batch.add_argument("--out", type=Path, required=True, help="CSV journal; resumed if present")
    batch.add_argument("--table", choices=("fits", "ecsv"), default="fits", help="final table")
    batch.add_argument("--batch-size", type=positive_int, default=1024)
    batch.add_argument(
        "--concurrency",
        type=positive_int,
        default=2,
        help="batches in flight, each on its own kept-alive connection: at least the number of "
        "server replicas, so the run reaches every one (deploy/README.md)",
    )
    batch.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per request")
    batch.add_argument("--retry-for", type=float, default=300.0, help="seconds, then give up")
    batch.add_argument(
        "--token",
        default=os.environ.get("LINESCORE_API_TOKEN"),
        help="bearer token (default: LINESCORE_API_TOKEN)",
    )
    review = commands.add_parser(
        "review",
        help="label a night scored by score-file in the browser (web app; --reviewers shares it)",
        description="Serves the night's summary, a review queue with keyboard labelling "
        "(0-5, a = -2, p = -1, s skip, u undo) and reviewer agreement; votes go to --db. "
        "On a loopback host each reviewer types a name; any other host needs --reviewers.",
    )
    review.add_argument(
        "catalogue", type=Path, help="score-file catalogue: CSV journal, FITS, ECSV"
    )
    review.add_argument("--data", type=Path, required=True, help="the FiberImages file it scored")
    review.add_argument("--db", type=Path, help="votes (SQLite; default: CATALOGUE.review.sqlite)")
    review.add_argument("--host", default="127.0.0.1")
    review.add_argument("--port", type=int, default=8090)
    review.add_argument("--overlap", type=positive_int, default=1, help="reviewers per detection")
    review.add_argument(
        "--reviewers",
        type=Path,
        help="one reviewer name a line: each gets a private link (printed at start, valid until "
        "revoked) and only they may vote; served by gunicorn, required on a non-loopback --host",
    )
    review_access = commands.add_parser(
        "review-access", help="the private links of a shared review (linescore review --reviewers)"
    )
    access_commands = review_access.add_subparsers(dest="access_command", required=True)
    revoke = access_commands.add_parser(
        "revoke",
        help="end a reviewer's link and sessions at once, even while the review runs",
        description="A restart of linescore review with the name still in --reviewers prints "
        "a new link for it.",
    )
    revoke.add_argument("--db", type=Path, required=True, help="the review database")
    revoke.add_argument("name", help="the reviewer")
    listed = access_commands.add_parser("list", help="who has a link, since when, and sessions")
    listed.add_argument("--db", type=Path, required=True, help="the review database")
    labels = commands.add_parser("labels", help="labels from a review database")
    label_commands = labels.add_subparsers(dest="labels_command", required=True)
    export = label_commands.add_parser(
        "export", help="write the Labels table that `python -m training train --labels` reads"
    )
    export.add_argument("--db", type=Path, required=True, help="the review database")
    export.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    export.add_argument("--min-votes", type=positive_int, default=1, help="fewer: left out")
    suggest = label_commands.add_parser(
        "suggest",
        help="the detections of a scored night most worth a human look, best first (CSV)",
        description="Ranks a night scored by score-file in the order the review queue serves: "
        "every cluster of the UMAP map gets labels in turn, the most uncertain and most novel "
        "detections of each first. Detections already voted on in --db are skipped.",
    )
    suggest.add_argument("catalogue", type=Path, help="score-file catalogue: CSV, FITS, ECSV")
    suggest.add_argument("--data", type=Path, required=True, help="the FiberImages file it scored")
    suggest.add_argument("--n", type=positive_int, required=True, help="how many to suggest")
    suggest.add_argument("--out", type=Path, required=True, help="CSV to write")
    suggest.add_argument(
        "--db", type=Path, help="review database: its voted detections are skipped"
    )
    return root


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


GLIBC_MALLOC = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": str(8 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(32 << 20),
}


def serve(host: str, port: int, workers: int | None, argv: list[str]) -> None:
    """Run the server in this process, so signals reach gunicorn's master directly.

    glibc reads its malloc settings only at process start, so if MALLOC_ARENA_MAX is unset
    this process first re-executes itself with ``GLIBC_MALLOC`` (the image sets both in ENV):
    two arenas keep a worker's memory from fragmenting across per-thread arenas; buffers of
    8 MiB and more (a big batch's body and arrays) are mapped apart and handed back to the
    system when freed (glibc would raise that threshold and keep them in the heap), while up to
    32 MiB free at the heap's top is kept for the next batch (trimming it each time costs
    throughput). bench/CHOICES.md measures the settings side by side.
    """
    if "MALLOC_ARENA_MAX" not in os.environ:  # set: the environment has chosen
        for name, value in GLIBC_MALLOC.items():
            os.environ.setdefault(name, value)
        os.execv(sys.executable, [sys.executable, "-m", "service.cli", *argv])
    from service.server import serve as run_server

    run_server(f"{host}:{port}", workers)


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


def review(args: argparse.Namespace) -> int:
    from service.client.review.app import serve as serve_review
    from service.config import Settings

    db = args.db or args.catalogue.with_suffix(".review.sqlite")
    models_root = Settings.from_environ().models_root
    return serve_review(
        args.catalogue,
        args.data,
        db,
        models_root,
        args.host,
        args.port,
        args.overlap,
        args.reviewers,
    )


def review_access(args: argparse.Namespace) -> int:
    from service.client.review.access import access_list, revoke
    from service.client.review.night import ReviewError
    from service.client.review.votes import VoteStore

    try:
        store = VoteStore.existing(args.db)
        if args.access_command == "revoke":
            ended = revoke(store, args.name)
            print(
                f"linescore review-access: {args.name}'s link and {ended} session(s) no longer "
                "work; restart linescore review with the name in --reviewers for a new link"
            )
            return 0
        for name, issued, revoked, sessions in access_list(store):
            state = f"revoked {revoked}" if revoked else f"{sessions} session(s)"
            print(f"{name}\tlink issued {issued}\t{state}")
    except ReviewError as error:
        raise SystemExit(f"linescore review-access: error: {error}") from None
    return 0


def export_labels(db: Path, out: Path, min_votes: int) -> int:
    from service.client.labels import export
    from service.client.review.night import ReviewError

    try:
        count = export(db, out, min_votes)
    except ReviewError as error:
        raise SystemExit(f"linescore labels: error: {error}") from None
    print(f"linescore labels: {count} labelled detections in {out}")
    return 0


def suggest_labels(args: argparse.Namespace) -> int:
    from service.client.review.night import ReviewError
    from service.client.suggest import suggest
    from service.config import Settings

    try:
        count = suggest(
            args.catalogue,
            args.data,
            args.n,
            args.out,
            args.db,
            Settings.from_environ().models_root,
        )
    except ReviewError as error:
        raise SystemExit(f"linescore labels: error: {error}") from None
    print(f"linescore labels: {count} detections to label, best first, in {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port, args.workers, argv)
        return 0
    if args.command == "score-file":
        from service.client.scorefile import Job, score_file

        return score_file(Job(**{k: v for k, v in vars(args).items() if k != "command"}))
    if args.command == "review":
        return review(args)
    if args.command == "review-access":
        return review_access(args)
    if args.command == "labels" and args.labels_command == "suggest":
        return suggest_labels(args)
    if args.command == "labels":
        return export_labels(args.db, args.out, args.min_votes)
    return score(args.file, args.model_dir)


if __name__ == "__main__":
    sys.exit(main())
