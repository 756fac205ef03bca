"""Real text for the benchmarks: the descriptions of Debian 12 (bookworm) main packages.

About 64,000 English descriptions written by thousands of Debian maintainers, and their translations
by the Debian Description Translation Project. Apt stores them once ``apt-get update -o
Acquire::Languages=en,de,fr,...`` has run (the archive's Translation-* indexes); ``load_corpus`` reads
them from apt's lists with apt's own ``apt-helper cat-file``.
"""

from __future__ import annotations

import glob
import subprocess

LISTS = "/var/lib/apt/lists/*_dists_bookworm_main_i18n_Translation-{file}.*"
HELP = ("the Debian package descriptions in {language} are missing: run `apt-get update -o "
        "Acquire::Languages=en,de,fr,es,ru,zh_CN,ja,it,pt,pl,nl` (as root) so apt stores bookworm's Translation indexes")


def load_corpus(language: str = "en") -> list[str]:
    """Every package description in ``language`` (``en``, ``de``, ``zh_CN``, ...): the short line,
    then the long text (paragraphs kept)."""
    paths = sorted(glob.glob(LISTS.format(file=language.replace("_", "%5f"))))
    if not paths:
        raise SystemExit(HELP.format(language=language))
    text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", paths[0]], check=True,
                          capture_output=True).stdout.decode("utf-8", errors="replace")
    field = f"Description-{language}:"
    docs = []
    for record in text.split("\n\n"):
        lines = record.split("\n")
        body = [line for line in lines if line.startswith(field) or line.startswith(" ")]
        if not body:
            continue
        first = body[0].removeprefix(field).strip()
        rest = ["" if line.strip() == "." else line[1:] for line in body[1:]]
        docs.append("\n".join([first, *rest]))
    return docs
