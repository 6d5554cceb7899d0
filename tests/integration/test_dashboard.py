"""The web dashboard in a real headless browser (Debian's chromium through Selenium) against a real
dynod: log in, see an app, scale it and watch its dynos change state, roll back, follow the live
log, read the charts, be asked before a destroy; on a desktop and on a phone-width screen.
Screenshots are kept under a temporary directory (printed), for a person to look at."""

from __future__ import annotations

import http.client
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Dynod, free_port, running_dynod, write_app
from .test_metrics_router import with_runtime_metrics

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def dashboard_dynod() -> Iterator[Dynod]:
    port = free_port()
    # dynos_extra lands in [dynos]; the table after it is this dynod's own.
    with running_dynod(dynos_extra=f'[dashboard]\nlisten = "127.0.0.1:{port}"\n') as d:
        with_runtime_metrics(d)  # memory samples every second, for the memory chart
        yield d


@pytest.fixture(scope="module")
def shots() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="dynod-dashboard-shots-"))
    print(f"\ndashboard screenshots in {directory}")
    return directory


@pytest.fixture
def browser() -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed: run ./install.sh --deps-only")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="dynod-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1280,1000", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, predicate, timeout: float = 30, what: str = "the page"):  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page re-renders a panel when live data arrives: an element found an instant before can
    # be gone when its text is read. That is a look to take again, not a failure.
    wait = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(lambda _: predicate(), message=f"waiting for {what}")


def _requests(d: Dynod, app: str, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=30)
    for i in range(n):
        conn.request("GET", f"/hello-{i}", headers={"Host": f"{app}.localhost"})
        conn.getresponse().read()
    conn.close()


def test_dashboard_end_to_end(dashboard_dynod: Dynod, browser, shots: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    d, driver = dashboard_dynod, browser
    app = f"dash{int(time.time() * 1000) % 10**8:08d}"
    d.ctl("apps:create", app)
    try:
        source = write_app(tmp_path / "src", "web: python3 web.py\n")
        for _ in range(2):  # v2 and v3: something to roll back to
            d.ctl("deploy", "--no-build", str(source), "-a", app)
        d.ctl("ps:scale", "web=1", "-a", app)
        d.up(app, 1)
        _requests(d, app, 30)

        url = d.ctl("dashboard").stdout.strip()
        assert url.startswith("http://127.0.0.1:") and "#token=" in url
        base = url.split("#")[0]

        # Without the token: the login form, and the API refuses.
        driver.get(base)
        _wait(driver, lambda: driver.find_elements(By.ID, "token"), what="the login form")
        driver.save_screenshot(str(shots / "01-login.png"))
        status = driver.execute_async_script(
            "const done = arguments[0]; fetch('/apps').then(r => done(r.status));")
        assert status == 401

        # The address dynoctl prints logs in and lists the app with its state.
        driver.get(url)
        row = _wait(driver, lambda: [r for r in driver.find_elements(By.CSS_SELECTOR, "table.list tbody tr")
                                     if app in r.text and "1/1 up" in r.text], what="the app in the list")
        assert "v3" in row[0].text
        assert "#token" not in driver.current_url  # the token leaves the address bar
        driver.save_screenshot(str(shots / "02-apps.png"))

        # Scale web to 2 with the + control and watch web.2 come up.
        driver.find_element(By.LINK_TEXT, app).click()
        _wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, '[data-dyno="web.1"][data-state="up"]'),
              what="web.1 up")
        driver.find_element(By.CSS_SELECTOR, '[aria-label="One web dyno more"]').click()
        states = set()

        def web2_up() -> bool:
            for node in driver.find_elements(By.CSS_SELECTOR, '[data-dyno="web.2"]'):
                states.add(node.get_attribute("data-state"))
            return "up" in states

        _wait(driver, web2_up, what="web.2 up")
        assert len(d.up(app, 2)) == 2
        driver.save_screenshot(str(shots / "03-app-scaled.png"))

        # Roll back to v2 from the activity feed.
        driver.find_element(By.LINK_TEXT, "Activity").click()
        button = _wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, '[data-rollback="2"]'), what="rollback")
        button[0].click()
        with d.client() as client:
            current = d.wait_for(lambda: (r := client.get_release(app)) and r["version"] == 4 and r, what="v4")
        assert current["description"] == "Rollback to v2"
        _wait(driver, lambda: "Rollback to v2" in driver.find_element(By.CSS_SELECTOR, ".feed").text,
              what="v4 in the feed")
        driver.save_screenshot(str(shots / "04-activity.png"))

        # The live log: a request made now shows up in the tail.
        driver.find_element(By.LINK_TEXT, "Logs").click()
        _wait(driver, lambda: driver.find_element(By.ID, "log-lines").text.strip(), what="the log backlog")
        conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=30)
        conn.request("GET", "/live-probe", headers={"Host": f"{app}.localhost"})
        conn.getresponse().read()
        conn.close()
        _wait(driver, lambda: 'path="/live-probe"' in driver.find_element(By.ID, "log-lines").text,
              what="the new router line in the live tail")
        driver.save_screenshot(str(shots / "05-logs.png"))
        # filters: only dynod lines
        driver.find_element(By.CSS_SELECTOR, "#log-source option[value='app']").click()
        driver.find_element(By.CSS_SELECTOR, ".filters button[type=submit]").click()
        _wait(driver, lambda: "dynod[router]" not in driver.find_element(By.ID, "log-lines").text
              and "app[web." in driver.find_element(By.ID, "log-lines").text, what="app lines only")

        # The charts draw the traffic with the deploys annotated.
        driver.find_element(By.LINK_TEXT, "Metrics").click()
        _wait(driver, lambda: len(driver.find_elements(By.CSS_SELECTOR, ".chart canvas")) >= 6, what="six charts")
        drawn = driver.execute_script(
            "return charts.map(c => [c.root.parentElement.dataset.chart, c.data.slice(1).some(s => s.some(v => v))])")
        by_title = dict(drawn)
        assert by_title["Response time"] and by_title["Throughput (requests/min)"] and by_title["Memory (MB)"], drawn
        driver.save_screenshot(str(shots / "06-metrics.png"))
        # and they update in place with new traffic (the 10 s poll; "Show" asks at once)
        total = "return charts[1].data.slice(1).flat().reduce((a, v) => a + (v || 0), 0)"
        before = driver.execute_script(total)
        first_chart = driver.execute_script("return charts[0].root")
        _requests(d, app, 20)
        time.sleep(0.3)  # the router's lines reach dynod in batches
        driver.find_element(By.CSS_SELECTOR, ".filters button[type=submit]").click()
        _wait(driver, lambda: driver.execute_script(total) > before, what="the new requests in the chart")
        assert driver.execute_script("return charts[0].root") == first_chart  # same chart, new data

        # Settings: config vars masked; a destroy needs the app's name typed, as the CLI asks.
        d.ctl("config:set", "SECRET_TOKEN=hunter2", "-a", app)
        driver.find_element(By.LINK_TEXT, "Settings").click()
        _wait(driver, lambda: "SECRET_TOKEN" in driver.find_element(By.ID, "panel").text, what="config vars")
        assert "hunter2" not in driver.find_element(By.ID, "panel").text
        driver.find_element(By.CSS_SELECTOR, '[aria-label="Show SECRET_TOKEN"]').click()
        assert "hunter2" in driver.find_element(By.ID, "panel").text
        driver.find_element(By.CSS_SELECTOR, ".danger-zone button").click()
        ok = driver.find_element(By.ID, "confirm-ok")
        assert not ok.is_enabled()
        driver.find_element(By.ID, "confirm-input").send_keys(app[:-1])
        assert not ok.is_enabled()
        driver.save_screenshot(str(shots / "07-destroy-confirm.png"))
        driver.find_element(By.ID, "confirm-cancel").click()
        time.sleep(0.5)
        with d.client() as client:
            assert client.get_app(app)["name"] == app  # still there

        # Nothing was fetched from anywhere but dynod.
        origins = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
        assert set(origins) <= {base.rstrip("/")}, set(origins)

        # Phone width: the app page fits without sideways scrolling.
        driver.set_window_size(390, 844)
        driver.find_element(By.LINK_TEXT, "Overview").click()
        _wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, '[data-dyno="web.2"]'), what="dynos on a phone")
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, overflow
        driver.save_screenshot(str(shots / "08-phone-app.png"))
        driver.find_element(By.LINK_TEXT, "Metrics").click()
        _wait(driver, lambda: len(driver.find_elements(By.CSS_SELECTOR, ".chart canvas")) >= 6,
              what="charts on a phone")
        assert driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth") <= 0
        driver.save_screenshot(str(shots / "09-phone-metrics.png"))
        driver.set_window_size(1280, 1000)

        # Destroy, confirmed with the name.
        driver.find_element(By.LINK_TEXT, "Settings").click()
        _wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, ".danger-zone button"), what="settings")
        driver.find_element(By.CSS_SELECTOR, ".danger-zone button").click()
        driver.find_element(By.ID, "confirm-input").send_keys(app)
        driver.find_element(By.ID, "confirm-ok").click()
        with d.client() as client:
            d.wait_for(lambda: app not in [a["name"] for a in client.list_apps()], what="the app destroyed")
    finally:
        d.ctl("apps:destroy", "-a", app, "--confirm", app, check=False)


