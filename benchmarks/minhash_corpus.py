"""The benchmark corpus: English descriptions of every Debian 12 (bookworm) main package.

About 64,000 real documents written by thousands of Debian maintainers. Apt stores them once
``apt-get update -o Acquire::Languages=en`` has run (the Translation-en index of the archive);
``load_corpus`` reads them from apt's lists with apt's own ``apt-helper cat-file``.
"""

from __future__ import annotations

import glob
import subprocess

LISTS = "/var/lib/apt/lists/*_dists_bookworm_main_i18n_Translation-en*"
HELP = ("the Debian package descriptions are missing: run `apt-get update -o Acquire::Languages=en` "
        "(as root) so apt stores bookworm's Translation-en index")


def load_corpus() -> list[str]:
    """Every package description: the short line, then the long text (paragraphs kept)."""
    paths = sorted(glob.glob(LISTS))
    if not paths:
        raise SystemExit(HELP)
    text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", paths[0]], check=True,
                          capture_output=True).stdout.decode("utf-8", errors="replace")
    docs = []
    for record in text.split("\n\n"):
        lines = record.split("\n")
        body = [line for line in lines if line.startswith("Description-en:") or line.startswith(" ")]
        if not body:
            continue
        first = body[0].removeprefix("Description-en:").strip()
        rest = ["" if line.strip() == "." else line[1:] for line in body[1:]]
        docs.append("\n".join([first, *rest]))
    return docs
