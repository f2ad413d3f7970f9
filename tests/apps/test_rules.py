"""Unit tests of the pure upload rules (no server)."""

from __future__ import annotations

import pytest

from selfieless.apps.acts.rules import is_base64_text, timestamp_sort_key
from selfieless.apps.common.body import parse_uint
from selfieless.apps.common.errors import ApiError
from selfieless.apps.users.passwords import hash_digest, is_sha1_hex, verify_digest


def test_timestamp_key_orders_by_time():
    keys = [timestamp_sort_key(t) for t in ("31-12-2018:59-59-23", "01-01-2019:00-00-00", "01-01-2019:01-00-00",
                                             "01-01-2019:00-01-00", "01-01-2019:00-00-01")]
    assert keys == sorted(keys)
    assert timestamp_sort_key("09-04-2019:05-30-14") == 20190409143005


@pytest.mark.parametrize("text", ["31-02-2019:00-00-00", "5-4-2019:30-15-10", "12-03-2018:22-60-60",
                                  "12-03-2018:00-00-24", "00-00-0000:00-00-00", "12-03-2018:00-00-00\n",
                                  "１２-03-2018:00-00-00"])
def test_bad_timestamps(text):
    assert timestamp_sort_key(text) is None


@pytest.mark.parametrize("text,ok", [("aGVsbG8=", True), ("aGVsbG8", True), ("a", True), ("aGVs\nbG8=\n", True),
                                     ("aGVs bG8=", True), ("", False), ("==", False), ("aGVsbG8===", False),
                                     ("aG=VsbG8", False), ("data:image/png;base64,aGk=", False), ("aGk-_", False),
                                     ("aGk\u00e9", False)])
def test_base64_text(text, ok):
    assert is_base64_text(text) is ok


def test_parse_uint():
    assert parse_uint("007", "x") == 7
    assert parse_uint(str(2**63 - 1), "x") == 2**63 - 1
    for bad in ("", "-1", "1.0", "٣", str(2**63), "9" * 5000):
        with pytest.raises(ApiError):
            parse_uint(bad, "x")


def test_password_hashing():
    digest = "a" * 40
    stored = hash_digest(digest)
    assert verify_digest(digest, stored) and verify_digest(digest.upper(), stored)
    assert not verify_digest("b" * 40, stored)
    assert is_sha1_hex("0" * 40) and not is_sha1_hex("0" * 40 + "\n") and not is_sha1_hex("z" * 40)
