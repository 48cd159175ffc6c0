"""What a user sees of the package itself: its version (one number, in CHANGELOG.md, the
package and ``portaconv --version``), its licence, its type-hint marker, and the versions
``portaconv info`` lists.

Oracles: the files a release is made of (CHANGELOG.md's newest heading, LICENSE,
pyproject.toml as setuptools reads it) and the installed distributions' own metadata
(importlib.metadata), not portaconv's code under test.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from pathlib import Path

import pytest

import portaconv
from portaconv.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _changelog_version() -> str:
    """The newest version CHANGELOG.md describes (its first ``## [X.Y.Z]`` heading)."""
    match = re.search(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert match, "CHANGELOG.md has no '## [X.Y.Z] - date' heading"
    return match[1]


def test_version_is_the_changelogs_newest_and_the_commands(capsys):
    assert portaconv.__version__ == _changelog_version() == "0.2.0"
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == "portaconv 0.2.0\n"


def test_pyproject_takes_the_version_license_and_py_typed_from_the_package():
    """setuptools, reading pyproject.toml as a build does, finds the version in
    ``portaconv.__version__`` (one place to change), the MIT licence that LICENSE holds, and
    ships ``py.typed`` (PEP 561: type checkers then read portaconv's hints)."""
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")
    config = pyprojecttoml.read_configuration(ROOT / "pyproject.toml", expand=True)
    assert config["project"]["version"] == portaconv.__version__
    assert config["project"]["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["portaconv"]
    assert (Path(portaconv.__file__).parent / "py.typed").is_file()


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_info_lists_jax_and_jaxlib_and_how_to_launch_mpi(capsys):
    from portaconv.distributed import mpi_info

    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("jax", "jaxlib"):
        row = [line.split() for line in lines if line.split()[:1] == [name]][0]
        assert " ".join(row[1:]) == (_installed(name) or "not installed"), row
    mpi = [line for line in lines if line.startswith("MPI: ")][0]
    mpi_report = mpi_info()
    # as root (CI), Open MPI starts only with its flag: info names it where it applies
    flag = (
        os.geteuid() == 0
        and mpi_report["available"]
        and str(mpi_report["implementation"]).startswith("Open MPI")
        and mpi_report["world_size"] == 1
    )
    assert ("mpiexec --allow-run-as-root -n N portaconv train" in mpi) == flag, mpi
