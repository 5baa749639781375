"""The review app (Flask application factory) over one loaded night.

Pages: ``/`` the night's summary, ``/queue`` the next detection to label (keys 0-5, a, p, s,
u; see static/review.js), ``/detection/<id>`` any one detection, ``/agreement``. The reviewer's
name is asked once and kept in a cookie; ``?reviewer=NAME`` on any page sets it too.
"""

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flask import Flask, Response, abort, g, redirect, render_template, request, url_for

from service.client.review import agreement, plots
from service.client.review.model import ModelReference, load_model
from service.client.review.night import Night, ReviewError, read_catalogue
from service.client.review.queue import Filters, ReviewQueue, flag_column
from service.client.review.votes import VoteStore, reviewer_name
from service.client.suggest import Thresholds, rank
from service.domain import VISUAL_CLASS_NAMES
from service.flags import NOVEL

COOKIE = "linescore_reviewer"
COOKIE_SECONDS = 365 * 24 * 3600
KEYS = {str(c): c for c in range(6)} | {"a": -2, "p": -1}  # the 2020 visual classes
SUMMARY_PLOTS = ("decisions", "scores", "umap", "flags", "wavelength")


class Pictures:
    """Pictures that depend on the night alone, each drawn on its first request, then kept.

    Drawing them at load would hold back the server (and the summary's text) for their second
    or so; a lock per picture has two tabs asking at once wait for one drawing.
    """

    def __init__(self, draw: dict[str, Callable[[], bytes]]) -> None:
        self.draw = draw
        self.drawn: dict[str, bytes] = {}
        self.locks = {name: threading.Lock() for name in draw}

    def __getitem__(self, name: str) -> bytes:
        with self.locks[name]:
            if name not in self.drawn:
                self.drawn[name] = self.draw[name]()
            return self.drawn[name]


@dataclass
class Review:
    """Everything the pages use, loaded once."""

    night: Night
    model: ModelReference
    store: VoteStore
    queue: ReviewQueue
    pictures: Pictures  # the SUMMARY_PLOTS and the "map" backdrop of detection pages
    backdrop: plots.MapBackdrop

    @classmethod
    def load(
        cls, catalogue_path: Path, data: Path, db: Path, models_root: Path, overlap: int = 1
    ) -> "Review":
        """Read and check the night and open its database; pictures are drawn when asked for."""
        catalogue = read_catalogue(catalogue_path)
        model = load_model(models_root, catalogue.model_version, catalogue_path)
        night = Night(catalogue, data)
        try:
            store = VoteStore.open(
                db,
                {
                    "fingerprint": night.fingerprint,
                    "file": data.name,
                    "catalogue": catalogue_path.name,
                    "detections": str(len(catalogue)),
                    "model_version": catalogue.model_version,
                },
            )
            order = rank(catalogue, Thresholds(model.low, model.high, model.cnn_alone)).order
        except BaseException:
            night.close()
            raise
        pictures = Pictures(
            {
                "decisions": lambda: plots.decisions(catalogue),
                "scores": lambda: plots.scores(catalogue, model),
                "umap": lambda: plots.umap_density(catalogue, model),
                "flags": lambda: plots.flag_shares(catalogue),
                "wavelength": lambda: plots.wavelength(catalogue, night.wave),
                "map": lambda: plots.map_backdrop(model),
            }
        )
        queue = ReviewQueue(night, store, order, overlap)
        return cls(night, model, store, queue, pictures, plots.MapBackdrop(plots.map_extent(model)))


