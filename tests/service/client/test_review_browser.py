"""The review app in real headless Chromium (Debian's chromium + chromium-driver, via Selenium).

Labels detections with the keys, undoes one, reloads, then checks the database and the export.
Skips, saying why, where Chromium or its driver is not installed.
"""

import shutil
import sqlite3
import threading
from collections.abc import Iterator

import h5py
import pytest

from service.cli import main
from service.client.review.app import Review, create_app
from tests.service.client.conftest import MODELS

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


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


@pytest.fixture
def browser() -> Iterator:
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


def showing(driver) -> int:
    return int(driver.find_element("id", "detectid").text)


def press(driver, key: str) -> int:
    """Press a key on the page and wait for the next page; the detectid it shows."""
    from selenium.webdriver.support.ui import WebDriverWait

    before = driver.find_element("tag name", "html")
    driver.find_element("tag name", "body").send_keys(key)
    WebDriverWait(driver, 10).until(lambda d: d.find_element("tag name", "html") != before)
    return showing(driver)


def test_label_with_keys_undo_reload_then_database_and_export(served, browser, tmp_path):
    url, review = served
    browser.get(f"{url}/queue?reviewer=ada")
    assert browser.find_element("id", "reviewer").text == "ada"
    labelled = []
    for key in ("4", "a", "0"):
        labelled.append(showing(browser))
        press(browser, key)
    undone = press(browser, "u")
    assert undone == labelled[-1]  # undo shows the detection whose label it took back
    browser.refresh()
    assert showing(browser) == undone
    browser.get(f"{url}/queue")  # the name was kept; the undone detection comes back first
    assert browser.find_element("id", "reviewer").text == "ada"
    assert showing(browser) == undone
    with sqlite3.connect(review.store.path) as db:
        stored = db.execute(
            "SELECT detectid, reviewer, vis_class FROM votes ORDER BY at"
        ).fetchall()
    assert stored == [(labelled[0], "ada", 4), (labelled[1], "ada", -2)]
    out = tmp_path / "labels.h5"
    assert main(["labels", "export", "--db", str(review.store.path), "--out", str(out)]) == 0
    with h5py.File(out) as handle:
        table = handle["Labels"][...]
    assert sorted(
        zip(table["detectid"].tolist(), table["vis_class"].tolist(), strict=True)
    ) == sorted([(labelled[0], 4), (labelled[1], -2)])
    browser.get(f"{url}/")
    for plot in browser.find_elements("css selector", "img[id^=plot-]"):
        assert browser.execute_script("return arguments[0].naturalWidth", plot) > 0
    browser.get(f"{url}/agreement")
    assert "2 votes by 1 reviewer(s)" in browser.find_element("id", "totals").text
