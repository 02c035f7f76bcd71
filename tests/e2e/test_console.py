"""The web console at /console, in a real browser against the real stack.

Headless Chromium (Debian's `chromium` package) driven by Playwright for
Python: a person signs in with an API key, runs a CSV through a fit-predict
job, watches it live, reads the confusion matrix, downloads the predictions,
redelivers a webhook, and revokes the key the console is using. Every page's
screenshot is saved to docs/console/ (shown in docs/console.md).

The browser tests are skipped only when chromium is absent and this is not
CI; CI installs it (.ci/run) and fails without it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from api.console import STATIC_DIR
from tests.support.api import register, wait_for_job
from tests.support.tokens import ISSUED_SECRETS, fresh_token
from tests.support.webhook_receiver import start_receiver

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "console"
IRIS = ROOT / "examples" / "data" / "iris.csv"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1200, "height": 800}
# Jobs on two busy cores, with the browser and the stack: be patient.
TIMEOUT_MS = 90_000
XSS_COLUMN = "<img src=x onerror=alert(1)>"
XSS_LABEL = "</script>"

# Strings in the assets that look like URLs but are never fetched.
NOT_FETCHED = {
    "http://www.w3.org/2000/svg",  # the SVG namespace of createElementNS
    "https://example.com/hooks/tabpfn",  # the webhook field's placeholder
}


# --- Without a browser: headers, assets, packaging -------------------------


def test_console_is_served_with_a_strict_content_security_policy(stack) -> None:
    redirect = httpx.get(f"{stack.api_url}/console", follow_redirects=False)
    assert redirect.status_code in (307, 308)
    assert redirect.headers["location"].endswith("/console/")

    for path in ("/console/", "/console/js/main.js", "/console/console.css"):
        response = httpx.get(f"{stack.api_url}{path}")
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["connect-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    script = httpx.get(f"{stack.api_url}/console/js/main.js")
    assert script.headers["content-type"].startswith("text/javascript")
    missing = httpx.get(f"{stack.api_url}/console/js/nothing.js")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def _assets() -> list[Path]:
    return sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())


def test_console_assets_load_nothing_from_elsewhere_and_run_no_inline_code() -> None:
    assets = _assets()
    assert {p.suffix for p in assets} >= {".html", ".js", ".css"}
    for path in assets:
        text = path.read_text()
        urls = set(re.findall(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'`)]*""", text))
        assert urls <= NOT_FETCHED, f"{path.name} names {urls - NOT_FETCHED}"
        assert "@import" not in text and "url(" not in text, path.name
        if path.suffix == ".js":
            # Markup from strings is how user text becomes code: the console builds nodes.
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
                assert sink not in text, f"{path.name} uses {sink}"
            assert "new Function" not in text and "localStorage" not in text, path.name
            assert "document.cookie" not in text, path.name
    html = (STATIC_DIR / "index.html").read_text()
    # Scripts only by src, no inline handlers, no style blocks or attributes.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert len(scripts) == html.count("<script") >= 1
    assert all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", html)
    assert "<style" not in html and "style=" not in html


def test_the_wheel_carries_the_console(tmp_path: Path) -> None:
    # Built from a copy, so the build leaves nothing in the work tree.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for package in ("api", "worker", "shared", "emulator", "cli"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
         "--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [wheel] = (tmp_path / "dist").glob("tabpfn_api-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in _assets():
        assert f"api/console/static/{asset.relative_to(STATIC_DIR).as_posix()}" in names


# --- In the browser ----------------------------------------------------------


