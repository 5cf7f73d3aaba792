"""What a user installing cogman gets: the installed metadata, and a wheel built from this tree that ships
its LICENSE and declares it as an SPDX expression (PEP 639)."""

from __future__ import annotations

import email
import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cogman

ROOT = Path(__file__).resolve().parents[2]
STALE = "stale install: run pip install -e '.[dev,api]' again after a pyproject change"


def test_the_installed_metadata_matches_the_package():
    dist = importlib.metadata.distribution("cogman")
    assert dist.version == cogman.__version__, STALE
    assert dist.metadata["License-Expression"] == "MIT", STALE
    requirements = [r.split(";")[0].strip().lower() for r in dist.requires or []]
    assert not [r for r in requirements if r.startswith("typing-extensions")], STALE
    classifiers = dist.metadata.get_all("Classifier") or []
    for wanted in ("Programming Language :: Python :: 3.11", "Programming Language :: Python :: 3.13",
                   "Typing :: Typed", "Development Status :: 4 - Beta", "Operating System :: OS Independent",
                   "Topic :: System :: Distributed Computing"):  # fmt: skip
        assert wanted in classifiers, STALE
    urls = dict(url.split(", ", 1) for url in dist.metadata.get_all("Project-URL") or [])
    assert {"Documentation", "Source", "Changelog"} <= set(urls), STALE


def test_the_version_is_defined_once():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "\nversion = " not in pyproject.split("[tool.setuptools")[0]


def test_nothing_imports_typing_extensions():
    sources = [*ROOT.joinpath("cogman").rglob("*.py")]
    assert not [p for p in sources if "typing_extensions" in p.read_text()]


def test_the_wheel_ships_the_license(tmp_path: Path):
    """Built from a copy of the sources: a build in the tree would leave build/ behind, whose stale
    files a later wheel could ship."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "cogman", source / "cogman", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w",
         str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("cogman-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Version"] == cogman.__version__
    assert "MIT License" in license_text and "the cogman authors" in license_text
    assert "cogman/py.typed" in names


def test_the_changelog_has_an_unreleased_section_and_the_project_urls_point_at_it():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog") and "## [Unreleased]" in changelog
    assert "keepachangelog.com" in changelog
    assert "CHANGELOG.md" in (ROOT / "pyproject.toml").read_text()
