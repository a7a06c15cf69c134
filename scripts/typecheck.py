"""mypy over the installed layout: ``enerlink`` with the services' folders as its subpackages.

The repository keeps ``edge/``, ``ingest/``, ... at its top and installs them as ``enerlink.edge``, ...
(``package-dir`` in pyproject.toml); mypy reads the source tree, not the installer's import hook, so
this builds the same layout from symbolic links under ``.run/typecheck`` and checks it there.

    .venv/bin/python scripts/typecheck.py [extra mypy arguments]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIEW = ROOT / ".run" / "typecheck"


def build_view() -> Path:
    """``VIEW/enerlink`` holding links to ``enerlink/``'s entries and to each mapped folder."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(VIEW, ignore_errors=True)
    package = VIEW / "enerlink"
    package.mkdir(parents=True)
    for entry in (ROOT / "enerlink").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in mapping.items():
        if name != "enerlink":
            (package / name.removeprefix("enerlink.")).symlink_to(ROOT / folder)
    return VIEW


def main() -> int:
    view = build_view()
    mypy = Path(sys.executable).with_name("mypy")
    config = ROOT / "pyproject.toml"
    args = [str(mypy), "--config-file", str(config), "-p", "enerlink", *sys.argv[1:]]
    env = {**os.environ, "MYPYPATH": str(view)}
    return subprocess.run(args, cwd=view, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
