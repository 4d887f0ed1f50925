"""Check that the built book works offline: no page loads anything from outside.

    python tools/offline.py _build/html

Fails (exit 1) when any HTML page has a <script src>, <link href>, <img src>, <iframe src>,
<source src> or <video|audio src> that points off the machine (http:, https: or //), when a
stylesheet pulls a remote url(...), when math would be typeset by a remote MathJax, when a `$`
is left in the prose (math that MyST did not parse, e.g. `$$` inside a paragraph), or when the
search page or its index is missing. Ordinary <a href> links to papers are allowed: a reader
clicks them; the page does not load them.
"""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
LOADING = {
    "script": "src",
    "link": "href",
    "img": "src",
    "iframe": "src",
    "source": "src",
    "video": "src",
    "audio": "src",
    "embed": "src",
}


class _Loads(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.remote: list[str] = []
        self.mathjax_local = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = LOADING.get(tag)
        if attr is None:
            return
        for key, value in attrs:
            if key == attr and value:
                if REMOTE.match(value):
                    self.remote.append(f"<{tag} {attr}={value!r}>")
                elif tag == "script" and "mathjax" in value.lower():
                    self.mathjax_local = True


class _StrayDollars(HTMLParser):
    """Text outside code, scripts and typeset math that still contains a `$`."""

    SKIP = {"script", "style", "pre", "code", "textarea"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[bool] = []  # per open element: are we inside something to skip?
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = dict(attrs).get("class") or ""
        inside = bool(self.stack and self.stack[-1])
        if tag not in {"br", "img", "hr", "input", "meta", "link"}:
            self.stack.append(inside or tag in self.SKIP or "math" in classes.split())

    def handle_endtag(self, tag: str) -> None:
        if self.stack and tag not in {"br", "img", "hr", "input", "meta", "link"}:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "$" in data and not (self.stack and self.stack[-1]):
            self.found.append(" ".join(data.split())[:80])


def problems(html_dir: Path) -> list[str]:
    out = []
    pages = sorted(html_dir.rglob("*.html"))
    if not pages:
        return [f"no HTML pages under {html_dir}"]
    math_pages = 0
    for page in pages:
        text = page.read_text(encoding="utf-8")
        parser = _Loads()
        parser.feed(text)
        out += [f"{page.relative_to(html_dir)}: loads {r}" for r in parser.remote]
        dollars = _StrayDollars()
        dollars.feed(text)
        out += [f"{page.relative_to(html_dir)}: untypeset math {d!r}" for d in dollars.found]
        if "\\(" in text or "\\[" in text or "math notranslate" in text:
            math_pages += 1
            if not parser.mathjax_local:
                out.append(f"{page.relative_to(html_dir)}: has math but no local MathJax script")
    for css in sorted(html_dir.rglob("*.css")):
        for m in re.finditer(
            r"url\(\s*['\"]?((https?:)?//[^)'\"]+)", css.read_text("utf-8", "replace")
        ):
            out.append(f"{css.relative_to(html_dir)}: remote url({m.group(1)})")
    for needed in ("search.html", "searchindex.js"):
        if not (html_dir / needed).exists():
            out.append(f"missing {needed}: the search page would not work")
    out += search_problems(html_dir, pages)
    if math_pages == 0:
        out.append("no page has math: is the math extension configured?")
    return out


def search_problems(html_dir: Path, pages: list[Path]) -> list[str]:
    """Every content page must be in the local search index, with its words."""
    index_file = html_dir / "searchindex.js"
    if not index_file.exists():
        return []
    text = index_file.read_text(encoding="utf-8")
    m = re.fullmatch(r"\s*Search\.setIndex\((.*)\)\s*;?\s*", text, re.DOTALL)
    if not m:
        return ["searchindex.js is not a Sphinx search index"]
    index = json.loads(m.group(1))
    indexed = set(index.get("docnames", []))
    out = []
    for page in pages:
        rel = page.relative_to(html_dir).with_suffix("").as_posix()
        if rel in {"genindex", "search", "index"} or rel.startswith("_"):
            continue
        if rel not in indexed:
            out.append(f"{rel}.html is not in the search index")
    if len(index.get("terms", {})) < 100:
        out.append("the search index holds almost no words")
    return out


def main() -> int:
    html_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html")
    found = problems(html_dir)
    for p in found:
        print(f"offline check: {p}", file=sys.stderr)
    if found:
        print(f"offline check FAILED ({len(found)} problems)", file=sys.stderr)
        return 1
    n = len(list(html_dir.rglob("*.html")))
    print(
        f"offline check: {n} pages load nothing from outside; MathJax is local; search indexes all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
