"""The last log lines quoted in an exit reason (drivers/logtail.py): pure, plus the file read."""

import pytest

from selfieless.orchestrator.drivers.logtail import MAX_CHARS, ended_itself, file_tail, tail_text, with_tail

LOG = """
--- 2026-12-06 07:00:00 start: python -m app
serving on 8000
GET / 200
--- 2026-12-06 07:01:00 start: python -m app
Traceback (most recent call last):
  File "<frozen runpy>", line 189, in _run_module_as_main

ModuleNotFoundError: No module named 'selfieless.apps.actz'
"""


@pytest.mark.parametrize("text, marker, expected", [
    (LOG, "--- ", "Traceback (most recent call last): | File \"<frozen runpy>\", line 189, in "
                  "_run_module_as_main | ModuleNotFoundError: No module named 'selfieless.apps.actz'"),
    ("--- start\nonly the previous replica wrote\n--- start\n", "--- ", ""),   # this one wrote nothing
    ("a\nb\n", None, "a | b"),
    ("", None, ""),
])
def test_tail_text(text, marker, expected):
    assert tail_text(text, marker) == expected


def test_a_long_tail_is_cut_from_the_front():
    out = tail_text("x" * 1000 + "END")
    assert len(out) == MAX_CHARS and out.startswith("...") and out.endswith("END")


def test_with_tail_and_file_tail(tmp_path):
    assert with_tail("exited with code 1", "") == "exited with code 1"
    log = tmp_path / "acts-8000.log"
    log.write_text("x\n" * 10_000 + LOG)
    assert with_tail("exited with code 1", file_tail(log, "--- ")).endswith(
        "; its log ends: Traceback (most recent call last): | File \"<frozen runpy>\", line 189, in "
        "_run_module_as_main | ModuleNotFoundError: No module named 'selfieless.apps.actz'")
    assert file_tail(tmp_path / "missing.log", "--- ") == ""


@pytest.mark.parametrize("code, quoted", [(1, True), (0, True), (127, True), (-9, False), (137, False), (None, False)])
def test_only_an_exit_the_process_chose_is_quoted(code, quoted):
    assert ended_itself(code) is quoted
