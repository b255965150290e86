"""``python -m app.admin.integrity_run <db dir>``: the console's integrity-check, as JSON lines.

The same checks as `flask integrity-check --all-weeks` (SPEC §10: every local week file, and the
carry from the week before where that file is still local), run in a process of its own so that the
check's Python loops never compete with the web worker's hub for the GIL. One JSON object a line:
``{"type": "progress", "done": i, "total": n, "file": …}``, ``{"type": "violation", "text": …}`` (the
first `MAX_LISTED`), ``{"type": "file", "file": …, "violations": k}``, finally
``{"type": "done", "violations": total, "files": n}``. Exit status 1 if any violation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from app.ledger.integrity import Violation, check_file, check_link, previous_week_file
from app.storage.db import list_week_files

MAX_LISTED = 100


def _say(**msg: object) -> None:
    sys.stdout.write(orjson.dumps(msg).decode() + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m app.admin.integrity_run <db dir>", file=sys.stderr)
        return 2
    files = list_week_files(Path(argv[1]))
    total, listed = 0, 0
    for i, path in enumerate(files):
        _say(type="progress", done=i, total=len(files), file=path.name)
        found: list[Violation] = check_file(path)
        prev = previous_week_file(path)
        if prev is not None:
            found += check_link(prev, path)
        for v in found:
            if listed < MAX_LISTED:
                _say(type="violation", text=str(v))
                listed += 1
        total += len(found)
        _say(type="file", file=path.name, violations=len(found))
    _say(type="done", violations=total, files=len(files))
    return 1 if total else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
