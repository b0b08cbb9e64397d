"""Collects the W3C RDF 1.1 suite results and prints them at the end of the run."""

from __future__ import annotations

import pytest

W3C_RESULTS = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def w3c_report(request: pytest.FixtureRequest) -> dict:
    """``{(backend, suite): (passed, total, [failures])}``, printed in the terminal summary."""
    return request.config.stash.setdefault(W3C_RESULTS, {})


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    results = config.stash.get(W3C_RESULTS, None)
    if not results:
        return
    terminalreporter.section("W3C RDF 1.1 test suites")
    for (backend, suite), (passed, total, failures) in sorted(results.items()):
        terminalreporter.write_line(f"{backend:10} {suite:14} {passed:4d}/{total:<4d} passed")
        for failure in failures:
            terminalreporter.write_line(f"    FAILED {failure}")
