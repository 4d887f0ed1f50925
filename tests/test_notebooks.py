"""The sync gate: it must pass on the repository, fail on every kind of drift, and never write."""

from pathlib import Path

import jupytext
import nbformat
import pytest

from tools import notebooks
from tools.notebooks import ROOT

SOURCE = """\
# %% [markdown]
# # A title

# %%
x = 1
print(x)

# %% tags=["hide-cell"]
print(x + 1)
"""


def _executed(nb):
    """Pretend the notebook ran top to bottom: counts 1..n, an output per cell."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{count}\n")]
    return nb


def _make_root(tmp_path: Path, source: str = SOURCE) -> Path:
    (tmp_path / "chapters").mkdir()
    (tmp_path / "book").mkdir()
    (tmp_path / "chapters" / "01_x.py").write_text(source)
    nb = _executed(jupytext.read(tmp_path / "chapters" / "01_x.py"))
    nbformat.write(nb, tmp_path / "book" / "01_x.ipynb")
    return tmp_path


def _stored(root):
    return nbformat.read(root / "book" / "01_x.ipynb", as_version=4)


def _write(root, nb):
    nbformat.write(nb, root / "book" / "01_x.ipynb")


def test_gate_passes_on_a_synced_pair(tmp_path):
    root = _make_root(tmp_path)
    assert notebooks.gate(root) == []
    assert notebooks.stale(root) == []


def test_gate_fails_when_an_input_changes(tmp_path):
    root = _make_root(tmp_path)
    (root / "chapters" / "01_x.py").write_text(SOURCE.replace("x = 1", "x = 2"))
    problems = notebooks.gate(root)
    assert problems == ["01_x: cell 1: input differs (first at line 1 of the cell)"]
    assert notebooks.stale(root) == ["01_x"]


def test_gate_fails_when_markdown_changes(tmp_path):
    root = _make_root(tmp_path)
    (root / "chapters" / "01_x.py").write_text(SOURCE.replace("A title", "Another title"))
    assert notebooks.gate(root) == ["01_x: cell 0: input differs (first at line 1 of the cell)"]


def test_gate_fails_when_a_tag_changes(tmp_path):
    root = _make_root(tmp_path)
    (root / "chapters" / "01_x.py").write_text(SOURCE.replace('tags=["hide-cell"]', ""))
    assert notebooks.gate(root) == ["01_x: cell 2: tags [] in the source, ['hide-cell'] stored"]


def test_gate_fails_when_a_cell_is_added(tmp_path):
    root = _make_root(tmp_path)
    (root / "chapters" / "01_x.py").write_text(SOURCE + "\n# %%\nprint(3)\n")
    assert notebooks.gate(root)[0] == "01_x: 4 cells in the source, 3 in the stored notebook"


def test_gate_fails_when_a_cell_type_changes(tmp_path):
    root = _make_root(tmp_path)
    nb = _stored(root)
    nb.cells[0] = nbformat.v4.new_raw_cell(nb.cells[0].source)
    _write(root, nb)
    assert notebooks.gate(root) == ["01_x: cell 0: type markdown in the source, raw stored"]


def test_gate_fails_on_unexecuted_cells(tmp_path):
    root = _make_root(tmp_path)
    nb = _stored(root)
    nb.cells[2].execution_count = None
    _write(root, nb)
    assert notebooks.gate(root) == [
        "01_x: cell 2: not executed (execution_count is null, nbval would skip it)"
    ]


def test_gate_fails_on_cells_run_out_of_order(tmp_path):
    root = _make_root(tmp_path)
    nb = _stored(root)
    nb.cells[1].execution_count, nb.cells[2].execution_count = 2, 1
    _write(root, nb)
    problems = notebooks.gate(root)
    assert problems[0] == "01_x: cell 1: execution_count 2, expected 1 (out of order)"


def test_gate_fails_on_a_rerun_cell(tmp_path):
    root = _make_root(tmp_path)
    nb = _stored(root)
    nb.cells[2].execution_count = 5  # someone re-ran a cell by hand
    _write(root, nb)
    assert notebooks.gate(root) == ["01_x: cell 2: execution_count 5, expected 2 (out of order)"]


def test_gate_fails_on_a_stored_error(tmp_path):
    root = _make_root(tmp_path)
    nb = _stored(root)
    nb.cells[1].outputs = [
        nbformat.v4.new_output("error", ename="ValueError", evalue="", traceback=[])
    ]
    _write(root, nb)
    assert notebooks.gate(root) == ["01_x: cell 1: stored output is an error: ValueError"]
    nb.cells[1].metadata["tags"] = ["raises-exception"]
    (root / "chapters" / "01_x.py").write_text(
        SOURCE.replace("# %%\nx = 1", '# %% tags=["raises-exception"]\nx = 1')
    )
    _write(root, nb)
    assert notebooks.gate(root) == []


def test_gate_fails_on_an_empty_code_cell(tmp_path):
    root = _make_root(tmp_path, SOURCE + "\n# %%\n\n")
    src = jupytext.read(root / "chapters" / "01_x.py")
    if not any(c.cell_type == "code" and not c.source.strip() for c in src.cells):
        pytest.skip("jupytext dropped the empty cell")
    assert any("empty code cell" in p for p in notebooks.gate(root))


def test_gate_fails_on_unpaired_files(tmp_path):
    root = _make_root(tmp_path)
    (root / "chapters" / "02_y.py").write_text(SOURCE)
    (root / "book" / "03_z.ipynb").write_text((root / "book" / "01_x.ipynb").read_text())
    assert notebooks.gate(root) == [
        "book/03_z.ipynb has no source chapters/03_z.py",
        "chapters/02_y.py has no stored notebook book/02_y.ipynb",
    ]
    assert notebooks.stale(root) == ["02_y"]


def test_gate_never_writes(tmp_path):
    root = _make_root(tmp_path)
    (root / "chapters" / "01_x.py").write_text(SOURCE.replace("x = 1", "x = 2"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    assert notebooks.gate(root)
    assert notebooks.stale(root) == ["01_x"]
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    assert before == after


@pytest.mark.slow
def test_bench_runs_chapters_where_they_find_their_data(tmp_path):
    """bench executes in a scratch folder; a chapter reading book/data/ must still find it."""
    root = _make_root(tmp_path, SOURCE.replace("x = 1", "x = len(open('data/n.txt').read())"))
    (root / "book" / "data").mkdir()
    (root / "book" / "data" / "n.txt").write_text("abc")
    times = notebooks.bench(root)
    assert set(times) == {"01_x"} and times["01_x"] > 0
    assert not (root / "book" / "01_x.ipynb").read_text().count('"3\\n"')  # nothing overwritten


def test_bench_report_merges_re_timed_chapters_on_the_same_machine(tmp_path, monkeypatch):
    (tmp_path / "chapters").mkdir()
    for name in ("01_a", "02_b"):
        (tmp_path / "chapters" / f"{name}.py").write_text(f"# {name}\n")
    here = {"cpu": "X", "cores": 2, "python": "3.11", "torch": "2"}
    monkeypatch.setattr(notebooks, "machine", lambda: here)
    first = notebooks.bench_report(tmp_path, {"01_a": 30.04, "02_b": 50.0})
    assert first["chapters"]["01_a"]["seconds"] == 30.0
    again = notebooks.bench_report(tmp_path, {"02_b": 44.44}, first)
    assert again["chapters"]["01_a"] == first["chapters"]["01_a"]  # kept
    assert again["chapters"]["02_b"]["seconds"] == 44.4  # replaced
    other = notebooks.bench_report(tmp_path, {"02_b": 40.0}, {**first, "machine": {"cpu": "Y"}})
    assert list(other["chapters"]) == ["02_b"]  # another machine's times are not mixed in


def test_bench_refuses_an_unknown_chapter():
    with pytest.raises(SystemExit, match="no such chapter"):
        notebooks.bench(ROOT, ["99_nothing"])


def test_gate_fails_on_a_stored_widget(tmp_path):
    root = _make_root(tmp_path)
    nb = _stored(root)
    view = {"model_id": "abc", "version_major": 2, "version_minor": 0}
    nb.cells[1].outputs = [
        nbformat.v4.new_output(
            "display_data", data={notebooks.WIDGET: view, "text/plain": "VBox(...)"}
        )
    ]
    _write(root, nb)
    (problem,) = notebooks.gate(root)
    assert problem.startswith("01_x: cell 1: stored output is a live widget")


def test_gate_fails_when_too_few_outputs_are_compared(tmp_path):
    """Making nbval pass by ignoring outputs is caught: under 90% of code cells compared fails."""
    root = _make_root(tmp_path)
    assert notebooks.compared(root)["01_x"] == {
        "code": 2,
        "printing": 2,
        "compared": 2,
        "with output": 2,
        "characters": 4,
        "masked": 0,
    }
    for path, fmt in ((root / "chapters" / "01_x.py", "py:percent"),):
        src = jupytext.read(path)
        src.cells[2].metadata["tags"] = ["hide-cell", "nbval-ignore-output"]
        jupytext.write(src, path, fmt=fmt)
    nb = _stored(root)
    nb.cells[2].metadata["tags"] = ["hide-cell", "nbval-ignore-output"]
    _write(root, nb)
    problems = notebooks.gate(root)
    assert len(problems) == 2, problems
    assert "output of 1 of 2 code cells (50%)" in problems[0]
    assert "output of 1 of 2 cells that print (50%)" in problems[1]


def test_gate_fails_when_too_many_outputs_are_only_masked_numbers(tmp_path):
    """Masking every number of a cell (hamlib.approx) hides it as surely as ignoring it."""
    root = _make_root(tmp_path)
    nb = _stored(root)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="≈2.5\n")]
    _write(root, nb)
    assert notebooks.compared(root)["01_x"]["masked"] == 2
    problems = notebooks.gate(root)
    assert len(problems) == 1 and "output of 0 of 2 cells that print (0%)" in problems[0], problems


def _round_trip(text: str) -> str:
    """What saving the paired notebook in JupyterLab writes back to chapters/*.py."""
    return jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt="py:percent")


@pytest.mark.parametrize("source", sorted((ROOT / "chapters").glob("*.py")), ids=lambda p: p.stem)
def test_every_chapter_survives_a_save_in_lab(source):
    """A source that jupytext would rewrite (text on a cell marker's line becomes a cell title and
    leaves the cell) is caught here, not only by the browser test."""
    text = source.read_text()
    assert _round_trip(text) == text


def test_text_on_a_cell_marker_line_is_caught():
    broken = SOURCE.replace("# %% [markdown]\n# # A title", "# %% [markdown] A title")
    assert _round_trip(broken) != broken
    assert _round_trip(SOURCE) == SOURCE