# Text whose colour against its background is under WCAG AA (4.5:1): a list of
# "text (ratio)" for every HTML element with its own visible text on the page.
LOW_CONTRAST_JS = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => v / 255)
    .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4))
    .reduce((acc, v, i) => acc + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest("svg") || !el.checkVisibility()) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const style = getComputedStyle(el);
    const fg = rgb(style.color);
    const [a, b] = [lum(fg.slice(0, 3)), lum(background(el))].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const minimum = el.disabled || el.closest("button:disabled") ? 0 : 4.5;
    if (ratio < minimum) low.push(`${el.textContent.trim().slice(0, 30)} (${ratio.toFixed(2)})`);
  }
  return low;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing on CI: .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Console:
    """A browser tab on the console, with what it asked for and what it popped up."""

    def __init__(self, page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("dialog", self._dialog)
        page.set_default_timeout(TIMEOUT_MS)
        self.accept_next_dialog = False

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if self.accept_next_dialog:
            self.accept_next_dialog = False
            dialog.accept()
        else:
            dialog.dismiss()

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.base_url}/console/{route}")

    def sign_in(self, api_key: str) -> None:
        self.open()
        self.page.get_by_label("API key", exact=True).fill(api_key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("heading", name="Jobs").wait_for()

    def go(self, name: str) -> None:
        self.page.get_by_role("navigation", name="Console pages").get_by_role(
            "link", name=name, exact=True
        ).click()
        self.page.get_by_role("heading", level=1).first.wait_for()

    def screenshot(self, name: str, *, full_page: bool = False) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        # Keys shown once are blacked out: the pictures are committed.
        self.page.screenshot(
            path=str(SCREENSHOTS / f"{name}.png"),
            full_page=full_page,
            mask=[self.page.locator(".secret")],
            mask_color="#4f5863",
        )

    def low_contrast(self) -> list[str]:
        return self.page.evaluate(LOW_CONTRAST_JS)

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith((self.base_url, "blob:"))]


@pytest.fixture
def console(browser, stack) -> Iterator[Console]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    yield Console(context.new_page(), stack.api_url)
    context.close()


@pytest.fixture
def receiver():
    receiver, server = start_receiver()
    yield receiver
    server.shutdown()


