"""What a user sees of the package itself: its version (one number, in CHANGELOG.md, the
package and ``portaconv --version``), its licence, its type-hint marker, and how
``portaconv info`` says to launch MPI.

Oracles: the files a release is made of (CHANGELOG.md's newest heading, LICENSE,
pyproject.toml as setuptools reads it), not portaconv's code under test.
"""

from __future__ import annotations

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


@pytest.mark.parametrize(
    "root, implementation, world_size, flag",
    [
        (True, "Open MPI v5.0.11", 1, True),
        (False, "Open MPI v5.0.11", 1, False),
        (True, "MPICH Version:  4.2.0", 1, False),  # MPICH needs no such permission
        (True, "Open MPI v5.0.11", 2, False),  # already launched: no hint at all
    ],
)
def test_info_names_open_mpis_root_flag_where_it_is_needed(
    capsys, monkeypatch, root, implementation, world_size, flag
):
    """As root (CI, containers), Open MPI starts only with --allow-run-as-root: ``portaconv
    info``'s launch hint carries the flag there, and only there. (The versions it lists are
    checked against the installed distributions by test_cli_info_as_a_console_command.)"""
    import portaconv.cli as cli

    report = {
        "portaconv": portaconv.__version__, "python": "3", "platform": "p", "versions": {},
        "backends": {}, "gpus": [], "active": {"backend": "numpy", "device": "cpu",
                                               "dtype": "float32"},
        "mpi": {"available": True, "mpi4py": "4.1", "implementation": implementation,
                "world_size": world_size},
    }  # fmt: skip
    monkeypatch.setattr(cli, "info_report", lambda: report)
    monkeypatch.setattr(cli, "_is_root", lambda: root)
    assert main(["info"]) == 0
    mpi = [line for line in capsys.readouterr().out.splitlines() if line.startswith("MPI: ")]
    assert len(mpi) == 1 and mpi[0].startswith(f"MPI: available ({implementation}, mpi4py 4.1)")
    assert ("mpiexec --allow-run-as-root -n N portaconv train" in mpi[0]) == flag, mpi
    assert ("mpiexec -n N portaconv train" in mpi[0]) == (world_size == 1 and not flag), mpi
