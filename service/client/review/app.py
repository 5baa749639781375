"""The review app (Flask application factory) over one loaded night.

Pages: ``/`` the night's summary, ``/queue`` the next detection to label (keys 0-5, a, p, s,
u; see static/review.js), ``/detection/<id>`` any one detection, ``/agreement``. Who votes is
never taken from a URL: locally the reviewer's name is asked once and kept in a session;
shared on a network (:mod:`serving`), each reviewer opens a private link (``/access/<token>``).
Every state-changing request carries its session's token and comes from this origin
(:mod:`access`).
"""

import secrets
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flask import Flask, Response, abort, g, redirect, render_template, request, url_for

from service.client.review import access, agreement, plots
from service.client.review.model import ModelReference, load_model
from service.client.review.night import Night, ReviewError, read_catalogue
from service.client.review.queue import Filters, ReviewQueue, flag_column
from service.client.review.votes import VoteStore, reviewer_name
from service.client.suggest import Thresholds, rank
from service.domain import VISUAL_CLASS_NAMES
from service.flags import NOVEL

KEYS = {str(c): c for c in range(6)} | {"a": -2, "p": -1}  # the 2020 visual classes
SUMMARY_PLOTS = ("decisions", "scores", "umap", "flags", "wavelength")
NO_ACCESS = (
    "this review is shared by private links: open the link you were given (linescore review "
    "--reviewers prints one per reviewer when it starts). No link, or lost it? Ask whoever "
    "runs the review to revoke it (linescore review-access revoke) and restart for a new one."
)
BAD_LINK = (
    "this link does not open the review: it was revoked, replaced or mistyped. Ask whoever "
    "runs the review for a new one (linescore review-access revoke, then a restart)."
)
BOUNCE = (  # the same address again, now from this origin: a Strict cookie comes along
    '<!doctype html><meta charset="utf-8"><title>linescore review</title>'
    "<script>location.replace(location.href)</script>"
    '<noscript><a href="">Continue to the review</a></noscript>'
)
OPEN_ENDPOINTS = ("access_link", "redeem_link", "static")  # what a shared review serves to all
NO_NAME = "no reviewer name: open /queue and give one"
LINKED_NAME = "in a shared review your name comes from your private link"
STALE = (
    "refused: this form carries no valid session token (a page of another site, or one older "
    "than your sign-in): reload the page and try again"
)


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