def _key(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _iris_split(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """Iris as train (4 of 5 rows) and a labelled test file (every 5th row)."""
    with IRIS.open() as f:
        header, *rows = list(csv.reader(f))
    test = rows[::5]
    train = [r for i, r in enumerate(rows) if i % 5]
    return (
        _write_csv(tmp_path / "train.csv", header, train),
        _write_csv(tmp_path / "test.csv", header, test),
        [r[-1] for r in test],
    )


def _run_try_it(console: Console, train: Path, test: Path | None, callback: str | None = None):
    page = console.page
    console.go("Try it")
    page.get_by_label("Training CSV", exact=True).set_input_files(str(train))
    page.locator("table.preview-table").wait_for()
    if test is not None:
        page.get_by_label("Test CSV (optional)").set_input_files(str(test))
        page.get_by_text(f"{test.name}: ").wait_for()
    if callback:
        page.get_by_label("Webhook URL (optional)").fill(callback)
    page.get_by_role("button", name="Run fit-predict").click()


def test_a_csv_goes_to_a_confusion_matrix_and_back_as_a_download(
    console, api, receiver, tmp_path, emulator_knobs
) -> None:
    headers = register(api)
    train, test, labels = _iris_split(tmp_path)
    # Slow enough upstream that the live view sees the job run, not just end.
    emulator_knobs(latency_s=0.5, usage_limit=400)
    page = console.page
    console.sign_in(_key(headers))

    _run_try_it(console, train, test, callback=receiver.url)
    matrix = page.locator("table.confusion")
    matrix.wait_for()
    # Live: the run panel saw the job running before it succeeded (events, not a reload).
    steps = page.locator("ol.run-steps li").all_text_contents()
    assert any(s.startswith("running") for s in steps), steps
    assert steps[-1].startswith("succeeded"), steps

    caption = matrix.locator("caption").text_content()
    right, total = map(int, re.search(r"(\d+) of (\d+) right", caption).groups())
    assert total == len(labels) == 30
    assert right >= 24, caption  # iris is easy; a broken matrix is not
    counts = [int(c) for c in matrix.locator("td.count").all_text_contents()]
    assert sum(counts) == 30 and len(counts) == 9
    assert matrix.locator("tbody th").all_text_contents() == ["setosa", "versicolor", "virginica"]
    matrix.scroll_into_view_if_needed()
    console.screenshot("try-it")
    assert console.low_contrast() == []

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download predictions (CSV)").click()
    download = download_info.value
    job_link = page.locator("#run-title ~ div a").first
    job_id = job_link.text_content().strip()
    assert download.suggested_filename == f"{job_id}.csv"
    table = list(csv.reader(io.StringIO(Path(download.path()).read_text())))
    result = api.get(f"/jobs/{job_id}/result", headers=headers).json()
    assert table[0][0] == "prediction"
    assert [row[0] for row in table[1:]] == result["predictions"]
    expect(page.locator("table.results-table tbody tr")).to_have_count(30)

    # The job's own page: timeline, result, and the webhook that went out.
    job_link.click()
    page.get_by_role("heading", name=re.compile("^Job ")).wait_for()
    page.locator(".delivery[data-status='succeeded']").wait_for()
    receiver.wait_for(1)
    timeline = page.locator("ol.timeline").text_content()
    assert "Submitted" in timeline and "Started" in timeline and "Succeeded" in timeline
    assert "Time reported by TabPFN" in timeline
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download Parquet").click()
    assert download_info.value.suggested_filename == f"{job_id}.parquet"
    assert Path(download_info.value.path()).read_bytes()[:4] == b"PAR1"
    console.screenshot("job", full_page=True)
    assert console.low_contrast() == []

    page.get_by_role("button", name="Redeliver webhook").click()
    first, second = receiver.wait_for(2)
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    expect(page.locator(".delivery[data-status='succeeded']")).to_have_count(2)
    deliveries = api.get(f"/jobs/{job_id}/webhooks", headers=headers).json()
    assert [d["status"] for d in deliveries] == ["succeeded", "succeeded"]

    console.go("Jobs")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    row.wait_for()
    assert row.locator(".badge").text_content() == "succeeded"
    console.screenshot("jobs")
    assert console.low_contrast() == []

    console.go("Models")
    page.locator("details.model").first.wait_for()
    page.locator("details.model summary").first.click()
    # A model is named in its card, and found again by the name.
    model = page.locator("details.model").first
    model_id = model.get_attribute("id").removeprefix("model-")
    model.get_by_label("Label key").fill("name")
    model.get_by_label("Label value").fill("iris")
    model.get_by_role("button", name="Set label").click()
    expect(model.locator(".model-labels")).to_have_text(" · name: iris")
    assert api.get(f"/models/{model_id}", headers=headers).json()["metadata"]["name"] == "iris"
    console.screenshot("models")
    page.get_by_label("Metadata").fill("name:iris")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("details.model")).to_have_count(1)
    assert page.locator("details.model").get_attribute("id") == f"model-{model_id}"
    assert "metadata=name%3Airis" in page.url
    page.get_by_label("Metadata").fill("name:nope")
    page.get_by_role("button", name="Apply").click()
    page.get_by_text("No models with the label name:nope.").wait_for()

    console.go("Usage")
    chart = page.locator("svg.usage-chart")
    chart.wait_for()
    assert "of 400" in chart.get_attribute("aria-label")
    assert "null" not in page.locator("main").text_content()
    console.screenshot("usage")

    assert console.foreign_requests() == []  # works with no internet: nothing but this origin
    assert console.dialogs == []


def test_a_regression_shows_predicted_against_actual(console, api, tmp_path) -> None:
    headers = register(api)
    header = ["x", "colour", "price"]
    rows = [[str(i), "red" if i % 2 else "blue", str(2.5 * i + (i % 3))] for i in range(40)]
    train = _write_csv(tmp_path / "train.csv", header, rows[::2])
    test = _write_csv(tmp_path / "test.csv", header, rows[1::2])
    page = console.page
    console.sign_in(_key(headers))
    console.go("Try it")
    page.get_by_label("Training CSV", exact=True).set_input_files(str(train))
    # The target's values are many numbers with fractions: the task is guessed.
    expect(page.get_by_label("Target column")).to_have_value("price")
    expect(page.get_by_label("Task")).to_have_value("regression")
    page.get_by_label("Output").select_option("quantiles")
    page.get_by_label("Quantiles").fill("0.1,0.9")
    page.get_by_label("Test CSV (optional)").set_input_files(str(test))
    # Labels for the job: refused with the service's message unless they are JSON.
    page.get_by_label("Metadata (optional JSON)").fill("run=regression-1")
    page.get_by_role("button", name="Run fit-predict").click()
    refused = page.locator("form .notice.error")
    refused.wait_for()
    assert "metadata is not valid JSON" in refused.locator(".error-message").text_content()
    page.get_by_label("Metadata (optional JSON)").fill('{"run": "regression-1"}')
    page.get_by_role("button", name="Run fit-predict").click()
    plot = page.locator("svg.scatter")
    plot.wait_for()
    [labelled] = api.get("/jobs?metadata=run:regression-1", headers=headers).json()["jobs"]
    assert (labelled["type"], labelled["status"]) == ("fit_predict", "succeeded")
    expect(plot.locator("circle.point")).to_have_count(20)
    r2 = float(re.search(r"R² (-?[\d.]+)", plot.get_attribute("aria-label")).group(1))
    assert r2 > 0.8  # a straight line is easy; a broken plot is not
    headers_shown = page.locator("table.results-table th").all_text_contents()
    assert headers_shown == ["#", "actual", "prediction", "q 0.1", "q 0.9"]


def test_the_jobs_list_follows_jobs_live_and_filters_them(console, api, emulator_knobs) -> None:
    headers = register(api)
    emulator_knobs(latency_s=1.0)
    page = console.page
    console.sign_in(_key(headers))
    train = {"X": [[float(i)] for i in range(8)], "y": [0, 1] * 4}
    fit = {"task": "classification", "train": train}
    job_id = api.post("/jobs/fit", json=fit, headers=headers).json()["id"]
    # The list picks the new job up and follows it to the end, with no reload.
    row = page.locator(f"tr[data-job-id='{job_id}']")
    row.wait_for()
    page.locator(f"tr[data-job-id='{job_id}'][data-status='succeeded']").wait_for()
    assert wait_for_job(api, headers, job_id)["status"] == "succeeded"

    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Apply").click()
    page.get_by_text("No jobs match these filters.").wait_for()
    assert "status=failed" in page.url
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_role("button", name="Apply").click()
    page.locator(f"tr[data-job-id='{job_id}']").wait_for()

    # Pages by cursor: three jobs, two a page.
    newer = [api.post("/jobs/fit", json=fit, headers=headers).json()["id"] for _ in range(2)]
    console.open("#/jobs?limit=2")
    rows = page.locator("table.jobs-table tbody tr")
    expect(rows).to_have_count(2)
    assert [r.get_attribute("data-job-id") for r in rows.all()] == newer[::-1]
    page.get_by_role("button", name="Older →").click()
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-job-id") == job_id
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    page.get_by_role("button", name="← Newer").click()
    expect(rows).to_have_count(2)
    expect(page.get_by_role("button", name="← Newer")).to_be_disabled()
    # One a page: Older twice, the browser's Back, then Newer goes to the first page
    # (a stack of cursors sent it to the page it was on).
    console.open("#/jobs?limit=1")
    order = [*newer[::-1], job_id]
    for shown in order[1:]:
        page.get_by_role("button", name="Older →").click()
        expect(rows.first).to_have_attribute("data-job-id", shown)
    page.go_back()
    expect(rows.first).to_have_attribute("data-job-id", order[1])
    page.get_by_role("button", name="← Newer").click()
    expect(rows.first).to_have_attribute("data-job-id", order[0])
    expect(page.get_by_role("button", name="← Newer")).to_be_disabled()

    # Filtered by one of the labels jobs were submitted with.
    run = {**fit, "metadata": {"run": "r-1"}}
    labelled_id = api.post("/jobs/fit", json=run, headers=headers).json()["id"]
    console.open("#/jobs")
    page.get_by_label("Metadata").fill("run:r-1")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-job-id") == labelled_id
    assert "metadata=run%3Ar-1" in page.url
    page.get_by_label("Metadata").fill("run:r-2")
    page.get_by_role("button", name="Apply").click()
    page.get_by_text("No jobs match these filters.").wait_for()

    # A job is canceled from its page, and the page follows it to the end.
    emulator_knobs(latency_s=3.0)
    labelled = {**fit, "metadata": {"order": "A-17"}}
    slow = api.post("/jobs/fit", json=labelled, headers=headers).json()["id"]
    console.open(f"#/jobs/{slow}")
    # The caller's labels show on the job's page, and change there while it runs.
    labels = page.locator(".labels .job-metadata li")
    expect(labels).to_have_text(["order A-17 Remove"])
    page.get_by_label("Label key").fill("stage")
    page.get_by_label("Label value").fill("<b>live</b>")
    page.get_by_role("button", name="Set label").click()
    expect(labels).to_have_count(2)
    page.get_by_role("button", name="Remove label order").click()
    expect(labels).to_have_text(["stage <b>live</b> Remove"])
    assert api.get(f"/jobs/{slow}", headers=headers).json()["metadata"] == {"stage": "<b>live</b>"}
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator(".summary .badge")).to_have_text("canceled")
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    assert api.get(f"/jobs/{slow}", headers=headers).json()["status"] == "canceled"

    # An ended job is deleted from its page, once confirmed; the page goes back to the list.
    page.get_by_role("button", name="Delete job").click()  # the confirmation is dismissed
    assert console.dialogs[-1].startswith(f"confirm: Delete job {slow}")
    assert api.get(f"/jobs/{slow}", headers=headers).status_code == 200
    console.accept_next_dialog = True
    page.get_by_role("button", name="Delete job").click()
    page.wait_for_url("**/console/#/jobs")
    assert api.get(f"/jobs/{slow}", headers=headers).status_code == 404


