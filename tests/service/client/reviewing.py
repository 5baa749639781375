"""Reviewers as the review app's own pages make them: signed in, posting with their session token.

For Flask's test client (:class:`Reviewer`) and for real HTTP (:func:`named_session`,
:func:`linked_session`): every vote a test casts goes through the sign-in a person would use.
"""

import re
from urllib.parse import urlsplit

import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
LINK = re.compile(r"^linescore review: (.+?): (http://\S+/access/(\S+))$", re.MULTILINE)


def csrf_of(page: str) -> str:
    """The session token in a page's forms."""
    found = CSRF.search(page)
    assert found is not None, "no form with a session token on the page"
    return found[1]


class Reviewer:
    """One browser on the app through the test client, signed in by the name prompt."""

    def __init__(self, app: Flask, name: str) -> None:
        self.client: FlaskClient = app.test_client()
        prompt = self.client.get("/queue").text
        answer = self.client.post("/reviewer", data={"reviewer": name, "csrf": csrf_of(prompt)})
        assert answer.status_code == 303, answer.text
        self.csrf = csrf_of(self.client.get("/queue").text)

    def get(self, path: str) -> TestResponse:
        return self.client.get(path)

    def post(self, path: str, data: dict | None = None) -> TestResponse:
        return self.client.post(path, data={**(data or {}), "csrf": self.csrf})


def named_session(url: str, name: str) -> tuple[requests.Session, str]:
    """Local mode over HTTP: a session signed in by the name prompt, and its token."""
    session = requests.Session()
    prompt = session.get(f"{url}/queue", timeout=10).text
    answer = session.post(
        f"{url}/reviewer",
        data={"reviewer": name, "csrf": csrf_of(prompt)},
        timeout=10,
        allow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return session, csrf_of(session.get(f"{url}/queue", timeout=10).text)


def links_in(printed: str) -> dict[str, str]:
    """The private links ``linescore review --reviewers`` printed: name -> link."""
    return {name: link for name, link, _ in LINK.findall(printed)}


def linked_session(url: str, link: str) -> tuple[requests.Session, str]:
    """Shared mode over HTTP: a session opened by a private link (its page's button), and its
    token. ``url`` is where the test reaches the server (the link may name another host)."""
    session = requests.Session()
    page = session.get(url + urlsplit(link).path, timeout=10)
    assert page.status_code == 200, page.text
    token = re.search(r'name="token" value="([^"]+)"', page.text)[1]
    answer = session.post(
        f"{url}/access",
        data={"token": token, "csrf": csrf_of(page.text)},
        timeout=10,
        allow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return session, csrf_of(session.get(f"{url}/queue", timeout=10).text)
