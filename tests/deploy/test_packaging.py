"""The wheel (what `pip install .` and the Docker image install) carries the whole package."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.deploy
def test_the_wheel_carries_every_module_of_every_layer(tmp_path):
    # built from a fresh copy: an in-tree build directory would carry files of earlier builds
    source = tmp_path / "source"
    shutil.copytree(REPO / "stream", source / "stream", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(path.relative_to(REPO)) for path in (REPO / "stream").rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert modules - shipped == set()