def test_waiting_reasons_and_rate_windows_are_shown_when_the_api_sends_them(console, api) -> None:
    """`waiting` on a Job and `rate_windows` in /usage come with the scheduler;
    these answers are the real ones with those fields set, to pin the rendering."""
    headers = register(api)
    page = console.page
    fit = {"task": "classification", "train": {"X": [[0.0], [1.0], [2.0], [3.0]], "y": [0, 1] * 2}}
    job_id = api.post("/jobs/fit", json=fit, headers=headers).json()["id"]
    wait_for_job(api, headers, job_id)
    queued = api.get(f"/jobs/{job_id}", headers=headers).json()
    until = "2030-01-01T00:01:00+00:00"
    queued.update(
        status="queued", stage=None, started_at=None, finished_at=None,
        upstream_timings=None, waiting={"reason": "upstream_rate_limit", "until": until},
    )  # fmt: skip
    body = json.dumps(queued)
    page.route(f"**/api/v1/jobs/{job_id}", lambda route: route.fulfill(json=queued))
    page.route(
        f"**/api/v1/jobs/{job_id}/events",
        lambda route: route.fulfill(
            body=f"event: job\ndata: {body}\n\n", content_type="text/event-stream"
        ),
    )
    usage = api.get("/usage", headers=headers).json()
    usage["rate_windows"] = [
        {"kind": "fit", "window": "minute", "limit": 5, "used": 4, "resets_at": until},
        {"kind": "predict", "window": "hour", "limit": 100, "used": 12, "resets_at": until},
    ]
    page.route("**/api/v1/usage", lambda route: route.fulfill(json=usage))

    console.sign_in(_key(headers))
    row = page.locator(f"tr[data-job-id='{job_id}']")
    row.wait_for()
    console.open(f"#/jobs/{job_id}")
    waiting = page.locator(".notice.waiting")
    waiting.wait_for()
    assert waiting.locator("code").text_content() == "upstream_rate_limit"
    assert "rate limit" in waiting.text_content()
    assert "Now: queued" in page.locator("ol.timeline").text_content()

    console.go("Usage")
    chart = page.locator("svg.usage-chart")
    chart.wait_for()
    label = chart.get_attribute("aria-label")
    assert "fit per minute: 4 of 5" in label and "predict per hour: 12 of 100" in label
    assert "null" not in page.locator("main").text_content()
    console.screenshot("usage-rate-windows")


