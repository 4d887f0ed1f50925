"""Sphinx extension for the chapter pages (loaded by _config.yml: ``sphinx.local_extensions``).

Under every chapter's title it adds one line: how long the chapter takes to run top to bottom,
as measured by ``make bench`` (book/data/bench.json, with the machine and date it was measured
on; never typed by hand), and a link to download the notebook. A chapter with no measured time
fails the build: run ``make bench``. A time measured on an older version of the chapter source
is shown as such. It also removes <script>s that Sphinx would put on a page twice.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

CHAPTER_PAGE = re.compile(r"^book/(\d\d_\w+)$")
BENCH = Path("book") / "data" / "bench.json"


def _bench(srcdir: Path) -> dict[str, Any]:
    path = srcdir / BENCH
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def chapter_line(srcdir: Path, name: str, notebook_href: str) -> str:
    """The HTML line shown under a chapter's title."""
    bench = _bench(srcdir)
    entry = bench.get("chapters", {}).get(name)
    if entry is None:
        raise ExtensionError(
            f"{name}: no measured run time in {BENCH}; run `make bench` and commit the file"
        )
    where = bench["machine"]
    source = srcdir / "chapters" / f"{name}.py"
    current = hashlib.sha256(source.read_bytes()).hexdigest() == entry["source_sha256"]
    when = f"measured by <code>make bench</code> on {html.escape(str(entry['date']))}"
    if not current:
        when += ", on an earlier version of this chapter"
    return (
        '<p class="chapter-meta">'
        f'<span class="run-time">Runs top to bottom in {entry["seconds"]:.0f} s on a '
        f"{where['cores']}-core CPU</span>, a fresh kernel's start included "
        f'<span class="provenance">({html.escape(str(where["cpu"]))}; {when})</span>'
        f' · <a class="download-notebook" href="{html.escape(notebook_href)}" download>'
        f"Download the notebook ({name}.ipynb)</a></p>"
    )


def _add_line(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    match = CHAPTER_PAGE.match(pagename)
    if not match or "body" not in context:
        return
    name = match.group(1)
    href = context["pathto"](f"_sources/book/{name}.ipynb", 1)
    body = context["body"]
    end = body.find("</h1>")
    if end < 0:
        raise ExtensionError(f"{pagename}: no <h1> title to put the run time under")
    end += len("</h1>")
    context["body"] = body[:end] + chapter_line(Path(app.srcdir), name, href) + body[end:]


def _one_of_each_script(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """Drop repeated <script>s. With Sphinx 7.4, sphinx-thebe's and sphinx-togglebutton's inline
    scripts reach every page twice, and the second ``const THEBE_JS_URL`` is a SyntaxError in
    the browser console (found by tests/test_browser.py)."""
    seen, kept = set(), []
    for script in context.get("script_files", []):
        name = getattr(script, "filename", script) or ""  # inline scripts: None or "" (both)
        key = (str(name), repr(getattr(script, "attributes", "")))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("html-page-context", _one_of_each_script, priority=900)  # after the themes
    app.connect("html-page-context", _add_line)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
