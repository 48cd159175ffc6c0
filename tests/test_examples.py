"""Every script in examples/ runs to its end with no arguments and says what it promises;
so does the README's Python example.

Each runs as a user would run it, ``python examples/<name>.py`` from the repository root, in
a subprocess on NumPy (the examples are backend-neutral code; the conformance tests cover
the backends). ``EXPECTED`` holds, per script, a pattern its output must match and the
accuracy it must reach on the test images, whose labels are the oracle; a script not listed
must still exit 0 and print something.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))
TIMEOUT = 120


def accuracy_at_least(floor: float, pattern: str = r"test accuracy ([0-9.]+)"):
    """A check: the output reports a test accuracy of at least ``floor``."""

    def check(stdout: str) -> None:
        found = re.findall(pattern, stdout)
        assert found, f"no line matches {pattern!r}"
        assert float(found[-1]) >= floor, f"test accuracy {found[-1]} < {floor}"

    return check


def settles(stdout: str) -> None:
    """examples/train_cnn1d.py: the second half of its epochs does not swing (at its old
    fixed rate the test accuracy fell by a third from one epoch to the next)."""
    per_epoch = [float(a) for a in re.findall(r"epoch \d+: .*test accuracy ([0-9.]+)", stdout)]
    assert len(per_epoch) >= 4, "fewer than 4 epoch lines"
    last = per_epoch[len(per_epoch) // 2 :]
    assert min(last) >= 0.9 and max(last) - min(last) <= 0.05, per_epoch


def restores_the_checkpoint(stdout: str) -> None:
    assert "same predictions" in stdout, "the restored model predicts otherwise"


def round_trips_bitwise(stdout: str) -> None:
    assert "safetensors round trip bitwise" in stdout, "the reloaded parameters differ"


#: What each script's output must show, beyond exit status 0 and some output.
EXPECTED: dict[str, list] = {
    "digits_cnn.py": [accuracy_at_least(0.95), restores_the_checkpoint],
    "residual.py": [accuracy_at_least(0.95)],
    "train_cnn1d.py": [accuracy_at_least(0.95, r"test accuracy ([0-9.]+) after"), settles],
    "predict_digits.py": [accuracy_at_least(0.9, r"accuracy of model\.predict .*: ([0-9.]+)")],
    "handout_resblock.py": [accuracy_at_least(90, r"test accuracy .*: ([0-9.]+)%")],
    "export_onnx.py": [
        accuracy_at_least(0.85, r"onnxruntime test accuracy ([0-9.]+)"),
        round_trips_bitwise,
    ],
}


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PORTACONV_DEVICE"}
    env["PORTACONV_BACKEND"] = "numpy"
    # the checkout's portaconv, whichever one is installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, env=env
    )


def run_example(name: str) -> subprocess.CompletedProcess:
    return run_python([str(Path("examples") / name)], cwd=ROOT)


def python_blocks(path: Path) -> list[str]:
    """The fenced ```python blocks of a Markdown file."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)


def test_the_examples_are_found():
    assert {"digits_cnn.py", "residual.py", "train_cnn1d.py"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name):
    done = run_example(name)
    assert done.returncode == 0, f"examples/{name} exited {done.returncode}:\n{done.stderr}"
    assert done.stdout.strip(), f"examples/{name} printed nothing"
    for check in EXPECTED.get(name, []):
        try:
            check(done.stdout)
        except AssertionError as failure:
            raise AssertionError(f"examples/{name}: {failure}\n{done.stdout}") from None


README_EXAMPLE = python_blocks(ROOT / "README.md")[0]


def test_the_readme_example_is_the_guides():
    """The README's example is the first one of docs/guides/getting_started.md, word for word."""
    assert python_blocks(ROOT / "docs" / "guides" / "getting_started.md")[0] == README_EXAMPLE


def test_the_readme_example_runs(tmp_path):
    done = run_python(["-c", README_EXAMPLE], cwd=tmp_path)  # its checkpoint lands in tmp_path
    assert done.returncode == 0, done.stderr
    accuracy_at_least(0.95)(done.stdout)
    assert (tmp_path / "digits.npz").is_file()
    # the restored model's classes for 8 test images, then their labels: mostly the same
    predicted, true = re.findall(r"\[([\d ]+)\]", done.stdout.splitlines()[-1])
    agree = sum(p == t for p, t in zip(predicted.split(), true.split(), strict=True))
    assert agree >= 6, done.stdout
