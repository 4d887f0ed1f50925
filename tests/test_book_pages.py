"""The generated parts of the book: the claims page (tools/claims.py) and the line under each
chapter title (tools/book_ext.py)."""

import hashlib
import json

import nbformat
import pytest
from sphinx.errors import ExtensionError

from tools import book_ext, claims


def _notebook(path, outputs_per_cell, title="# 9. A chapter"):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(title))
    for heading, text in outputs_per_cell:
        if heading:
            nb.cells.append(nbformat.v4.new_markdown_cell(f"## {heading}"))
        cell = nbformat.v4.new_code_cell("pass")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells.append(cell)
    nbformat.write(nb, path)
    return path


def test_claims_are_grouped_by_section_and_exercise_checks_counted_apart(tmp_path):
    path = _notebook(
        tmp_path / "09_x.ipynb",
        [
            ("9.1 First", "table\n✓ a < b holds\n"),
            ("", "✓ |x| * 2 is small\n"),
            ("Summary", "This chapter verified 2 claims:\n  1. a < b holds\n"),
            ("Exercises", "✓ exercise 1: it works\n"),
        ],
    )
    chapter = claims.read_chapter(path)
    assert chapter.title == "9. A chapter"
    assert chapter.sections == [
        ("9.1 First", ["a < b holds", "|x| * 2 is small"]),
        ("Exercises", ["exercise 1: it works"]),
    ]
    assert (chapter.count, chapter.in_text) == (3, 2)
    assert claims._md("|x| * 2 < $3") == r"\|x\| \* 2 \< \$3"


def test_a_quantitative_claim_is_listed_with_its_margin(tmp_path):
    (tmp_path / "book").mkdir()
    _notebook(
        tmp_path / "book" / "09_x.ipynb",
        [
            ("9.1 First", "✓ stable: measured 0.6, held to < 667\n✓ a logical claim\n"),
            ("Summary", "This chapter verified 2 claims:\n"),
        ],
    )
    page = claims.render(tmp_path)
    assert "1 of them are quantitative" in page
    assert "1. stable — *measured 0.6, held to \\< 667*" in page
    assert "2. a logical claim\n" in page


def test_claims_refuse_a_summary_that_disagrees_with_the_outputs(tmp_path):
    path = _notebook(
        tmp_path / "09_x.ipynb", [("A", "✓ one\n"), ("B", "This chapter verified 2 claims:\n")]
    )
    with pytest.raises(ValueError, match="says 2 claims.*show 1"):
        claims.read_chapter(path)
    _notebook(path, [("A", "✓ one\n")])
    with pytest.raises(ValueError, match="no hamlib.summary"):
        claims.read_chapter(path)


def _srcdir(tmp_path, digest=None):
    (tmp_path / "chapters").mkdir()
    (tmp_path / "book" / "data").mkdir(parents=True)
    source = tmp_path / "chapters" / "09_x.py"
    source.write_text("print(1)\n")
    bench = {
        "machine": {"cpu": "Some CPU", "cores": 2},
        "chapters": {
            "09_x": {
                "seconds": 41.6,
                "date": "2026-11-26",
                "source_sha256": digest or hashlib.sha256(source.read_bytes()).hexdigest(),
            }
        },
    }
    (tmp_path / "book" / "data" / "bench.json").write_text(json.dumps(bench))
    return tmp_path


def test_chapter_line_quotes_the_measured_time_and_links_the_notebook(tmp_path):
    line = book_ext.chapter_line(_srcdir(tmp_path), "09_x", "../_sources/book/09_x.ipynb")
    assert "Runs top to bottom in 42 s on a 2-core CPU" in line
    assert "Some CPU; measured by <code>make bench</code> on 2026-11-26)" in line
    assert 'href="../_sources/book/09_x.ipynb" download' in line
    assert "earlier version" not in line


def test_chapter_line_says_when_the_time_is_for_an_older_source(tmp_path):
    line = book_ext.chapter_line(_srcdir(tmp_path, digest="0" * 64), "09_x", "x.ipynb")
    assert "on an earlier version of this chapter" in line


def test_chapter_without_a_measured_time_fails_the_build(tmp_path):
    with pytest.raises(ExtensionError, match="10_y: no measured run time.*make bench"):
        book_ext.chapter_line(_srcdir(tmp_path), "10_y", "x.ipynb")


class _App:
    def __init__(self, srcdir):
        self.srcdir = str(srcdir)


def _context(body):
    return {"body": body, "pathto": lambda target, _: "../" + target, "script_files": []}


def test_the_line_goes_under_the_title_and_a_page_without_one_fails(tmp_path):
    app = _App(_srcdir(tmp_path))
    context = _context("<section><h1>9. X</h1><p>text</p></section>")
    book_ext._add_line(app, "book/09_x", "page.html", context, None)
    title, rest = context["body"].split("</h1>", 1)
    assert rest.startswith('<p class="chapter-meta">') and rest.endswith("<p>text</p></section>")
    with pytest.raises(ExtensionError, match="book/09_x: no <h1> title"):
        book_ext._add_line(app, "book/09_x", "page.html", _context("<p>no title</p>"), None)
    untouched = _context("<p>the index</p>")
    book_ext._add_line(app, "index", "page.html", untouched, None)
    assert untouched["body"] == "<p>the index</p>"


def test_repeated_scripts_are_dropped_and_the_first_kept():
    class Script:
        def __init__(self, filename, attributes=""):
            self.filename, self.attributes = filename, attributes

    a, inline1, inline2 = Script("a.js"), Script(None, "x"), Script("", "x")
    context = {"script_files": [a, Script("a.js"), inline1, inline2, Script(None, "y")]}
    book_ext._one_of_each_script(None, "p", "t", context, None)
    kept = context["script_files"]
    assert kept[0] is a and kept[1] is inline1 and len(kept) == 3
