"""The book in real clients: the built HTML and a live JupyterLab, driven through Chromium.

Run by `make browser` (part of `make test`, after `make build`). Playwright drives Debian's
chromium (/usr/bin/chromium, or $CHROMIUM), never a downloaded browser; `make setup` installs it
with apt when it is missing and the user is root, and these tests skip, saying why, otherwise.
Screenshots are written to _build/screenshots/ as artefacts to look at.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tools import claims, execenv

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHAPTERS = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
LOCAL = {"127.0.0.1"}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"no chromium at {CHROMIUM}: `make setup` installs Debian's chromium with apt when "
            "run as root; otherwise install it yourself or set CHROMIUM=/path/to/chromium"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


class Watched:
    """A page whose console errors, uncaught exceptions and off-machine requests are recorded.

    Requests to anything but 127.0.0.1 (or data:/blob: URLs) are blocked and recorded: the book
    and JupyterLab must work offline and must not phone home."""

    def __init__(self, browser: Any, viewport: dict[str, int], block: bool = True) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.errors: list[str] = []
        self.remote: list[str] = []
        if block:
            self.context.route("**/*", self._route)
        else:  # JupyterLab does not start a kernel while requests are routed: record only
            self.context.on("request", self._record)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _route(self, route: Any, request: Any) -> None:
        url = request.url
        parsed = urlparse(url)
        if parsed.scheme in ("data", "blob") or parsed.hostname in LOCAL:
            route.continue_()
        else:
            self.remote.append(url)
            route.abort()

    def _record(self, request: Any) -> None:
        parsed = urlparse(request.url)
        if parsed.scheme not in ("data", "blob") and parsed.hostname not in LOCAL:
            self.remote.append(request.url)

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    w = Watched(browser, {"width": 1280, "height": 1000})
    yield w
    w.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per request otherwise
        pass


@pytest.fixture(scope="module")
def book_url() -> Iterator[str]:
    """The built book, served on 127.0.0.1 (as a reader would after `make book`)."""
    if not (HTML / "index.html").exists():
        pytest.fail("no built book in _build/html: run `make build` (or `make book`) first")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# ----------------------------------------------------------------------------- the static book
# JavaScript run in a page after it loaded: wait for MathJax, force lazy images to load.
_TYPESET = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  return document.querySelectorAll("mjx-container").length;
}"""
_RAW_MATH = r"""() => {
  const main = document.querySelector("main") || document.body;
  const copy = main.cloneNode(true);
  copy.querySelectorAll("pre, code, script, style, mjx-container, textarea")
      .forEach((e) => e.remove());
  const text = copy.textContent;
  return ["$$", "\\(", "\\)", "\\[", "\\]"].filter((d) => text.includes(d))
      .map((d) => d + " near: " + text.slice(Math.max(0, text.indexOf(d) - 40),
                                             text.indexOf(d) + 40).replace(/\s+/g, " "));
}"""
_IMAGES = """async () => {
  const imgs = [...document.querySelectorAll("main img")];
  imgs.forEach((i) => { i.loading = "eager"; });
  await Promise.all(imgs.map((i) => i.complete ? null
      : new Promise((ok) => { i.onload = ok; i.onerror = ok; })));
  return imgs.map((i) => [i.getAttribute("src").slice(0, 60), i.naturalWidth]);
}"""


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_page_loads_typesets_and_shows_its_images(
    name: str, book_url: str, watched: Watched
) -> None:
    page = watched.page
    page.goto(f"{book_url}/book/{name}.html", wait_until="load")
    typeset = page.evaluate(_TYPESET)
    images = page.evaluate(_IMAGES)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"book_{name}.jpg"), full_page=True, quality=70)

    assert watched.errors == [], f"{name}: errors in the browser console"
    assert watched.remote == [], f"{name}: the page requested something off this machine"
    assert typeset > 10, f"{name}: MathJax typeset {typeset} formulas"
    assert page.evaluate(_RAW_MATH) == [], f"{name}: math left as raw TeX delimiters"
    assert len(images) >= 3, f"{name}: only {len(images)} images (figures) on the page"
    broken = [src for src, width in images if width == 0]
    assert broken == [], f"{name}: images that did not load"
    dead = page.locator(".jupyter-widgets, script[type='application/vnd.jupyter.widget-view+json']")
    assert dead.count() == 0, f"{name}: a widget in the static book (it would be dead here)"


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_page_shows_measured_run_time_and_offers_the_notebook(
    name: str, book_url: str, watched: Watched
) -> None:
    page = watched.page
    page.goto(f"{book_url}/book/{name}.html")
    bench = json.loads((ROOT / "book" / "data" / "bench.json").read_text())
    line = page.locator("p.chapter-meta")
    assert line.count() == 1
    seconds = round(bench["chapters"][name]["seconds"])
    assert re.search(rf"Runs top to bottom in {seconds} s on a \d+-core CPU", line.inner_text())
    link = line.locator("a.download-notebook")
    assert link.get_attribute("download") is not None
    response = page.request.get(f"{book_url}/book/" + link.get_attribute("href"))
    assert response.status == 200
    notebook = json.loads(response.text())
    stored = json.loads((ROOT / "book" / f"{name}.ipynb").read_text())
    assert notebook["cells"] == stored["cells"], "the download is not the stored notebook"


