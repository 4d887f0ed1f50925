"""Chapters as notebooks: the read-only sync gate, staleness, execution and timing.

A chapter's source is ``chapters/NN_slug.py`` (jupytext percent format, inputs only); its stored,
executed notebook is ``book/NN_slug.ipynb``. The Makefile runs it from the repository root:

    python -m tools.notebooks gate              # fail if any source and stored notebook disagree
    python -m tools.notebooks stale             # list chapters whose stored notebook is stale
    python -m tools.notebooks refresh [NAMES]   # re-execute (all, or the named) and store outputs
    python -m tools.notebooks refresh --stale   # re-execute only the stale ones
    python -m tools.notebooks bench             # execute every chapter in a scratch copy, time it

``gate`` never writes a file. It does not trust timestamps (a fresh clone has arbitrary ones);
it compares cell types, inputs and tags, and requires every code cell of a stored notebook to
have run exactly once, in order, in one kernel, without an unexpected error or a live widget.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jupytext
import nbformat

from tools import execenv

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = "chapters"
BOOK = "book"

WIDGET = "application/vnd.jupyter.widget-view+json"  # an ipywidget: no stored notebook holds one


# ----------------------------------------------------------------------------- reading
def source_path(root: Path, name: str) -> Path:
    return root / CHAPTERS / f"{name}.py"


def stored_path(root: Path, name: str) -> Path:
    return root / BOOK / f"{name}.ipynb"


def chapter_names(root: Path) -> tuple[list[str], list[str]]:
    """Names (stems) of chapter sources and of stored notebooks."""
    sources = sorted(p.stem for p in (root / CHAPTERS).glob("*.py"))
    stored = sorted(p.stem for p in (root / BOOK).glob("*.ipynb"))
    return sources, stored


def _signature(cell: dict) -> tuple[str, str, tuple[str, ...]]:
    tags = tuple(cell.get("metadata", {}).get("tags", []))
    return cell["cell_type"], cell["source"].rstrip("\n"), tags


def read_source(path: Path) -> nbformat.NotebookNode:
    return jupytext.read(path)


def read_stored(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


# ----------------------------------------------------------------------------- the gate
def input_differences(src: nbformat.NotebookNode, stored: nbformat.NotebookNode) -> list[str]:
    """How the cells of a source and a stored notebook differ (type, input, tags); [] if equal."""
    a = [_signature(c) for c in src.cells]
    b = [_signature(c) for c in stored.cells]
    problems = []
    if len(a) != len(b):
        problems.append(f"{len(a)} cells in the source, {len(b)} in the stored notebook")
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x[0] != y[0]:
            problems.append(f"cell {i}: type {x[0]} in the source, {y[0]} stored")
        elif x[1] != y[1]:
            first = next(
                (
                    ln
                    for ln, (p, q) in enumerate(
                        zip(x[1].splitlines(), y[1].splitlines(), strict=False)
                    )
                    if p != q
                ),
                min(len(x[1].splitlines()), len(y[1].splitlines())),
            )
            problems.append(f"cell {i}: input differs (first at line {first + 1} of the cell)")
        elif x[2] != y[2]:
            problems.append(f"cell {i}: tags {list(x[2])} in the source, {list(y[2])} stored")
        if len(problems) >= 5:
            problems.append("...")
            break
    return problems


def execution_problems(stored: nbformat.NotebookNode) -> list[str]:
    """How a stored notebook's execution is wrong; [] if it ran top to bottom in one kernel."""
    problems = []
    expected = 1
    for i, cell in enumerate(stored.cells):
        if cell["cell_type"] != "code":
            continue
        if not cell["source"].strip():
            problems.append(f"cell {i}: empty code cell (executors skip it; delete it)")
            continue
        count = cell.get("execution_count")
        if count is None:
            problems.append(
                f"cell {i}: not executed (execution_count is null, nbval would skip it)"
            )
        elif count != expected:
            problems.append(
                f"cell {i}: execution_count {count}, expected {expected} (out of order)"
            )
        expected = (count or expected) + 1
        tags = cell.get("metadata", {}).get("tags", [])
        if "raises-exception" not in tags:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    problems.append(f"cell {i}: stored output is an error: {out.get('ename')}")
        for out in cell.get("outputs", []):
            if WIDGET in out.get("data", {}):
                problems.append(
                    f"cell {i}: stored output is a live widget (dead in the book; saved from "
                    "Lab?): re-execute with `make refresh`, which stores static figures"
                )
        if len(problems) >= 5:
            problems.append("...")
            break
    return problems


def gate(root: Path = ROOT) -> list[str]:
    """Every reason the stored notebooks under root disagree with their sources (read-only)."""
    sources, stored = chapter_names(root)
    problems = []
    for name in sorted(set(stored) - set(sources)):
        problems.append(f"{BOOK}/{name}.ipynb has no source {CHAPTERS}/{name}.py")
    for name in sorted(set(sources) - set(stored)):
        problems.append(f"{CHAPTERS}/{name}.py has no stored notebook {BOOK}/{name}.ipynb")
    for name in sorted(set(sources) & set(stored)):
        src = read_source(source_path(root, name))
        nb = read_stored(stored_path(root, name))
        for p in input_differences(src, nb) + execution_problems(nb):
            problems.append(f"{name}: {p}")
    return problems + coverage_problems(root)