def test_a_revoked_key_signs_the_console_out_at_the_next_request(console, api) -> None:
    headers = register(api)
    page = console.page
    console.sign_in(_key(headers))
    console.go("Keys")
    page.get_by_label("Name (optional)").fill("  nightly-etl ")
    page.get_by_role("button", name="Create a key").click()
    new_key = page.locator("code.new-key").text_content()
    assert new_key.startswith("tpa_")
    ISSUED_SECRETS.append(new_key)  # the secret scan looks for it in logs and data too
    assert api.get("/auth/me", headers={"Authorization": f"Bearer {new_key}"}).status_code == 200
    page.get_by_text("(this console)").wait_for()
    expect(page.locator("tbody tr")).to_have_count(2)
    # The new key's row carries its name (trimmed); the setup key has none.
    new_id = new_key.split("_")[1]
    expect(page.locator(f'tr[data-key-id="{new_id}"] td').nth(1)).to_have_text("nightly-etl")
    expect(page.get_by_label("Name (optional)")).to_have_value("")
    console.screenshot("keys")
    assert console.low_contrast() == []

    # The key lives in this tab's sessionStorage only: no cookie, no URL, no localStorage.
    storage = page.evaluate("() => [Object.values(sessionStorage), Object.keys(localStorage)]")
    assert storage == [[_key(headers)], []]
    assert page.context.cookies() == []
    assert all(_key(headers) not in url for url in console.requests)

    me = api.get("/auth/me", headers=headers).json()
    console.accept_next_dialog = True
    page.get_by_role("button", name=f"Revoke key {me['key_id']}").click()
    # The list reloads with the revoked key: refused, so the console signs out.
    page.get_by_role("heading", name="Sign in with your API key").wait_for()
    flash = page.locator("#flash")
    assert "unauthorized" in flash.locator("code.error-code").text_content()
    assert "Signed out" in flash.text_content()
    assert page.evaluate("() => sessionStorage.length") == 0
    assert api.get("/auth/me", headers=headers).status_code == 401
    assert console.dialogs and console.dialogs[0].startswith("confirm: Revoke key")
    console.screenshot("signed-out")
    assert console.low_contrast() == []

    # A wrong key is refused with the message and the code.
    page.get_by_label("API key", exact=True).fill("tpa_notakey")
    page.get_by_role("button", name="Sign in").click()
    error = page.locator("form .notice.error")
    error.wait_for()
    assert error.locator("code.error-code").text_content() == "unauthorized"