@pytest.mark.parametrize("name", CHAPTERS)
def test_exercise_solutions_are_hidden_until_clicked(
    name: str, book_url: str, watched: Watched
) -> None:
    page = watched.page
    page.goto(f"{book_url}/book/{name}.html", wait_until="load")
    solutions = page.locator(".admonition.dropdown")
    assert solutions.count() >= 2, f"{name}: expected exercise solutions (dropdown admonitions)"
    first = solutions.first
    body = first.locator("p:not(.admonition-title)").first
    first.scroll_into_view_if_needed()
    assert not body.is_visible(), f"{name}: a solution is visible before it is clicked"
    first.locator(".admonition-title").click()
    body.wait_for(state="visible", timeout=5000)
    assert watched.errors == []


def test_search_finds_a_term_from_a_chapter(book_url: str, watched: Watched) -> None:
    page = watched.page
    page.goto(f"{book_url}/search.html?q=leapfrog")
    hits = page.locator("#search-results ul.search li a")
    hits.first.wait_for(timeout=20_000)
    hrefs = [hits.nth(i).get_attribute("href") or "" for i in range(hits.count())]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "book_search.png"))
    assert any("05_hamiltonian_dynamics" in h for h in hrefs), hrefs
    assert watched.errors == [] and watched.remote == []


def test_claims_page_lists_every_claim_of_the_executed_chapters(
    book_url: str, watched: Watched
) -> None:
    page = watched.page
    page.goto(f"{book_url}/book/claims.html", wait_until="load")
    page.evaluate(_TYPESET)
    expected = sum(claims.read_chapter(ROOT / "book" / f"{n}.ipynb").count for n in CHAPTERS)
    items = page.locator("main ol > li")
    assert items.count() == expected
    assert page.locator("main").inner_text().count("✓") == 0  # the marks are stripped
    links = page.locator("main h2 a.reference")
    assert links.count() == len(CHAPTERS)
    for i in range(links.count()):
        assert page.request.get(f"{book_url}/book/" + links.nth(i).get_attribute("href")).ok
    page.screenshot(path=str(SHOTS / "book_claims.png"))
    assert watched.errors == [] and watched.remote == []


# ----------------------------------------------------------------------------- JupyterLab
LAB_CHAPTER = "01_high_dimensional_geometry"
# Lab renders only the cells in view by default ("windowing"); a test that inspects every cell's
# output needs them all in the page. The news fetch would try to reach jupyter.org.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """JupyterLab as `make lab` starts it (127.0.0.1, a token), on a scratch copy of the book."""
    home = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "book", home / "book")
    shutil.copytree(ROOT / "chapters", home / "chapters")
    shutil.copy(ROOT / "jupytext.toml", home)
    for rel, value in LAB_SETTINGS.items():
        path = home / "settings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    env = execenv.lab_env()  # as `make lab`: the numeric pins, live controls and progress bars
    env["JUPYTER_RUNTIME_DIR"] = str(home / "runtime")
    token, port = secrets.token_hex(16), _free_port()
    cmd = [
        str(Path(sys.executable).parent / "jupyter"),
        "lab",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--no-browser",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.default_url=/lab/tree/book",
    ]
    if os.getuid() == 0:
        cmd.append("--allow-root")
    log = (home / "server.log").open("w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(home / 'server.log').read_text()}")
                time.sleep(0.5)
        yield url, token, home
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _prompts(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        ".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())"
    )