def _http(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_dashboard_listener_refuses_what_it_must(dashboard_dynod: Dynod) -> None:
    d = dashboard_dynod
    url = d.ctl("dashboard").stdout.strip()
    port = int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    token = url.split("#token=", 1)[1]
    own = {"Host": f"127.0.0.1:{port}"}
    assert _http(port, "GET", "/apps", own)[0] == 401
    assert _http(port, "GET", "/apps", {**own, "Authorization": "Bearer " + "x" * len(token)})[0] == 401
    status, body = _http(port, "GET", "/apps", {**own, "Authorization": f"Bearer {token}"})
    assert status == 200 and body.startswith(b"[")
    # a page on another name rebound to 127.0.0.1 (DNS rebinding) gets nothing, token or not
    assert _http(port, "GET", "/apps", {"Host": f"evil.example:{port}", "Authorization": f"Bearer {token}"})[0] == 421
    # stopping dynod stays a CLI action
    assert _http(port, "POST", "/shutdown", {**own, "Authorization": f"Bearer {token}"})[0] == 403
    assert d.proc is not None and d.proc.poll() is None
    # the page itself needs no token and holds no data; files outside the shipped ones are not there
    status, page = _http(port, "GET", "/", own)
    assert status == 200 and b"Content-Security-Policy" in page
    for path in ("/dashboard/..%2flistener.py", "/dashboard/listener.py", "/dashboard/vendor/uplot/LICENSE"):
        assert _http(port, "GET", path, own)[0] == 404, path
    # Prometheus is off unless [metrics] prometheus says so
    assert _http(port, "GET", "/metrics", {**own, "Authorization": f"Bearer {token}"})[0] == 404
