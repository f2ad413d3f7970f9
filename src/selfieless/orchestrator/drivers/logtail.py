"""The last lines a replica wrote, for the reason of its exit: `exited with code 1` alone does not
say that the command names a module that does not exist; its last log lines do.

`tail_text` is pure; `file_tail` reads the end of a process driver's log file.
"""

from __future__ import annotations

from pathlib import Path

LINES = 3          # lines quoted
MAX_CHARS = 400    # of the quoted text, so one event stays one readable line
READ_BYTES = 8192  # from the end of a log file: enough for a traceback's last lines


def tail_text(text: str, marker: str | None = None, lines: int = LINES) -> str:
    """The last `lines` non-blank lines of `text`, after the last line that starts with `marker`
    (the process driver writes one before each start: a replacement appends to its predecessor's
    log, whose lines are not this replica's), joined with " | "; "" when there are none."""
    rows = text.splitlines()
    if marker is not None:
        starts = [i for i, row in enumerate(rows) if row.startswith(marker)]
        if starts:
            rows = rows[starts[-1] + 1:]
    picked = " | ".join(row.strip() for row in [r for r in rows if r.strip()][-lines:])
    return picked if len(picked) <= MAX_CHARS else "..." + picked[-(MAX_CHARS - 3):]


def ended_itself(code: int | None) -> bool:
    """An exit status the process chose (0-127), after which its last lines likely say why; a
    signal (a negative returncode, or 128+N from a container) comes from outside, and the log
    ends with whatever it was doing then."""
    return code is not None and 0 <= code < 128


def with_tail(reason: str, tail: str) -> str:
    """An exit reason with the replica's last log lines, when it wrote any."""
    return f"{reason}; its log ends: {tail}" if tail else reason


def file_tail(path: Path, marker: str) -> str:
    """`tail_text` of the end of the log file at `path` ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - READ_BYTES))
            data = f.read()
    except OSError:
        return ""
    return tail_text(data.decode("utf-8", "replace"), marker)