def test_a_failed_job_shows_its_error_message_and_code(console, api, emulator_knobs, tmp_path):
    headers = register(api, token="carol-token")
    train, test, _ = _iris_split(tmp_path)
    page = console.page
    console.sign_in(_key(headers))
    emulator_knobs(revoked_tokens=["carol-token"])
    _run_try_it(console, train, test)
    error = page.locator("#run-title ~ div .notice.error")
    error.wait_for()
    assert error.locator("code.error-code").text_content() == "upstream_auth_failed"
    assert error.locator(".error-message").text_content()
    # The stored token was rejected: both places point to where it is replaced.
    replace = page.get_by_role("link", name="Replace your TabPFN token")
    assert replace.get_attribute("href") == "#/token"
    page.locator("#run-title ~ div a").first.click()
    job_error = page.locator(".job-error")
    job_error.wait_for()
    assert job_error.locator("code.error-code").text_content() == "upstream_auth_failed"
    assert "Failed" in page.locator("ol.timeline").text_content()
    job_error.get_by_role("link", name="Replace your TabPFN token").click()
    page.get_by_role("heading", name="Replace your TabPFN token").wait_for()
    # Usage is read with the stored token too.
    console.go("Usage")
    usage_error = page.locator(".notice.error")
    usage_error.wait_for()
    assert usage_error.locator("code.error-code").text_content() == "upstream_auth_failed"
    assert page.get_by_role("link", name="Replace your TabPFN token").is_visible()


def test_a_job_page_whose_job_cannot_be_read_shows_the_error_alone(console, api) -> None:
    """The page was drawn first: an unknown id showed "Waiting for the job to end…" and
    "Loading…" for good, a live Cancel button, and the error below them all."""
    headers = register(api)
    page = console.page
    console.sign_in(_key(headers))
    console.open(f"#/jobs/{uuid.uuid4()}")
    error = page.locator("main .notice.error")
    error.wait_for()
    assert error.locator("code").first.text_content() == "not_found"
    text = page.locator("main").text_content()
    assert "Loading" not in text and "Waiting for the job to end" not in text, text
    assert page.get_by_role("button", name="Cancel job").count() == 0


def _account_of(api, token: str) -> str:
    """The account this service files `token` under (setup finds an account by its token)."""
    found = api.post("/auth/setup", json={"tabpfn_token": token})
    assert found.status_code == 201, found.text
    ISSUED_SECRETS.extend([found.json()["api_key"], found.json()["webhook_secret"]])
    assert found.json()["account"] == "existing"
    return found.json()["user_id"]


