"""CI's skip guard: under ``CI=true`` a skipped test fails the run unless it is marked ``gpu``.

A test that skips because torch, transformers, the reference tokenizer or the MiniLM
weights failed to import has checked nothing; in CI that must be red, not quietly
green. GPU tests are the one exception: CI never has a GPU. Both ``tests/conftest.py``
and ``bench/conftest.py`` import these hooks.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest


def ci_active() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _reason(longrepr: Any) -> str:
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if (ci_active() and report.skipped and not hasattr(report, "wasxfail")
            and item.get_closest_marker("gpu") is None):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where only gpu-marked tests may skip: {_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if ci_active() and report.skipped:
        report.outcome = "failed"
        report.longrepr = (f"{collector.nodeid} skipped whole under CI=true (a dependency did not import?): "
                           f"{_reason(report.longrepr)}")
