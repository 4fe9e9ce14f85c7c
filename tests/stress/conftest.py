"""Stress tests: short versions run in every `pytest`; `make stress` (QUILL_STRESS=1) runs
full sizes and the tests marked `stress`."""

from __future__ import annotations

import pytest

from tests.stress.harness import FIGURES, FULL


def pytest_collection_modifyitems(config, items):
    if FULL:
        return
    skip = pytest.mark.skip(reason="full-size stress test: make stress (QUILL_STRESS=1)")
    for item in items:
        if item.get_closest_marker("stress") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if FIGURES:
        terminalreporter.section("Quill stress figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
