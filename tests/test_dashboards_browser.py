"""End to end: each dashboard served by a real ``streamlit run`` and loaded in headless Chromium.

The browser is driven through chromedriver's W3C WebDriver HTTP API with the standard library (no
selenium needed). Skipped with a reason where Chromium or chromedriver is not installed (install
them with ``.ci/browser.sh``). With ``PIANO_GPT_SCREENSHOTS=<folder>`` the pages are also saved as
PNG there (how docs/prompt_practice.png and docs/piano_dataset_review.png are made).
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")

from piano_gpt import dashboard_logic as dl  # noqa: E402
from piano_gpt.model import GPT, GPTConfig  # noqa: E402
from piano_gpt.tokenizers import ExponentialTimeTokenizer  # noqa: E402
from piano_gpt.train.checkpoint import save_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,2200",
]
PAGE_TIMEOUT = 120

pytestmark = pytest.mark.slow


def find_browser() -> tuple[str, str]:
    browser = next((path for path in map(shutil.which, BROWSERS) if path), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver") if Path(p).exists()), None
    )
    if browser is None or driver is None:
        pytest.skip("headless browser test needs chromium and chromedriver (run .ci/browser.sh)")
    return browser, driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except (OSError, urllib.error.URLError, ConnectionError):
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def http(method: str, url: str, body: dict | None = None, timeout: float = 60) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raise AssertionError(f"WebDriver {method} {url}: {error.code} {error.read()[:500]!r}") from error


class Browser:
    """A minimal W3C WebDriver client for one chromedriver session."""

    def __init__(self, browser: str, driver: str, profile: Path, log: Path):
        self.port = free_port()
        self.log = open(log, "wb")
        self.driver = subprocess.Popen(
            [driver, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        wait_until(
            lambda: http("GET", f"{self.base}/status", timeout=2)["value"]["ready"], 30, "chromedriver"
        )
        options = {"binary": browser, "args": [*CHROME_FLAGS, f"--user-data-dir={profile}"]}
        capabilities = {
            "capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        }
        self.session = http("POST", f"{self.base}/session", capabilities)["value"]["sessionId"]

    def command(self, method: str, path: str, body: dict | None = None):
        return http(method, f"{self.base}/session/{self.session}{path}", body)["value"]

    def open(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def text(self) -> str:
        return self.js("return document.body ? document.body.innerText : '';")

    def count(self, selector: str) -> int:
        return self.js("return document.querySelectorAll(arguments[0]).length;", selector)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.command("GET", "/screenshot")))

    def close(self) -> None:
        try:
            http("DELETE", f"{self.base}/session/{self.session}", timeout=20)
        except (AssertionError, OSError):
            pass
        self.driver.terminate()
        try:
            self.driver.wait(10)
        except subprocess.TimeoutExpired:
            self.driver.kill()
        self.log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary, driver = find_browser()
    folder = tmp_path_factory.mktemp("chromium")
    session = Browser(binary, driver, folder / "profile", folder / "chromedriver.log")
    yield session
    session.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    tokenizer = ExponentialTimeTokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32))
    save_checkpoint(root / "tiny-last", model, tokenizer)
    return root


@pytest.fixture(scope="module")
def dataset():
    kind, path = dl.default_dataset()
    if kind == "maestro" and not (Path(path) / "maestro-v3.0.0.csv").exists():
        pytest.skip(f"no demo corpus and no MAESTRO at {path}")
    return kind, path


def serve(app: str, runs: Path, log: Path):
    """Start ``streamlit run`` on a free port bound to 127.0.0.1; returns (process, url)."""
    port = free_port()
    env = {**os.environ, dl.RUNS_ENV: str(runs), "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    env.setdefault("PIANO_GPT_SOUNDFONT", "none")
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(REPO / "dashboards" / app),
        "--server.headless=true",
        f"--server.port={port}",
        "--server.address=127.0.0.1",
        "--server.fileWatcherType=none",
        "--browser.gatherUsageStats=false",
        "--global.developmentMode=false",
    ]
    handle = open(log, "wb")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy():
        if process.poll() is not None:
            raise AssertionError(f"streamlit exited: {log.read_text()[-2000:]}")
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read().strip() == b"ok"

    wait_until(healthy, 60, f"streamlit serving {app}")
    return process, url, handle


def stop(process, handle) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
    handle.close()


def wait_for_page(browser: Browser, expected: list[str], timeout: float = PAGE_TIMEOUT) -> str:
    """Wait until every expected text is on the page and the script has stopped running."""

    def ready():
        text = browser.text()
        running = browser.count('[data-testid="stStatusWidget"] [data-testid*="Running"]')
        skeletons = browser.count('[data-testid="stSkeleton"]')
        return text if all(e in text for e in expected) and not running and not skeletons else None

    wait_until(ready, timeout, f"page text {expected}")
    time.sleep(1.0)  # charts draw after the script ends
    return wait_until(ready, timeout, f"page text {expected} (settled)")


def assert_no_exception(browser: Browser, text: str) -> None:
    assert browser.count('[data-testid="stException"]') == 0, text[-3000:]
    assert browser.count('[data-testid="stAlertContentError"]') == 0, text[-3000:]
    assert "Traceback" not in text


def screenshot(browser: Browser, name: str, tmp_path: Path) -> None:
    browser.screenshot(tmp_path / name)
    folder = os.environ.get("PIANO_GPT_SCREENSHOTS")
    if folder:
        browser.screenshot(Path(folder) / name)


def test_prompt_practice_in_a_browser(browser, runs, dataset, tmp_path):
    process, url, handle = serve("prompt_practice.py", runs, tmp_path / "streamlit.log")
    try:
        browser.open(url)
        text = wait_for_page(
            browser, ["Prompt practice", "1. Prompt", "2. Generation settings", "context 64"]
        )
        assert_no_exception(browser, text)
        assert browser.count("audio") == 1
        assert browser.count(".vega-embed") >= 1
        clicked = browser.js(
            "const b = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Generate');"
            "if (!b || b.disabled) return false; b.click(); return true;"
        )
        assert clicked, "the Generate button is missing or disabled"
        text = wait_for_page(browser, ["3. Results", "seed 0", "seed 2", "notes generated"])
        assert_no_exception(browser, text)
        assert browser.count("audio") == 4  # the prompt and one per seed
        assert browser.count(".vega-embed canvas, .vega-embed svg") >= 4
        screenshot(browser, "prompt_practice.png", tmp_path)
    finally:
        stop(process, handle)


def test_dataset_review_in_a_browser(browser, runs, dataset, tmp_path):
    process, url, handle = serve("piano_dataset_review.py", runs, tmp_path / "streamlit.log")
    try:
        browser.open(url)
        expected = ["Piano dataset review", "Velocity histogram", "Detokenization check", "Round trip OK"]
        text = wait_for_page(browser, expected)
        assert_no_exception(browser, text)
        assert browser.count("audio") == 1
        assert browser.count(".vega-embed canvas, .vega-embed svg") >= 2
        tasks, _ = dl.available_tasks()
        if tasks:
            assert "PIANO task split" in text and "source notes" in text
        screenshot(browser, "piano_dataset_review.png", tmp_path)
    finally:
        stop(process, handle)
