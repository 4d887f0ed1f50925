"""The offline check of the built book must flag anything a page would load from outside."""

import json
from pathlib import Path

import pytest

from tools.offline import problems

PAGE = """<html><head>
<link rel="stylesheet" href="_static/theme.css">
<script defer src="_static/mathjax/tex-chtml.js"></script>
{extra}
</head><body><p>Math \\(x^2\\), <a href="https://arxiv.org/abs/1607.06450">a paper</a>.</p>
</body></html>"""


def _site(tmp_path: Path, extra: str = "", css: str = "") -> Path:
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "theme.css").write_text(css)
    (tmp_path / "chapter.html").write_text(PAGE.format(extra=extra))
    (tmp_path / "search.html").write_text("<html></html>")
    index = {"docnames": ["chapter", "search"], "terms": {f"w{i}": 0 for i in range(200)}}
    (tmp_path / "searchindex.js").write_text(f"Search.setIndex({json.dumps(index)})")
    return tmp_path


def test_a_local_site_passes(tmp_path):
    assert problems(_site(tmp_path)) == []


@pytest.mark.parametrize(
    "extra",
    [
        '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>',
        '<link rel="stylesheet" href="//fonts.googleapis.com/css?family=Lato">',
        '<img src="http://example.org/logo.png">',
        '<iframe src="https://www.youtube.com/embed/x"></iframe>',
    ],
)
def test_remote_loads_are_flagged(tmp_path, extra):
    found = problems(_site(tmp_path, extra=extra))
    assert len(found) == 1 and "chapter.html: loads" in found[0]


def test_remote_fonts_in_css_are_flagged(tmp_path):
    found = problems(_site(tmp_path, css="@font-face { src: url('https://x.org/f.woff2'); }"))
    assert found == ["_static/theme.css: remote url(https://x.org/f.woff2)"]


def test_math_without_local_mathjax_is_flagged(tmp_path):
    site = _site(tmp_path)
    page = site / "chapter.html"
    page.write_text(page.read_text().replace("_static/mathjax/tex-chtml.js", "_static/other.js"))
    assert problems(site) == ["chapter.html: has math but no local MathJax script"]


def test_missing_or_incomplete_search_is_flagged(tmp_path):
    site = _site(tmp_path)
    (site / "other.html").write_text("<html></html>")
    assert problems(site) == ["other.html is not in the search index"]
    (site / "searchindex.js").unlink()
    assert problems(site) == ["missing searchindex.js: the search page would not work"]


def test_untypeset_math_is_flagged_but_code_and_math_are_not(tmp_path):
    site = _site(tmp_path)
    page = site / "chapter.html"
    fine = (
        '<pre>echo "$HOME"</pre><p><code>a $ b</code> and '
        '<span class="math notranslate nohighlight">\\(\\$5\\)</span></p>'
    )
    page.write_text(page.read_text().replace("</body>", fine + "</body>"))
    assert problems(site) == []
    broken = '<p>values: $<span class="math">\\(V\\)</span>, with M_{ij} where j &gt; i$).</p>'
    page.write_text(page.read_text().replace("</body>", broken + "</body>"))
    found = problems(site)
    assert len(found) == 2 and all("untypeset math" in f for f in found)
