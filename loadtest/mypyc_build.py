"""Compile the tap path's modules with mypyc into *another* checkout, to measure what that saves.

mypyc (shipped with mypy) turns type-annotated modules into C extensions. This builds the modules a
tap runs through (`MODULES`) as `.so` files next to their `.py` in the checkout given, where Python
imports them in preference to the source. A tap benchmark run from that checkout then measures the
compiled path; run from this one, the interpreted path (BENCHMARKS.md, issue 12, ninth pass):

    git worktree add /tmp/mc HEAD && ln -s "$PWD/.venv" /tmp/mc/.venv
    .venv/bin/python loadtest/mypyc_build.py /tmp/mc                 # ~40 s of one core
    (cd /tmp/mc && .venv/bin/python loadtest/tap_ceiling.py --rates 3000 --duration 10 --healthz 0 --attempts 1)
    .venv/bin/python loadtest/tap_ceiling.py --rates 3000 --duration 10 --healthz 0 --attempts 1
    .venv/bin/python loadtest/mypyc_build.py /tmp/mc --clean          # or: git worktree remove --force /tmp/mc

It refuses to build into the checkout it runs from: a compiled module shadows its source, so an edit
to the `.py` would silently not run. `app/bets/schemas.py` is left out (mypyc's C for its marshmallow
import does not compile); so is every module a tap does not run through.

The build runs in a temporary directory (setuptools would otherwise validate this project's
pyproject.toml as package metadata), with mypy reading the checkout's own settings.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODULES = (
    "app/units.py",
    "app/keys.py",
    "app/realtime/frames.py",
    "app/realtime/fanout.py",
    "app/realtime/taps.py",
    "app/realtime/events.py",
    "app/bets/placement.py",
    "app/bets/claims.py",
    "app/bets/notify.py",
    "app/bets/store.py",
    "app/bets/tapstats.py",
    "app/auth/signatures.py",
    "app/ledger/store.py",
    "app/market/grid.py",
    "app/storage/redis_batch.py",
    "app/storage/writes.py",
    "workers/pubsub_listener.py",
    "workers/sqlite_writer.py",
)

SETUP_PY = """\
import sys
from setuptools import setup
from mypyc.build import mypycify

config, *paths = sys.argv[sys.argv.index("--") + 1 :]
del sys.argv[sys.argv.index("--") :]
setup(name="tap_path_mypyc", ext_modules=mypycify(["--config-file", config, *paths], opt_level="3"))
"""


def compiled_files(checkout: Path) -> list[Path]:
    """The extension modules a build left in `checkout` (the shared `*__mypyc` library included)."""
    found = [*checkout.glob("*__mypyc.*.so")]
    for package in ("app", "workers"):
        found += (checkout / package).rglob("*.so")
    return sorted(found)


def build(checkout: Path) -> list[Path]:
    """Compile `MODULES` of `checkout` and copy the extensions next to their sources."""
    with tempfile.TemporaryDirectory(prefix="mypyc-build-") as tmp:
        work = Path(tmp)
        (work / "setup.py").write_text(SETUP_PY)
        out = work / "out"
        cmd = [
            sys.executable, "setup.py", "build_ext", "--build-lib", str(out), "--build-temp", str(work / "t"),
            "--", str(checkout / "pyproject.toml"), *(str(checkout / m) for m in MODULES),
        ]  # fmt: skip
        done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            raise SystemExit(f"mypyc build failed (exit {done.returncode})")
        copied = []
        for so in out.rglob("*.so"):
            dest = checkout / so.relative_to(out)
            shutil.copy2(so, dest)
            copied.append(dest)
    return sorted(copied)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="another checkout of this repository (e.g. a git worktree)")
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules instead")
    args = ap.parse_args()
    checkout = args.checkout.resolve()
    if checkout == ROOT:
        raise SystemExit("refusing to compile into the checkout this runs from: use a second checkout")
    if not all((checkout / m).is_file() for m in MODULES):
        raise SystemExit(f"{checkout} is not a checkout of this repository (a module is missing)")
    for so in compiled_files(checkout):
        so.unlink()
    if args.clean:
        print(f"removed the compiled modules from {checkout}")
        return
    copied = build(checkout)
    print(f"{len(copied)} extension modules in {checkout}:")
    for so in copied:
        print(f"  {so.relative_to(checkout)}")


if __name__ == "__main__":
    main()
