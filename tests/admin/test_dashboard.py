"""The dashboard in real headless Chromium, while the simulator's events flow through the split stack.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (the ``test`` extra).
With API_TOKEN set, the test does what a person does: opens the page, types the token once, reads the figures.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ha_ingestor.harness.procs import Stack

pytest.importorskip("selenium")
from selenium.common.exceptions import WebDriverException
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "dashboard-test-token-5d1c"
SERVICES = {"admin-api", "websocket-ingestion", "enrichment-pipeline", "home-assistant", "store", "forwarding"}
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="needs Debian's chromium and chromium-driver")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, sim_args=["--rate", "15", "--entities", "40"], extra_env={"API_TOKEN": TOKEN})
    try:
        stack.start("simulator", "enrichment", "ingestion", "admin")
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chrome]:
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--window-size=1400,1050", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _rate(driver: Chrome) -> float:
    text = driver.find_element(By.ID, "rate-value").text.replace(",", "")
    try:
        return float(text)
    except ValueError:
        return 0.0


def _health(driver: Chrome) -> dict[str, str]:
    try:
        items = driver.find_elements(By.CSS_SELECTOR, "#health-list li.health-item")
        return {str(i.get_attribute("data-service")): str(i.get_attribute("data-status")) for i in items}
    except WebDriverException:
        return {}  # the list was redrawn while we read it: look again


def _chart_points(driver: Chrome) -> int:
    try:
        paths = driver.find_elements(By.CSS_SELECTOR, "#chart path")
        return max((str(p.get_attribute("d")).count("L") + 1 for p in paths), default=0)
    except WebDriverException:
        return 0


def _live(driver: Chrome) -> bool:
    """Rate above 0, every service healthy, recent events listed and half a minute of chart drawn."""
    return (_rate(driver) > 0
            and _health(driver) == dict.fromkeys(SERVICES, "ok")
            and len(driver.find_elements(By.CSS_SELECTOR, "#recent-body tr td:not(.empty)")) > 0
            and _chart_points(driver) >= 3)


def test_dashboard_shows_live_rate_and_healthy_services(stack: Stack, browser: Chrome,
                                                        tmp_path: Path) -> None:
    browser.get(stack.url("admin") + "/")
    # The API wants the token: the page asks for it once.
    login = browser.find_element(By.ID, "login")
    WebDriverWait(browser, 30).until(lambda d: login.is_displayed())
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()

    WebDriverWait(browser, 90, poll_frequency=0.5).until(_live)
    assert _rate(browser) > 0
    assert _health(browser) == dict.fromkeys(SERVICES, "ok")
    assert browser.find_element(By.ID, "overall").text == "all healthy"
    # Nothing was refused or dead-lettered, and both are known to be none.
    for pill in ("dead-count", "refused-count"):
        WebDriverWait(browser, 30, poll_frequency=0.5).until(
            lambda d, pill=pill: d.find_element(By.ID, pill).get_attribute("class") == "pill ok")
        assert browser.find_element(By.ID, pill).text == "0"
    assert not login.is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('ha-ingestor-api-token')") == TOKEN

    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    if os.environ.get("UPDATE_SCREENSHOT") == "1":  # refresh the README's picture on purpose, not on every run
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)

    # A reload in the same tab keeps the token: no second prompt.
    browser.refresh()
    WebDriverWait(browser, 30, poll_frequency=0.5).until(lambda d: _rate(d) > 0)
    assert not browser.find_element(By.ID, "login").is_displayed()

    # admin-api gone: the page must not keep showing the last green answer.
    WebDriverWait(browser, 30, poll_frequency=0.5).until(lambda d: d.find_element(By.ID, "overall").text
                                                          == "all healthy")
    stack.services["admin"].terminate()
    WebDriverWait(browser, 30, poll_frequency=0.5).until(lambda d: d.find_element(By.ID, "overall").text
                                                          == "admin-api not answering")
    pills = browser.find_elements(By.CSS_SELECTOR, "#health-list .pill, #dead-count, #refused-count")
    assert pills and all("ok" not in str(p.get_attribute("class")).split() for p in pills)


def test_dashboard_asks_again_when_the_token_is_wrong(stack: Stack, browser: Chrome) -> None:
    browser.get(stack.url("admin") + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "login").is_displayed())
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "login").is_displayed())
    assert browser.execute_script("return sessionStorage.getItem('ha-ingestor-api-token')") is None
    assert browser.find_element(By.ID, "rate-value").text == "–"
