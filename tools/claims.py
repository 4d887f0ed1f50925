"""The book's page of verified claims, generated from the executed chapters.

    python -m tools.claims            # (re)write book/claims.md from book/*.ipynb
    python -m tools.claims --check    # fail if book/claims.md is not what the chapters say

A claim is a line ``✓ ...`` that ``hamlib.check`` printed in a stored notebook (it raises instead
of printing when the claim fails, so a stored ``✓`` is a claim that held when the chapter ran;
nbval re-runs every chapter in CI and compares these lines). Each chapter's closing
``hamlib.summary()`` prints how many claims it verified: the two counts must agree, or this tool
refuses to write the page. Checks in the exercises' solutions (after the summary) are listed too,
under their section.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from hamlib.repro import CLAIM_MARK, MARGIN, SUMMARY
from tools.notebooks import read_stored

ROOT = Path(__file__).resolve().parents[1]
PAGE = Path("book") / "claims.md"
_MARK = CLAIM_MARK
_SUMMARY = re.compile("^" + re.escape(SUMMARY).replace(r"\{\}", r"(\d+)"))
_ESCAPE = re.compile(r"([\\`*_\[\]<>$|#])")


def _md(text: str) -> str:
    """Text as literal Markdown: a claim like "|x| * 2 < 3" must not turn into markup or math."""
    return _ESCAPE.sub(r"\\\1", text)


@dataclass
class Chapter:
    stem: str
    title: str
    sections: list[tuple[str, list[str]]] = field(default_factory=list)  # (heading, claims)
    in_text: int = 0  # claims before the chapter's summary; the rest check exercise solutions

    @property
    def count(self) -> int:
        return sum(len(claims) for _, claims in self.sections)


def _stream_text(cell: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream"
    )


def read_chapter(path: Path) -> Chapter:
    """The claims a stored notebook verified, grouped under the heading they were checked in."""
    nb = read_stored(path)
    chapter = Chapter(path.stem, path.stem)
    heading, announced = "", None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# ") and chapter.title == path.stem:
                    chapter.title = line[2:].strip()
                elif line.startswith("## "):
                    heading = line[3:].strip()
            continue
        for line in _stream_text(cell).splitlines():
            if line.startswith(_MARK):
                if not chapter.sections or chapter.sections[-1][0] != heading:
                    chapter.sections.append((heading, []))
                chapter.sections[-1][1].append(line[len(_MARK) :].strip())
            elif match := _SUMMARY.match(line):
                announced, chapter.in_text = int(match.group(1)), chapter.count
    if announced is None:
        raise ValueError(f"{path}: no hamlib.summary() output ('This chapter verified N claims:')")
    if (
        announced != chapter.in_text
    ):  # the exercises' solutions check their answers after the summary
        raise ValueError(
            f"{path}: hamlib.summary() says {announced} claims, the stored outputs before it "
            f"show {chapter.in_text} lines starting with '{_MARK.strip()}'"
        )
    return chapter


def render(root: Path = ROOT) -> str:
    chapters = [read_chapter(p) for p in sorted((root / "book").glob("[0-9]*.ipynb"))]
    total = sum(c.count for c in chapters)
    quantitative = sum(
        MARGIN in claim for c in chapters for _, claims in c.sections for claim in claims
    )
    lines = [
        "# Every claim the book verifies",
        "",
        f"{total} claims in {len(chapters)} chapters. Each line below was printed by",
        "`hamlib.check` in a chapter's stored outputs: `check` prints a claim only when the code",
        "beside it confirms it, and raises otherwise, so a chapter with a false claim stops.",
        (
            f"{quantitative} of them are quantitative: their line ends with the value measured"
            if quantitative
            else "A quantitative claim's line ends with the value measured"
        ),
        "and the bound or tolerance it was held to, so you can see how tight it is. The",
        "regression tests re-execute every chapter and compare these lines; the page itself is",
        "generated from the executed notebooks by `tools/claims.py`, never edited by hand.",
        "Claims that the book tested and found *not* to hold are in each chapter's",
        "*Claims in circulation* section, checked as what was measured.",
        "",
    ]
    for chapter in chapters:
        lines += [f"## [{chapter.title}]({chapter.stem}.ipynb)", ""]
        extra = chapter.count - chapter.in_text
        lines += [f"{chapter.in_text} claims in the text, {extra} in the exercises' solutions.", ""]
        number = 0
        for heading, claims in chapter.sections:
            lines += [f"**{heading or 'Opening'}**", ""]  # chapter Markdown, math included
            for claim in claims:
                number += 1
                text, _, margin = claim.partition(MARGIN)
                held = f" — *measured {_md(margin)}*" if margin else ""
                lines.append(f"{number}. {_md(text)}{held}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = parser.parse_args(argv)
    text, path = render(ROOT), ROOT / PAGE
    if args.check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(
                f"{PAGE} is out of date with the stored chapters: run `make refresh` or "
                "`python -m tools.claims` and commit it",
                file=sys.stderr,
            )
            return 1
        print(f"{PAGE}: up to date")
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
