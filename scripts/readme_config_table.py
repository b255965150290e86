"""Rewrite the configuration table in README.md from app.config (run after adding a setting).

.venv/bin/python scripts/readme_config_table.py
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import env_table  # noqa: E402

HEADER = "| variable | default | meaning |\n|---|---|---|\n"


def main() -> None:
    rows = []
    for var, default, doc in env_table():
        shown = "<repo>/var" if var == "TAP_DATA_DIR" else default
        rows.append(f"| `{var}` | {'`' + shown + '`' if shown else '—'} | {doc} |")
    readme = (ROOT / "README.md").read_text()
    new, n = re.subn(re.escape(HEADER) + r"(\|.*\|\n)+", HEADER + "\n".join(rows) + "\n", readme)
    if n != 1:
        raise SystemExit("README.md: configuration table not found")
    (ROOT / "README.md").write_text(new)


if __name__ == "__main__":
    main()
