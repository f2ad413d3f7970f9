"""Suite-wide hooks.

SELFIELESS_REQUIRE_ALL=1 (set by CI's `.ci/run`, which provisions every component) turns every
skip into a failure: there, a skip means a database, the browser or the Docker engine silently
failed to come up, and the tests that need it did not run. Locally the skips stay skips and say
how to get the missing component.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("SELFIELESS_REQUIRE_ALL", "") not in ("", "0")


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (file, line, "Skipped: reason")
        return f"{longrepr[2]} ({longrepr[0]}:{longrepr[1]})"
    return str(longrepr)


def _fail_if_skipped(report) -> None:
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped while SELFIELESS_REQUIRE_ALL=1, where every skip is a failure: {_reason(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_skipped(outcome.get_result())


_skipped_modules: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A module-level skip (pytest.skip(..., allow_module_level=True)) is reported at collection.
    # Failing that report would stop the whole run ("error during collection"), so it is recorded
    # here and fails the session at the end instead, after every other test has run.
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped:
        _skipped_modules.append(f"{report.nodeid}: {_reason(report)}")


def pytest_sessionfinish(session, exitstatus):
    if _skipped_modules and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_seconds_by_part: dict[str, float] = {}


def pytest_runtest_logreport(report):
    # Setup, call and teardown all count: a suite's lab or stack fixture is most of its time.
    parts = report.nodeid.split("/")
    part = parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0]
    _seconds_by_part[part] = _seconds_by_part.get(part, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    for line in _skipped_modules:
        terminalreporter.write_line(f"FAILED (skipped while SELFIELESS_REQUIRE_ALL=1) {line}", red=True)
    if _seconds_by_part:
        # Where CI's time goes (issue: keep the whole run well inside its limit as the suite grows).
        parts = sorted(_seconds_by_part.items(), key=lambda kv: -kv[1])
        terminalreporter.write_line("time per part: " + ", ".join(f"{k} {v:.0f} s" for k, v in parts))


def pytest_report_header(config):
    if REQUIRE_ALL:
        return "SELFIELESS_REQUIRE_ALL=1: every skip is a failure"


def pytest_addoption(parser):
    group = parser.getgroup("chaos", "chaos suite (tests/chaos)")
    group.addoption("--chaos-duration", type=float, default=60.0,
                    help="seconds of load and injected faults (default 60; longer for local soak runs)")
    group.addoption("--chaos-seed", type=int, default=None,
                    help="seed of the fault schedule (default: random, printed; pass it to replay a run)")


def pytest_collection_modifyitems(config, items):
    # The chaos run lasts as long as asked: its time limit follows --chaos-duration.
    limit = config.getoption("--chaos-duration") + 300
    for item in items:
        if "chaos" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.timeout(limit))
