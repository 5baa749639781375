"""``linescore review --reviewers``: the review shared on a network, served by gunicorn.

Not werkzeug's development server: gunicorn's threaded worker keeps connections alive, times out
stalled clients and is restarted by its master if it dies. One worker, several threads: the
queue's leases (which detection is shown to whom) and the drawn pictures live in its memory, and
a vote is a short SQLite transaction, so one process serves a team; SQLite's busy timeout and
WAL let threads (and ``linescore review-access`` meanwhile) write without "database is locked".

The night is loaded once, in the master, before anything is served (a bad file stops the
command with its one line); the worker is forked from it and reopens the FiberImages file and
the database, which are not to be shared across a fork.
"""

from pathlib import Path

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from service.client.review import access
from service.client.review.app import Review

THREADS = 8  # requests served at once; kept-alive idle connections hold none
KEEPALIVE_SECONDS = 5
STOP_SECONDS = 10  # after SIGTERM, requests in flight get this long to finish


class SharedReview(BaseApplication):
    """gunicorn with the review's own configuration, the Flask app made before forking."""

    def __init__(
        self, review: Review, app: Flask, host: str, port: int, team: list[str], team_file: Path
    ) -> None:
        self.review, self.app, self.host = review, app, host
        self.team, self.team_file = team, team_file
        self.bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__()

    def load_config(self) -> None:
        options = {
            "bind": [self.bind],
            "workers": 1,
            "worker_class": "gthread",
            "threads": THREADS,
            "keepalive": KEEPALIVE_SECONDS,
            "preload_app": True,
            "timeout": 60,
            "graceful_timeout": STOP_SECONDS,
            "control_socket_disable": True,  # nothing written outside the temporary directory
            "accesslog": None,
            "loglevel": "warning",
            "proc_name": "linescore-review",
            "when_ready": self.ready,
            "pre_fork": self.before_fork,
            "post_fork": self.after_fork,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.app

    def ready(self, server: Arbiter) -> None:
        """Listening: say where, and hand out the links (with the real port, if 0 was asked).
        Made only now, so that a server that could not listen leaves no link no one saw."""
        base = f"http://{access.link_host(self.host)}:{server.LISTENERS[0].getsockname()[1]}"
        review = self.review
        issued = access.issue_links(review.store, self.team)
        print(
            f"linescore review: {len(review.night.catalogue)} detections of {review.night.path} "
            f"on {base}/ for reviewers with a private link (votes in {review.store.path}; "
            "Ctrl-C stops)",
            flush=True,
        )
        for line in announcements(issued, self.team_file, review.store.path, base):
            print(f"linescore review: {line}", flush=True)

    def before_fork(self, server: Arbiter, worker: object) -> None:
        self.review.night.close()
        self.review.store.close()

    def after_fork(self, server: Arbiter, worker: object) -> None:
        self.review.night.reopen()


def announcements(issued: access.Issued, team_file: Path, db: Path, base: str) -> list[str]:
    """One line per reviewer: a new private link, a link still valid, or access ended."""
    lines = [f"{name}: {base}/access/{token}" for name, token in issued.tokens.items()]
    lines += [
        f"{name}: the link given earlier still works (only its hash is kept: for a new one, "
        f"linescore review-access revoke --db {db} {name!r}, then restart)"
        for name in issued.kept
    ]
    lines += [f"{name}: access revoked (no longer in {team_file})" for name in issued.revoked]
    return lines


def serve_shared(
    review: Review, app: Flask, team: list[str], team_file: Path, host: str, port: int
) -> int:
    """Serve until Ctrl-C or SIGTERM; the links are made once listening. gunicorn's master
    ends by ``sys.exit``: 0 after a clean stop, 1 if it could not listen."""
    try:
        SharedReview(review, app, host, port, team, team_file).run()
    finally:
        review.night.close()
    return 0