def _wait_for_idle_kernel(url: str, token: str, path: str, timeout: float = 60) -> None:
    """Until the notebook's session has a kernel that has started and is idle (the page's own
    indicator says "idle" before the kernel is connected, and a Run All then runs nothing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=5) as r:
            sessions = json.load(r)
        if any(s["path"] == path and s["kernel"]["execution_state"] == "idle" for s in sessions):
            time.sleep(1)  # let the page's kernel connection settle
            return
        time.sleep(0.5)
    pytest.fail(f"no idle kernel for {path} within {timeout} s")


def test_lab_opens_runs_and_saves_a_chapter(lab: tuple[str, str, Path], browser: Any) -> None:
    url, token, home = lab
    (SHOTS / f"lab_{LAB_CHAPTER}_FAILED.png").unlink(missing_ok=True)  # from an earlier run
    w = Watched(browser, {"width": 1400, "height": 1000}, block=False)
    page = w.page
    try:
        page.goto(f"{url}/lab/tree/book?token={token}")
        # Double-click the chapter in the file browser, as a reader would.
        item = page.locator(".jp-DirListing-item", has_text=f"{LAB_CHAPTER}.ipynb")
        item.dblclick(timeout=60_000)
        notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        notebook.locator(".jp-OutputArea-output img").first.wait_for(timeout=60_000)
        stored_images = notebook.locator(".jp-OutputArea-output img").count()
        _wait_for_idle_kernel(url, token, f"book/{LAB_CHAPTER}.ipynb")

        dirty = page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty")
        assert dirty.count() == 0, "opening the chapter marked it as modified"

        # jupyterlab-myst renders the chapter's MyST: an exercise's solution is collapsed (its
        # text not rendered visible) until the reader clicks it, as in the static book.
        solution = notebook.locator(".jp-MarkdownCell .myst", has_text="Solution").first
        solution.scroll_into_view_if_needed()
        collapsed = len(solution.inner_text())
        solution.get_by_text("Solution", exact=True).click()
        page.wait_for_function(
            "([el, n]) => el.innerText.length > n + 50",
            arg=[solution.element_handle(), collapsed],
            timeout=10_000,
        )
        rendered = notebook.locator(".jp-MarkdownCell .myst").all_inner_texts()
        assert not any(":class:" in text for text in rendered), "MyST left unrendered in Lab"

        # Run > Run All Cells, then wait until no cell is queued or running.
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
            ".some(e => e.textContent.includes('*'))",
            timeout=30_000,
        )
        page.wait_for_function(
            "() => ![...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
            ".some(e => e.textContent.includes('*'))",
            timeout=300_000,
            polling=1000,
        )
        prompts = _prompts(page)
        assert prompts == [f"[{i}]:" for i in range(1, len(prompts) + 1)], prompts
        stderr = notebook.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        ).all_inner_texts()
        failures = [t[:300] for t in stderr if "Traceback" in t or "ClaimFailed" in t]
        assert failures == [], "a cell raised"
        assert notebook.locator(".jp-OutputArea-output img").count() >= stored_images - 1

        # The live figure: a slider over d, whose figure is redrawn when it moves.
        slider = notebook.locator(".widget-slider").first
        slider.wait_for(timeout=30_000)
        slider.scroll_into_view_if_needed()
        assert notebook.locator(".widget-slider").count() == 1, "one slider, shown once"
        widget_img = ", ".join(
            f".jp-NotebookPanel:not(.lm-mod-hidden) {c} img"
            for c in (".widget-output", ".jupyter-widgets-output-area")
        )
        page.locator(widget_img).first.wait_for(timeout=30_000)
        before = page.locator(widget_img).first.get_attribute("src")
        readout = slider.locator(".widget-readout")
        assert readout.inner_text().strip() == "100"
        slider.locator(".noUi-handle").focus()
        page.keyboard.press("ArrowRight")  # the next value of d: 300
        page.wait_for_function(
            "([sel, old]) => { const i = document.querySelector(sel);"
            " return i !== null && i.getAttribute('src') !== old; }",
            arg=[widget_img, before],
            timeout=30_000,
        )
        assert readout.inner_text().strip() == "300"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"lab_{LAB_CHAPTER}_widget.png"))

        # Saving the notebook updates its paired source in chapters/ (jupytext).
        source = home / "chapters" / f"{LAB_CHAPTER}.py"
        mtime = source.stat().st_mtime
        notebook.locator(".jp-Notebook").first.click()
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 30
        while source.stat().st_mtime == mtime and time.monotonic() < deadline:
            time.sleep(0.5)
        assert source.stat().st_mtime > mtime, "saving did not update chapters/*.py"
        assert source.read_text() == (ROOT / "chapters" / f"{LAB_CHAPTER}.py").read_text()
        page.screenshot(path=str(SHOTS / f"lab_{LAB_CHAPTER}.png"))
        assert w.remote == [], "JupyterLab requested something off this machine"
        assert [e for e in w.errors if "favicon" not in e] == []
    except BaseException:  # pytest.fail raises a BaseException
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"lab_{LAB_CHAPTER}_FAILED.png"))
        raise
    finally:
        w.close()
