"""tests/conftest.py's guard: a test that starts a process without the mark for it fails, also when
the code under test catches the guard's error; a marked one runs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

INNER = '''
import subprocess

import pytest


def test_unmarked():
    subprocess.run(["true"], check=True)


def test_unmarked_and_swallowed():
    try:
        subprocess.run(["true"], check=True)
    except RuntimeError:
        pass


@pytest.mark.subprocess
def test_marked():
    subprocess.run(["true"], check=True)


def test_pure():
    assert sum(range(4)) == 6
'''


@pytest.mark.subprocess  # its inner marked test starts `true`
def test_the_guard_fails_unmarked_starts_and_lets_marked_ones_run(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    subprocess: x\n    ray: x\n    spark: x\n    slow: x\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str()
    assert "test_unmarked starts a process (true)" in out
    assert "test_unmarked_and_swallowed starts a process (true)" in out
