"""The review app in real headless Chromium (Debian's chromium + chromium-driver, via Selenium).

- A reviewer gives a name, labels detections with the keys and undoes one; the server is killed
  (SIGKILL) and started again, the same browser goes on where it was; then the database and
  the export.
- Forms served from another origin (another site, and another port of this machine, which a
  SameSite cookie does not tell apart) post votes into a signed-in reviewer's browser: none lands.

Skips, saying why, where Chromium or its driver is not installed; fails instead under CI=true.
"""

import os
import shutil
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import pytest

from service.cli import main
from service.client.review.app import Review, create_app
from tests.live import free_port
from tests.service.client.conftest import MODELS
from tests.service.client.test_review_cli import ENV, review_command, wait_until_answering

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{MISSING}; CI=true, where the browser tests must run")
        pytest.skip(MISSING)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1100")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def fresh_browser(browser) -> Iterator:
    """The module's browser with no cookie of an earlier test (cookies ignore ports)."""
    browser.delete_all_cookies()
    yield browser
    browser.delete_all_cookies()


def start(catalogue: Path, data: Path, db: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        review_command(catalogue, data, db, port),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_answering(f"http://127.0.0.1:{port}/agreement", process)
    return process


def showing(driver) -> int:
    return int(driver.find_element("id", "detectid").text)


def next_page(driver, act) -> None:
    """Do ``act`` and wait until the browser shows the page it leads to."""
    from selenium.webdriver.support.ui import WebDriverWait

    before = driver.find_element("tag name", "html")
    act()
    WebDriverWait(driver, 10).until(lambda d: d.find_element("tag name", "html") != before)


def press(driver, key: str) -> int:
    """Press a key on the page and wait for the next page; the detectid it shows."""
    next_page(driver, lambda: driver.find_element("tag name", "body").send_keys(key))
    return showing(driver)


def stored(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT detectid, reviewer, vis_class FROM votes ORDER BY at"
        ).fetchall()


def test_label_with_keys_undo_kill_restart_then_database_and_export(
    night_journal, night_file, fresh_browser, tmp_path
):
    from selenium.webdriver.common.keys import Keys

    browser = fresh_browser
    db, port = tmp_path / "review.sqlite", free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(night_journal, night_file, db, port)
    try:
        browser.get(f"{url}/queue?reviewer=ada")  # the URL only fills the name in
        name = browser.find_element("id", "reviewer-name")
        assert name.get_attribute("value") == "ada"
        next_page(browser, lambda: name.send_keys(Keys.ENTER))
        assert browser.find_element("id", "reviewer").text == "ada"
        labelled = []
        for key in ("4", "a", "0"):
            labelled.append(showing(browser))
            press(browser, key)
        undone = press(browser, "u")
        assert undone == labelled[-1]  # undo shows the detection whose label it took back
        browser.refresh()
        assert showing(browser) == undone

        server.send_signal(signal.SIGKILL)  # no chance to clean up
        server.wait(timeout=10)
        assert stored(db) == [(labelled[0], "ada", 4), (labelled[1], "ada", -2)]
        server = start(night_journal, night_file, db, port)
        browser.get(f"{url}/queue")  # the session outlived the server
        assert browser.find_element("id", "reviewer").text == "ada"
        assert showing(browser) == undone  # the undone detection comes back first
        press(browser, "5")  # the page's token is still good
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
    assert stored(db) == [(labelled[0], "ada", 4), (labelled[1], "ada", -2), (undone, "ada", 5)]
    out = tmp_path / "labels.h5"
    assert main(["labels", "export", "--db", str(db), "--out", str(out)]) == 0
    with h5py.File(out) as handle:
        table = handle["Labels"][...]
    assert sorted(
        zip(table["detectid"].tolist(), table["vis_class"].tolist(), strict=True)
    ) == sorted([(labelled[0], 4), (labelled[1], -2), (undone, 5)])

    server = start(night_journal, night_file, db, port)
    try:
        browser.get(f"{url}/")
        for plot in browser.find_elements("css selector", "img[id^=plot-]"):
            assert browser.execute_script("return arguments[0].naturalWidth", plot) > 0
        browser.get(f"{url}/agreement")
        assert "3 votes by 1 reviewer(s)" in browser.find_element("id", "totals").text
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


@pytest.fixture
def served(night_journal, night_file, tmp_path) -> Iterator[tuple[str, Review]]:
    """The review app on a free loopback port, served by werkzeug in a thread."""
    from werkzeug.serving import make_server

    review = Review.load(night_journal, night_file, tmp_path / "review.sqlite", MODELS)
    server = make_server("127.0.0.1", 0, create_app(review), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", review
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        review.night.close()


FORGERY = """<!doctype html><title>cute cats</title>
<form id="f" method="post" action="{target}/vote?reviewer=mallory">
<input name="detectid" value="{detectid}"><input name="label" value="5">
<input name="csrf" value="{fake}"></form>
<script>
fetch("{target}/vote?reviewer=mallory", {{method: "POST", mode: "no-cors",
  credentials: "include", body: new FormData(document.getElementById("f"))}})
  .finally(() => document.getElementById("f").submit());
</script>"""


@pytest.fixture
def forger() -> Iterator[tuple[int, list[str]]]:
    """Another origin on this machine serving one page (set it in the list) to every path."""
    page: list[str] = [""]

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], page
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_forms_of_other_origins_land_no_vote_in_a_signed_in_browser(
    served, forger, fresh_browser, tmp_path
):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, review = served
    browser = fresh_browser
    port, page = forger
    browser.get(f"{url}/queue")
    name = browser.find_element("id", "reviewer-name")
    name.send_keys("ada")
    next_page(browser, lambda: name.send_keys(Keys.ENTER))
    first = showing(browser)
    target = int(press(browser, "4"))  # ada's one vote; the forms aim at the next detection
    for origin in (f"http://localhost:{port}", f"http://127.0.0.1:{port}"):  # site, then port
        page[0] = FORGERY.format(target=url, detectid=target, fake="0" * 64)
        browser.get(f"{origin}/cats.html")
        WebDriverWait(browser, 10).until(lambda d: d.current_url.startswith(url))
        assert "403" in browser.title, origin
        assert "refused" in browser.find_element("id", "error").text
    assert stored(review.store.path) == [(first, "ada", 4)]
    out = tmp_path / "labels.h5"
    assert main(["labels", "export", "--db", str(review.store.path), "--out", str(out)]) == 0
    with h5py.File(out) as handle:
        assert handle["Labels"]["detectid"].tolist() == [first]
        assert handle.attrs["reviewers"] == "ada"
    page[0] = f'<!doctype html><a id="go" href="{url}/queue">review</a>'
    browser.get(f"http://localhost:{port}/links.html")
    browser.find_element("id", "go").click()  # a plain link from another site
    WebDriverWait(browser, 10).until(lambda d: d.find_elements("id", "detectid"))
    assert browser.find_element("id", "reviewer").text == "ada"  # still signed in
    assert showing(browser) == target
    press(browser, "3")  # ada's own pages still vote
    assert stored(review.store.path)[-1] == (target, "ada", 3)