def create_app(review: Review, shared: bool = False) -> Flask:
    """The review's pages. ``shared``: reviewers come in only by their private links (a network
    host); otherwise a name given once in the browser will do (a loopback host, one machine)."""
    app = Flask(__name__)
    app.extensions["review"] = review
    cookie = access.cookie_name(review.night.fingerprint)

    @app.before_request
    def guard() -> Response | None:
        """Who is asking, and whether a state-changing request may go on (module docstring of
        :mod:`access`)."""
        g.shared = shared
        g.session_key = request.cookies.get(cookie, "")
        g.new_session_key = None
        g.reviewer = access.session_reviewer(review.store, g.session_key, shared)
        if not shared and not access.is_loopback(access.host_of(request.host)):
            abort(403, f"this review is served to this machine only, not to {request.host}")
        if (
            request.method == "GET"
            and not g.session_key
            and access.arrived_from_another_site(request.headers)
        ):
            return Response(BOUNCE, mimetype="text/html")
        if shared and g.reviewer is None and request.endpoint not in OPEN_ENDPOINTS:
            abort(401, NO_ACCESS)
        if request.method == "POST":
            why = access.cross_origin(request.headers, f"{request.scheme}://{request.host}")
            if why is not None:
                abort(403, f"refused: a request from another site ({why})")
            if not access.csrf_matches(g.session_key, request.form.get("csrf", "")):
                abort(403, STALE)

    @app.after_request
    def keep_session(response: Response) -> Response:
        if g.get("new_session_key"):
            response.set_cookie(
                cookie,
                g.new_session_key,
                max_age=access.COOKIE_SECONDS,
                httponly=True,
                samesite="Strict",
            )
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        response.headers["X-Frame-Options"] = "DENY"  # no page of another site frames the keys
        # a link's token is never sent to another origin ("no-referrer" would make the
        # browser send "Origin: null" with this app's own forms)
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    @app.context_processor
    def forms() -> dict:
        return {"csrf_token": csrf_token}

    def csrf_token() -> str:
        """The token of this browser's session; a visitor without one is given a key now."""
        if not g.session_key:
            g.session_key = g.new_session_key = secrets.token_urlsafe(access.TOKEN_BYTES)
        return access.csrf_token(g.session_key)

    def sign_in(reviewer: str, how: str) -> None:
        g.new_session_key = access.start_session(
            review.store, reviewer, how, request.remote_addr or "", ending=g.session_key
        )
        g.reviewer = reviewer

    def identified() -> str:
        if not g.reviewer:
            abort(401, NO_NAME)
        return g.reviewer

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
            return name_prompt(filters)
        index, left = review.queue.next_for(g.reviewer, filters)
        if index is None:
            return render_template("done.html", review=review, filters=filters)
        return detection_page(index, filters, left)

    def name_prompt(filters: Filters) -> str:
        """Local mode: the name asked once; ``?reviewer=NAME`` only fills the field in."""
        suggested = reviewer_name(request.args.get("reviewer", "")) or ""
        return render_template("reviewer.html", review=review, filters=filters, suggested=suggested)

    @app.get("/reviewer")
    def change_reviewer() -> str:
        if shared:
            abort(403, LINKED_NAME)
        return name_prompt(Filters.from_args(request.args))

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
        if shared:
            abort(403, LINKED_NAME)
        name = reviewer_name(request.form.get("reviewer", ""))
        if name is None:
            abort(400, "a reviewer name is 1-40 letters, digits, spaces, '.', '_', '@' or '-'")
        sign_in(name, "name")
        return redirect(with_query(url_for("queue"), request.form.get("filters", "")), code=303)

    @app.get("/access/<token>")
    def access_link(token: str) -> str:
        """A private link: a page whose button signs in, so that merely fetching the link (a
        chat's preview, another site's ``<img>``) signs no browser in."""
        reviewer = access.reviewer_of_link(review.store, token)
        if reviewer is None:
            abort(401, BAD_LINK)
        return render_template("access.html", review=review, name=reviewer, token=token)

    @app.post("/access")
    def redeem_link() -> Response:
        reviewer = access.reviewer_of_link(review.store, request.form.get("token", ""))
        if reviewer is None:
            abort(401, BAD_LINK)
        sign_in(reviewer, "link")
        return redirect(url_for("queue"), code=303)

    @app.post("/vote")
    def vote() -> Response:
        reviewer = identified()
        try:
            detectid = int(request.form.get("detectid", ""))
        except ValueError:
            abort(400, "detectid: expected an integer")
        known(detectid)
        label = request.form.get("label", "")
        if label == "s":
            review.store.skip(detectid, reviewer)
        elif label in KEYS:
            review.store.vote(detectid, reviewer, KEYS[label], request.remote_addr or "")
        else:
            abort(400, f"unknown label {label!r}: one of 0-5, a, p, s")
        review.queue.release(reviewer)
        return redirect(with_query(url_for("queue"), request.form.get("filters", "")), code=303)

    @app.post("/undo")
    def undo() -> Response:
        reviewer = identified()
        detectid = review.store.undo(reviewer, request.remote_addr or "")
        review.queue.release(reviewer)  # the undone detection is first in line again
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
    @app.errorhandler(401)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(405)
    def problem(error) -> tuple[str, int]:
        return render_template("error.html", review=review, error=error), error.code

    return app


def with_query(url: str, query: str) -> str:
    return f"{url}?{query}" if query else url


def stop(signum: int, frame: object) -> None:
    """SIGTERM (a service manager's stop) ends serving as Ctrl-C does: closed, exit status 0."""
    raise KeyboardInterrupt


def serve(
    catalogue: Path,
    data: Path,
    db: Path,
    models_root: Path,
    host: str,
    port: int,
    overlap: int,
    reviewers: Path | None = None,
) -> int:
    """``linescore review``: load, then serve until Ctrl-C or SIGTERM (exit 0); one line naming
    the file on error. A host other than loopback is refused, before anything is loaded, unless
    each reviewer gets a private link (``reviewers``): then gunicorn serves (:mod:`serving`)."""
    if reviewers is None and not access.is_loopback(host):
        raise SystemExit(
            f"linescore review: error: --host {host} is not a loopback address, so anyone who "
            "can reach it could vote as anyone: give each reviewer a private link with "
            "--reviewers FILE (one name a line)"
        )
    try:
        team = access.read_team(reviewers) if reviewers is not None else None
        review = Review.load(catalogue, data, db, models_root, overlap)
    except ReviewError as error:
        raise SystemExit(f"linescore review: error: {error}") from None
    if team is not None and reviewers is not None:
        from service.client.review.serving import serve_shared

        return serve_shared(review, create_app(review, shared=True), team, reviewers, host, port)
    return serve_local(review, host, port)


def serve_local(review: Review, host: str, port: int) -> int:
    """One person on this machine: werkzeug's threaded server in this process."""
    from werkzeug.serving import make_server

    try:
        server = make_server(host, port, create_app(review), threaded=True)
    except OSError as error:
        review.night.close()
        message = f"linescore review: error: cannot serve on {host}:{port} ({error})"
        raise SystemExit(message) from None
    signal.signal(signal.SIGTERM, stop)
    print(
        f"linescore review: {len(review.night.catalogue)} detections of {review.night.path} on "
        f"http://{host}:{server.server_port}/ (votes in {review.store.path}; Ctrl-C stops)",
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