def create_app(review: Review) -> Flask:
    app = Flask(__name__)
    app.extensions["review"] = review

    @app.before_request
    def reviewer() -> None:
        asked = request.args.get("reviewer")
        g.set_reviewer = reviewer_name(asked) if asked else None
        g.reviewer = g.set_reviewer or reviewer_name(request.cookies.get(COOKIE, ""))

    @app.after_request
    def keep_reviewer(response: Response) -> Response:
        if g.get("set_reviewer"):
            response.set_cookie(COOKIE, g.set_reviewer, max_age=COOKIE_SECONDS, samesite="Lax")
        return response

    @app.get("/")
    def summary() -> str:
        catalogue = review.night.catalogue
        return render_template(
            "summary.html",
            review=review,
            catalogue=catalogue,
            novel_share=float(flag_column(catalogue, NOVEL).mean()),
            votes=review.store.count(),
        )

    @app.get("/plot/<name>.png")
    def plot(name: str) -> Response:
        if name not in SUMMARY_PLOTS:
            abort(404)
        return Response(review.pictures[name], mimetype="image/png")

    @app.get("/map.png")
    def backdrop() -> Response:
        return Response(review.pictures["map"], mimetype="image/png")

    @app.get("/queue")
    def queue() -> str | Response:
        filters = Filters.from_args(request.args)
        if not g.reviewer:
            return render_template("reviewer.html", review=review, filters=filters)
        index, left = review.queue.next_for(g.reviewer, filters)
        if index is None:
            return render_template("done.html", review=review, filters=filters)
        return detection_page(index, filters, left)

    @app.get("/detection/<int:detectid>")
    def detection(detectid: int) -> str:
        return detection_page(known(detectid), Filters.from_args(request.args), None)

    def known(detectid: int) -> int:
        index = review.night.index_of(detectid)
        if index is None:
            abort(404, f"no detection {detectid} in {review.night.catalogue.path}")
        return index

    def detection_page(index: int, filters: Filters, left: int | None) -> str:
        catalogue = review.night.catalogue
        detectid = int(catalogue.detectid[index])
        votes = review.store.votes_on(detectid)
        return render_template(
            "detection.html",
            review=review,
            index=index,
            detectid=detectid,
            c=catalogue,
            flags=catalogue.flags_of(index),
            wave=float(review.night.wave[index]),
            place=review.backdrop.percent(*catalogue.umap[index]),
            votes=votes,
            mine=next((v.vis_class for v in votes if v.reviewer == g.reviewer), None),
            filters=filters,
            left=left,
            keys=KEYS,
            names=VISUAL_CLASS_NAMES,
            fibers=review.night.has_fibers,
        )

    @app.get("/cutout/<int:detectid>/<kind>.png")
    def cutout(detectid: int, kind: str) -> Response:
        im_sum, im_array = review.night.images(known(detectid))
        if kind in ("sum32", "sum100"):
            picture = plots.cutout(im_sum, 32 if kind == "sum32" else None)
        elif kind in ("fiber0", "fiber1", "fiber2", "fiber3") and im_array is not None:
            picture = plots.cutout(im_array[int(kind[-1])])
        else:
            abort(404)
        return Response(picture, mimetype="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.post("/reviewer")
    def set_reviewer() -> Response:
        name = reviewer_name(request.form.get("reviewer", ""))
        if name is None:
            abort(400, "a reviewer name is 1-40 letters, digits, spaces, '.', '_', '@' or '-'")
        g.set_reviewer = name
        return redirect(with_query(url_for("queue"), request.form.get("filters", "")), code=303)

    @app.post("/vote")
    def vote() -> Response:
        if not g.reviewer:
            abort(403, "no reviewer name: open /queue and give one")
        detectid = int(request.form.get("detectid", "0"))
        known(detectid)
        label = request.form.get("label", "")
        if label == "s":
            review.store.skip(detectid, g.reviewer)
        elif label in KEYS:
            review.store.vote(detectid, g.reviewer, KEYS[label])
        else:
            abort(400, f"unknown label {label!r}: one of 0-5, a, p, s")
        review.queue.release(g.reviewer)
        return redirect(with_query(url_for("queue"), request.form.get("filters", "")), code=303)

    @app.post("/undo")
    def undo() -> Response:
        if not g.reviewer:
            abort(403, "no reviewer name: open /queue and give one")
        detectid = review.store.undo(g.reviewer)
        review.queue.release(g.reviewer)  # the undone detection is first in line again
        filters = request.form.get("filters", "")
        if detectid is None or review.night.index_of(detectid) is None:
            return redirect(with_query(url_for("queue"), filters), code=303)
        return redirect(with_query(url_for("detection", detectid=detectid), filters), code=303)

    @app.get("/agreement")
    def agreement_page() -> str:
        measured = agreement.measure(
            review.store.votes(), review.night, review.model.heldout_class_accuracy
        )
        peak = max(1, int(np.max(measured.by_class, initial=0)))
        return render_template(
            "agreement.html", review=review, a=measured, peak=peak, names=VISUAL_CLASS_NAMES
        )

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    def problem(error) -> tuple[str, int]:
        return render_template("error.html", review=review, error=error), error.code

    return app


def with_query(url: str, query: str) -> str:
    return f"{url}?{query}" if query else url


def stop(signum: int, frame: object) -> None:
    """SIGTERM (a service manager's stop) ends serving as Ctrl-C does: closed, exit status 0."""
    raise KeyboardInterrupt


def serve(
    catalogue: Path, data: Path, db: Path, models_root: Path, host: str, port: int, overlap: int
) -> int:
    """``linescore review``: load, then serve until Ctrl-C or SIGTERM (exit 0); one line naming
    the file on error."""
    from werkzeug.serving import make_server

    try:
        review = Review.load(catalogue, data, db, models_root, overlap)
    except ReviewError as error:
        raise SystemExit(f"linescore review: error: {error}") from None
    server = make_server(host, port, create_app(review), threaded=True)
    signal.signal(signal.SIGTERM, stop)
    print(
        f"linescore review: {len(review.night.catalogue)} detections of {data} on "
        f"http://{host}:{server.server_port}/ (votes in {db}; Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        review.night.close()
    return 0