def test_a_rejected_tabpfn_token_is_replaced_in_the_console(console, api, emulator_knobs):
    old_token, new_token = fresh_token(), fresh_token()
    headers = register(api, token=old_token)
    ISSUED_SECRETS.append(new_token)
    user_id = api.get("/auth/me", headers=headers).json()["user_id"]
    page = console.page
    console.sign_in(_key(headers))
    console.go("TabPFN token")
    token_field = page.get_by_label("New TabPFN token")
    assert token_field.get_attribute("type") == "password"

    # A token TabPFN rejects: the API's message and code; the stored token stays.
    token_field.fill("not-a-tabpfn-token")
    page.get_by_role("button", name="Replace token").click()
    error = page.locator("form .notice.error")
    error.wait_for()
    assert error.locator("code.error-code").text_content() == "upstream_auth_failed"
    assert "rejected this token" in error.locator(".error-message").text_content()
    assert "your stored token is unchanged" in error.text_content()
    expect(token_field).to_have_value("")
    expect(token_field).to_be_focused()
    assert console.low_contrast() == []
    assert page.evaluate("() => Object.values(sessionStorage)") == [_key(headers)]  # signed in
    assert _account_of(api, old_token) == user_id
    # Another account's token is refused with its own code.
    taken = fresh_token()
    register(api, token=taken)
    token_field.fill(taken)
    page.get_by_role("button", name="Replace token").click()
    expect(error.locator("code.error-code")).to_have_text("tabpfn_token_in_use")
    assert _account_of(api, old_token) == user_id

    # TabPFN stops accepting the stored token: a job fails, and its page points here.
    emulator_knobs(revoked_tokens=[old_token])
    fit = {"task": "classification", "train": {"X": [[0.0], [1.0], [2.0], [3.0]], "y": [0, 1] * 2}}
    failed = api.post("/jobs/fit", json=fit, headers=headers).json()["id"]
    assert wait_for_job(api, headers, failed)["error"]["code"] == "upstream_auth_failed"
    console.open(f"#/jobs/{failed}")
    page.locator(".job-error").get_by_role("link", name="Replace your TabPFN token").click()
    page.get_by_role("heading", name="Replace your TabPFN token").wait_for()

    token_field.fill(new_token)
    page.get_by_role("button", name="Replace token").click()
    success = page.locator("form .notice.success")
    success.wait_for()
    assert "Token replaced" in success.text_content()
    # The token is not echoed back, kept in the browser, or sent in a URL.
    expect(token_field).to_have_value("")
    assert new_token not in page.content()
    assert page.evaluate("() => [Object.values(sessionStorage), Object.keys(localStorage)]") == [
        [_key(headers)],
        [],
    ]
    assert all(new_token not in url for url in console.requests)
    console.screenshot("token")
    assert console.low_contrast() == []

    # Jobs now run with the new token (TabPFN refuses the old one), filed under this account.
    job_id = api.post("/jobs/fit", json=fit, headers=headers).json()["id"]
    assert wait_for_job(api, headers, job_id)["status"] == "succeeded"
    assert _account_of(api, new_token) == user_id
    assert console.foreign_requests() == []
    assert console.dialogs == []


def test_a_missing_target_is_named_by_its_row_in_the_users_file(console, api, tmp_path):
    """With no test file the console sends a shuffled share of the rows; the service
    then named the row of that file ("row 1"), not of the user's (row 2)."""
    headers = register(api)
    rows = [[str(i), "a" if i % 2 else "b"] for i in range(20)]
    rows[2][1] = ""
    train = _write_csv(tmp_path / "gap.csv", ["x", "label"], rows)
    page = console.page
    console.sign_in(_key(headers))
    console.go("Try it")
    page.get_by_label("Training CSV", exact=True).set_input_files(str(train))
    expect(page.get_by_label("Target column")).to_have_value("label")
    page.get_by_role("button", name="Run fit-predict").click()
    error = page.locator(".notice.error .error-message")
    error.wait_for()
    assert 'gap.csv: row 2 (counting from 0 below the header) has no value in "label"' in (
        error.text_content()
    )
    assert api.get("/jobs", headers=headers).json()["jobs"] == []  # nothing was sent


def test_user_text_is_rendered_as_text_never_as_markup(browser, stack, api, tmp_path) -> None:
    # With the page's CSP bypassed, an injection would run: the test sees it.
    context = browser.new_context(viewport=VIEWPORT, bypass_csp=True)
    console = Console(context.new_page(), stack.api_url)
    page = console.page
    try:
        headers = register(api)
        header = ["width", XSS_COLUMN, "label"]
        rows = [[str(i), str(i % 3), XSS_LABEL if i % 2 else "ok"] for i in range(24)]
        train = _write_csv(tmp_path / "train.csv", header, rows[:16])
        test = _write_csv(tmp_path / "test.csv", header, rows[16:])
        console.sign_in(_key(headers))
        _run_try_it(console, train, test)
        page.locator("table.confusion").wait_for()

        assert page.locator("table.preview-table th", has_text=XSS_COLUMN).is_visible()
        assert page.locator("table.confusion tbody th", has_text=XSS_LABEL).is_visible()
        assert page.locator("table.results-table td", has_text=XSS_LABEL).first.is_visible()
        options = page.get_by_label("Target column").locator("option").all_text_contents()
        assert XSS_COLUMN in options

        # An error message that quotes the column: a test file without it.
        missing = _write_csv(tmp_path / "missing.csv", ["width", "label"], [["1", "ok"]])
        page.get_by_label("Test CSV (optional)").set_input_files(str(missing))
        page.get_by_role("button", name="Run fit-predict").click()
        refused = page.locator("form .notice.error")
        refused.wait_for()
        assert XSS_COLUMN in refused.locator(".error-message").text_content()
        assert refused.locator("code.error-code").text_content() == "validation_error"

        console.go("Models")
        page.locator("details.model summary").first.click()
        assert page.locator("details.model li", has_text=XSS_COLUMN).first.is_visible()

        assert page.locator("img").count() == 0
        assert page.evaluate("() => document.querySelectorAll('script:not([src])').length") == 0
        assert console.dialogs == []
    finally:
        context.close()


