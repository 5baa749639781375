"""Who may vote: private links per reviewer, sessions, and the checks that stop forged requests.

Exported labels train models, so a vote must come from a reviewer, through this app's own pages:

- **Identity** is never read from a request's URL. Locally (a loopback host) a reviewer gives a
  name once and it lives in a server-side session; shared on a network, each reviewer opens a
  private link whose random token the database keeps only as a SHA-256 hash, so a copy of the
  database cannot open a session. A link works until revoked; revoking also ends its sessions.
- **Sessions** are random keys in an HttpOnly, SameSite=Strict cookie; the database keeps their
  hashes, so every process (gunicorn's worker, a restart after kill -9) knows them.
- **Forgery**: a state-changing request must carry the session's token (derived from the
  session key, so never stored), and is refused when its Origin or Sec-Fetch-Site says it came
  from another origin (cookies are not separated by port: another local port is same-site).
  Locally the Host must be a loopback name too, so a DNS-rebinding page cannot reach the app.
"""

import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from service.client.review.night import ReviewError
from service.client.review.votes import VoteStore, now, reviewer_name

COOKIE_SECONDS = 365 * 24 * 3600
TOKEN_BYTES = 32  # 256 random bits per link and per session key


def digest(secret: str) -> str:
    """What the database keeps of a link token or a session key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_token(session_key: str) -> str:
    """The per-session token forms carry: derived from the key, which pages cannot read."""
    return hashlib.sha256(b"linescore-review-csrf\0" + session_key.encode()).hexdigest()


def csrf_matches(session_key: str, given: str) -> bool:
    return bool(session_key) and hmac.compare_digest(csrf_token(session_key), given)


def cookie_name(fingerprint: str) -> str:
    """One cookie per night: cookies are shared by every port of a host."""
    return f"linescore_review_{fingerprint[:12]}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, as given to --host or in a Host header) is this
    machine only."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(netloc: str) -> str:
    """The host part of a Host header (``[::1]:8090`` -> ``::1``)."""
    return urlsplit(f"//{netloc}").hostname or ""


def cross_origin(headers: Mapping[str, str], own_origin: str) -> str | None:
    """Why a state-changing request came from another origin, or None.

    Browsers send Sec-Fetch-Site and Origin on every form POST and fetch; a page of another
    origin cannot remove them. Scripts outside a browser send neither, and meet the token check.
    """
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site says {site}"
    origin = headers.get("Origin")
    if origin is not None and origin.rstrip("/") != own_origin:
        return f"Origin {origin} is not {own_origin}"
    return None


def arrived_from_another_site(headers: Mapping[str, str]) -> bool:
    """A page opened from another site's link: its browser sends no SameSite=Strict cookie, so
    answering it as a visitor without a session would replace the reviewer's cookie."""
    return (
        headers.get("Sec-Fetch-Site") == "cross-site"
        and headers.get("Sec-Fetch-Mode") == "navigate"
        and headers.get("Sec-Fetch-Dest") == "document"
    )


def read_team(path: Path) -> list[str]:
    """The reviewers of ``--reviewers``: one name a line; blank lines and ``#`` comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ReviewError(f"{path}: cannot read the reviewers ({error})") from None
    names: list[str] = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        name = reviewer_name(text)
        if name is None:
            raise ReviewError(
                f"{path}: line {number}: {text!r} is not a reviewer name "
                "(1-40 letters, digits, spaces, '.', '_', '@' or '-')"
            )
        if name in names:
            raise ReviewError(f"{path}: line {number}: {name} is listed twice")
        names.append(name)
    if not names:
        raise ReviewError(f"{path}: no reviewer in it (one name a line)")
    return names


@dataclass(frozen=True)
class Issued:
    """What starting with ``--reviewers`` did: new links, links still valid, access ended."""

    tokens: dict[str, str]  # name -> token, only for links made now
    kept: list[str]  # names whose earlier link still works (only its hash is kept)
    revoked: list[str]  # names no longer on the team: their links and sessions end


def issue_links(store: VoteStore, team: list[str]) -> Issued:
    """A link for each reviewer of the team without a working one; the rest's links revoked."""
    tokens: dict[str, str] = {}
    with store.write() as db:
        active = {row[0] for row in db.execute("SELECT name FROM reviewers WHERE revoked IS NULL")}
        for name in team:
            if name in active:
                continue
            token = secrets.token_urlsafe(TOKEN_BYTES)
            db.execute(
                "INSERT OR REPLACE INTO reviewers VALUES (?, ?, ?, NULL)",
                (name, digest(token), now()),
            )
            tokens[name] = token
        gone = sorted(active - set(team))
        for name in gone:
            end_access(db, name)
    return Issued(tokens, [name for name in team if name in active], gone)


def end_access(db, name: str) -> int:
    """Revoke a reviewer's link and end their sessions; how many sessions ended."""
    db.execute("UPDATE reviewers SET revoked = ? WHERE name = ? AND revoked IS NULL", (now(), name))
    return db.execute("DELETE FROM sessions WHERE reviewer = ?", (name,)).rowcount


def revoke(store: VoteStore, name: str) -> int:
    """``linescore review-access revoke``: effective at once, even while the server runs."""
    with store.write() as db:
        row = db.execute("SELECT revoked FROM reviewers WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ReviewError(f"{store.path}: no reviewer {name!r} has a link")
        return end_access(db, name)


def access_list(store: VoteStore) -> list[tuple[str, str, str | None, int]]:
    """Every reviewer given a link: name, issued, revoked (or None), open sessions."""
    return [
        (name, issued, revoked, int(sessions))
        for name, issued, revoked, sessions in store.connection().execute(
            "SELECT name, issued, revoked, "
            "(SELECT COUNT(*) FROM sessions WHERE sessions.reviewer = reviewers.name) "
            "FROM reviewers ORDER BY name"
        )
    ]


def reviewer_of_link(store: VoteStore, token: str) -> str | None:
    """The reviewer a link token belongs to, unless revoked."""
    row = (
        store.connection()
        .execute(
            "SELECT name FROM reviewers WHERE token_sha256 = ? AND revoked IS NULL",
            (digest(token),),
        )
        .fetchone()
    )
    return row[0] if row else None


def start_session(
    store: VoteStore, reviewer: str, access: str, remote_addr: str, ending: str = ""
) -> str:
    """A new session key for the reviewer (a new key at each sign-in: no fixation); the old
    session ``ending``, if any, ends."""
    key = secrets.token_urlsafe(TOKEN_BYTES)
    with store.write() as db:
        if ending:
            db.execute("DELETE FROM sessions WHERE key_sha256 = ?", (digest(ending),))
        db.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
            (digest(key), reviewer, access, now(), remote_addr),
        )
    return key


def session_reviewer(store: VoteStore, key: str, shared: bool) -> str | None:
    """The reviewer of a session key. Shared, only sessions opened by a link not revoked count:
    a name typed in local mode is nobody's proof on a network."""
    if not key:
        return None
    if shared:
        query = (
            "SELECT s.reviewer FROM sessions s JOIN reviewers r ON r.name = s.reviewer "
            "WHERE s.key_sha256 = ? AND s.access = 'link' AND r.revoked IS NULL"
        )
    else:
        query = "SELECT reviewer FROM sessions WHERE key_sha256 = ?"
    row = store.connection().execute(query, (digest(key),)).fetchone()
    return row[0] if row else None


def link_host(host: str) -> str:
    """The host to print in links: this machine's name when serving on every address."""
    if host in ("0.0.0.0", "::", ""):
        return socket.getfqdn()
    return f"[{host}]" if ":" in host else host
