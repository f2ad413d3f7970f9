"""Pure validation rules for acts: the course timestamp format and the base64 image text."""

from __future__ import annotations

import re
from datetime import datetime

# DD-MM-YYYY:SS-MM-HH, fixed width, ASCII digits only (re.ASCII keeps \d from matching other scripts).
_TIMESTAMP = re.compile(r"(\d{2})-(\d{2})-(\d{4}):(\d{2})-(\d{2})-(\d{2})", re.ASCII)
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}", re.ASCII)
_WHITESPACE = str.maketrans("", "", " \t\n\r\v\f")

MAX_ACT_ID = 2**63 - 1


def timestamp_sort_key(text: str) -> int | None:
    """YYYYMMDDHHMMSS as an integer (sorts by time on every backend), or None when invalid."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    day, month, year, second, minute, hour = (int(g) for g in match.groups())
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    return ((((year * 100 + month) * 100 + day) * 100 + hour) * 100 + minute) * 100 + second


def is_base64_text(text: str) -> bool:
    """Base64 alphabet with at most two '=' at the end, once whitespace (line wrapping) is removed.

    The length need not be a multiple of 4: the course's own example image is not.
    """
    return _BASE64.fullmatch(text.translate(_WHITESPACE)) is not None