def test_the_console_works_by_keyboard_at_phone_width(browser, stack, api) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True)
    console = Console(context.new_page(), stack.api_url)
    page = console.page
    try:
        headers = register(api)
        # Sign in by keyboard alone: the key field has the focus; Enter submits.
        console.open()
        page.get_by_label("API key", exact=True).wait_for()
        page.keyboard.type(_key(headers))
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Jobs").wait_for()
        for name in ("Try it", "Usage", "Keys", "TabPFN token", "Jobs"):
            console.go(name)
            # Nothing wider than the screen: no sideways scrolling of the page itself.
            assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, name
        # Try it with no test file: a fifth of the rows is held out and scored.
        console.go("Try it")
        page.get_by_label("Training CSV", exact=True).set_input_files(str(IRIS))
        page.get_by_text("are held out to test on").wait_for()
        page.get_by_role("button", name="Run fit-predict").click()
        caption = page.locator("table.confusion caption")
        caption.wait_for()
        assert re.search(r"of 30 right", caption.text_content())
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        caption.scroll_into_view_if_needed()
        console.screenshot("phone")
        # The jobs list: a row's times on one line each (they wrapped to 3-4 lines,
        # rows 110 px tall at 375 px); the table scrolls inside its box instead.
        console.go("Jobs")
        page.locator("table.jobs-table tbody tr").first.wait_for()
        heights = page.evaluate(
            """() => [...document.querySelectorAll('table.jobs-table tbody tr')]
                .map((row) => row.getBoundingClientRect().height)"""
        )
        assert max(heights) < 60, heights
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        # The skip link is the first stop and leads to the content.
        console.go("Try it")
        page.reload()
        page.get_by_role("heading", name="Try it with a CSV").wait_for()
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
        # Every control on the page is reachable by Tab and has a label.
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                .filter((el) => !el.labels || el.labels.length === 0).map((el) => el.name)"""
        )
        assert unlabelled == []
    finally:
        context.close()


def test_an_account_is_deleted_from_the_console_once_confirmed(console, api) -> None:
    headers = register(api)
    fit = {"task": "classification", "train": {"X": [[0.0], [1.0], [2.0], [3.0]], "y": [0, 1] * 2}}
    job_id = api.post("/jobs/fit", json=fit, headers=headers).json()["id"]
    assert wait_for_job(api, headers, job_id)["status"] == "succeeded"
    page = console.page
    console.sign_in(_key(headers))
    console.go("TabPFN token")
    page.get_by_role("heading", name="Delete your account").wait_for()
    delete = page.get_by_role("button", name="Delete account")
    confirm = page.get_by_label('Type "delete" to confirm')
    # Nothing happens until the word is typed.
    expect(delete).to_be_disabled()
    confirm.fill("delet")
    expect(delete).to_be_disabled()
    assert api.get("/auth/me", headers=headers).status_code == 200
    confirm.fill("delete")
    expect(delete).to_be_enabled()
    console.screenshot("delete-account")
    assert console.low_contrast() == []

    delete.click()
    page.get_by_role("heading", name="Sign in with your API key").wait_for()
    flash = page.locator("#flash")
    assert "Account deleted" in flash.text_content()
    assert page.evaluate("() => sessionStorage.length") == 0
    gone = api.get(f"/jobs/{job_id}", headers=headers)
    assert (gone.status_code, gone.json()["code"]) == (401, "unauthorized")
    assert console.foreign_requests() == []
    assert console.dialogs == []