# Output types nbval does not compare (nbval 0.11's skip list); a cell tagged IGNORE runs
# uncompared.
UNCOMPARED_MIME = ("image/png", "image/jpeg", WIDGET)
IGNORE = "nbval-ignore-output"
MASK = "≈NUMBER"  # what tests/nbval_sanitize.cfg makes of a number printed with hamlib.approx
MIN_COMPARED = 0.9  # of the book's code cells, at least this share must have compared outputs
SANITIZER = Path("tests") / "nbval_sanitize.cfg"


@functools.cache
def _sanitizer() -> list[tuple[str, str]]:
    from nbval.plugin import get_sanitize_patterns  # nbval's own parser of the file

    return get_sanitize_patterns((ROOT / SANITIZER).read_text())


def sanitized(text: str) -> str:
    """``text`` as nbval compares it: the sanitizer's replacements applied, parsed as nbval does."""
    for regex, replace in _sanitizer():
        text = re.sub(regex, replace, text)
    return text


def compared(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """What nbval compares in each stored notebook: code cells, cells that print text at all,
    cells compared (not tagged IGNORE), compared cells that print text nbval compares (after the
    sanitizer, less the numbers it masks), those characters, and the numbers masked (printed
    with hamlib.approx)."""
    out = {}
    for name in chapter_names(root)[1]:
        nb = read_stored(stored_path(root, name))
        row = {"code": 0, "printing": 0, "compared": 0, "with output": 0}
        row |= {"characters": 0, "masked": 0}
        for cell in nb.cells:
            if cell["cell_type"] != "code":
                continue
            row["code"] += 1
            texts = [o.get("text", "") for o in cell.get("outputs", [])]
            texts += [
                v if isinstance(v, str) else json.dumps(v)
                for o in cell.get("outputs", [])
                for m, v in o.get("data", {}).items()
                if m not in UNCOMPARED_MIME
            ]
            row["printing"] += any(texts)
            if IGNORE in cell.get("metadata", {}).get("tags", []):
                continue
            row["compared"] += 1
            shown = [sanitized(t) for t in texts]
            masked = sum(t.count(MASK) for t in shown)
            chars = sum(len(t) for t in shown) - masked * len(MASK)
            row["with output"] += any(t.replace(MASK, "").strip() for t in shown)
            row["characters"] += chars
            row["masked"] += masked
        out[name] = row
    return out


def coverage_problems(root: Path = ROOT) -> list[str]:
    """[] if nbval compares at least MIN_COMPARED of the book's code cells, and of the cells that
    print, at least MIN_COMPARED print something it compares (not only masked numbers)."""
    rows = compared(root).values()
    total = {k: sum(r[k] for r in rows) for k in ("code", "compared", "printing", "with output")}
    problems = []
    for kept, of, what in [
        ("compared", "code", "code cells"),
        ("with output", "printing", "cells that print"),
    ]:
        if total[of] and total[kept] < MIN_COMPARED * total[of]:
            problems.append(
                f"nbval compares the output of {total[kept]} of {total[of]} {what} "
                f"({total[kept] / total[of]:.0%}), under {MIN_COMPARED:.0%}: check a varying "
                "result with a tolerance instead of ignoring or masking it"
            )
    return problems


def stale(root: Path = ROOT) -> list[str]:
    """Chapters whose stored notebook is missing, differs from the source, or is not executed."""
    sources, stored = chapter_names(root)
    out = []
    for name in sources:
        if name not in stored:
            out.append(name)
            continue
        nb = read_stored(stored_path(root, name))
        src = read_source(source_path(root, name))
        if input_differences(src, nb) or execution_problems(nb):
            out.append(name)
    return out


# ----------------------------------------------------------------------------- execution
def execute(
    src_file: Path, workdir: Path, timeout: int = 600
) -> tuple[nbformat.NotebookNode, float]:
    """Execute a chapter source top to bottom in a fresh kernel, in the folder ``workdir``."""
    from nbclient import NotebookClient

    nb = read_source(src_file)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",  # what Lab writes: opening is not an edit
        "language": "python",
    }
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs of book/*.ipynb readable
        cell["id"] = f"cell-{i:03d}"
    nb.metadata["executed_on"] = executed_on()  # the processor the stored outputs come from
    execenv.apply()  # the one definition of the executors' environment
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        record_timing=False,
    )
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def refresh(root: Path, names: list[str]) -> None:
    from tools.portability import forced_in

    forced = forced_in(os.environ)
    if forced:  # the stored outputs would come from an emulated processor, not this one
        raise SystemExit(
            f"refusing to store outputs with {', '.join(forced)} set in the environment "
            "(a setting of make portability): unset it and run make refresh again"
        )
    for name in names:
        src = source_path(root, name)
        if not src.exists():
            raise SystemExit(f"no such chapter: {src}")
        print(f"executing {name} ...", flush=True)
        nb, seconds = execute(src, root / BOOK)
        jupytext.write(nb, stored_path(root, name), fmt="ipynb")
        print(f"  wrote {BOOK}/{name}.ipynb ({seconds:.1f} s)")


def bench(root: Path, names: list[str] | None = None) -> dict[str, float]:
    """Execute chapters (default: all) in a scratch copy of book/ (nothing is overwritten) and
    time each, kernel start included."""
    sources = names or chapter_names(root)[0]
    for name in sources:
        if not source_path(root, name).exists():
            raise SystemExit(f"no such chapter: {source_path(root, name)}")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = root / "book" / "data"  # what chapters read, relative to book/
        if data.is_dir():
            shutil.copytree(data, Path(tmp) / "data")
        for name in sources:
            _, seconds = execute(source_path(root, name), Path(tmp))
            times[name] = seconds
            print(f"{name:40s} {seconds:7.1f} s", flush=True)
    return times


def source_digest(root: Path, name: str) -> str:
    """SHA-256 of a chapter's source: tells whether a recorded time is for the current version."""
    return hashlib.sha256(source_path(root, name).read_bytes()).hexdigest()


def machine() -> dict[str, str | int]:
    """What timings were taken on: the book shows it beside every chapter's run time."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def executed_on() -> dict[str, str | int]:
    """The machine, and the kernels torch dispatches to on it: what a stored notebook records
    (the same processor model can run AVX2 or AVX-512 kernels)."""
    import torch

    return machine() | {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def bench_report(
    root: Path, times: dict[str, float], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The bench file: per chapter its time, date, commit and source digest. Times for some
    chapters are merged into ``previous`` if it was measured on the same machine; else replaced."""
    here = machine()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    chapters = {}
    if previous and previous.get("machine") == here:
        chapters = dict(previous.get("chapters", {}))
    for name, seconds in times.items():
        chapters[name] = {
            "seconds": round(seconds, 1),
            "date": time.strftime("%Y-%m-%d"),
            "commit": commit or "unknown",
            "source_sha256": source_digest(root, name),
        }
    return {"machine": here, "chapters": dict(sorted(chapters.items()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("gate", help="read-only: fail if sources and stored notebooks disagree")
    sub.add_parser("stale", help="list chapters whose stored notebook is stale")
    sub.add_parser("compared", help="what nbval compares: cells and characters per chapter")
    p_ref = sub.add_parser("refresh", help="re-execute chapters and store their outputs")
    p_ref.add_argument("names", nargs="*", help="chapter names (default: all)")
    p_ref.add_argument("--stale", action="store_true", help="only the stale chapters")
    p_bench = sub.add_parser("bench", help="time every chapter")
    p_bench.add_argument("names", nargs="*", help="chapter names (default: all, and benchmarks)")
    p_bench.add_argument("--json", type=Path, help="also write (or update) the times in this file")
    args = parser.parse_args(argv)

    if args.cmd == "gate":
        problems = gate(ROOT)
        for p in problems:
            print(f"sync gate: {p}", file=sys.stderr)
        if problems:
            print(
                "sync gate FAILED: run `make refresh` (or CHAPTER=...) and commit book/",
                file=sys.stderr,
            )
            return 1
        n = len(chapter_names(ROOT)[0])
        print(f"sync gate: {n} chapter(s) in sync, executed top to bottom")
        return 0
    if args.cmd == "compared":
        rows = compared(ROOT)
        total = {k: sum(r[k] for r in rows.values()) for k in next(iter(rows.values()), {})}
        print(
            f"{'chapter':30s}{'code':>6s}{'printing':>10s}{'compared':>10s}"
            f"{'compared, printing':>20s}{'characters':>12s}{'masked':>8s}"
        )
        for name, r in [*rows.items(), ("all", total)]:
            print(
                f"{name:30s}{r['code']:6d}{r['printing']:10d}{r['compared']:10d}"
                f"{r['with output']:20d}{r['characters']:12,d}{r['masked']:8d}"
            )
        return 0
    if args.cmd == "stale":
        print("\n".join(stale(ROOT)))
        return 0
    if args.cmd == "refresh":
        names = stale(ROOT) if args.stale else (args.names or chapter_names(ROOT)[0])
        if not names:
            print("all stored notebooks are up to date")
        refresh(ROOT, names)
        return 0
    if args.cmd == "bench":
        from tools import benchmarks

        times = bench(ROOT, args.names)
        extra = {} if args.names else benchmarks.run()
        if args.json:
            previous = json.loads(args.json.read_text()) if args.json.exists() else None
            report = bench_report(ROOT, times, previous)
            if extra:
                report["benchmarks"] = {
                    k: {m: round(x, 3) for m, x in r.items()} for k, r in extra.items()
                }
            elif previous and "benchmarks" in previous:
                report["benchmarks"] = previous["benchmarks"]
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1) + "\n")
            print(f"wrote {args.json}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
