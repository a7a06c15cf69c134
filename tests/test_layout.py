"""One installed namespace: the distribution puts exactly one top-level package, ``enerlink``, into
site-packages; the services' folders at the top of the repository are its subpackages (package-dir),
and nothing in the repository imports them by their folder names."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.test_layers import FOLDERS

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _packages_on_disk() -> set[str]:
    found = set()
    for folder in FOLDERS:
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join(("enerlink" if folder == "enerlink" else f"enerlink.{folder}", *rel)))
    return found


def test_every_folder_is_mapped_and_every_package_listed() -> None:
    mapping = SETUPTOOLS["package-dir"]
    assert mapping == {("enerlink" if f == "enerlink" else f"enerlink.{f}"): f for f in FOLDERS}
    assert set(SETUPTOOLS["packages"]) == _packages_on_disk()


def test_nothing_imports_a_folder_name() -> None:
    old = set(FOLDERS) - {"enerlink"}
    wrong = []
    for base in ("enerlink", *old, "tests", "bench", "scripts"):
        for path in (ROOT / base).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                wrong += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in old
                ]
    assert not wrong, "imports by folder name (use enerlink.<folder>):\n" + "\n".join(wrong)


def test_the_wheel_holds_one_top_level_package(tmp_path: Path) -> None:
    # built from a copy of what the distribution is made of, so the build leaves nothing in the checkout
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("enerlink-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"enerlink"}
    # the services, their data files and the migrations come along
    for expected in (
        "enerlink/edge/sim/runner.py",
        "enerlink/ingest/store.lua",
        "enerlink/schemas/migrations/0010_narrow_rows.sql",
        "enerlink/schemas/json/meter-data.schema.json",
        "enerlink/api/static/index.html",
        "enerlink/settlement/records.py",
        "enerlink/edge/sim/fleet.example.toml",
    ):
        assert expected in names, expected
