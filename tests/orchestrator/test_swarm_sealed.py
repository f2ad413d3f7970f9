"""The ACME folder sealed for the swarm (drivers/swarm_sealed.py), its pure parts: what is sealed
opens with its key only and unchanged, the config's name follows the content and the key, and
the folder is read without a write's leftovers. The configs themselves: tests/swarm/test_swarm_sealed_configs.py."""

from __future__ import annotations

import os

import pytest

from selfieless.orchestrator.drivers.swarm_sealed import folder_files, seal, sealed_name, unseal

KEY, OTHER = os.urandom(32), os.urandom(32)
FILES = {"0123abcd/account.key": b"-----BEGIN EC PRIVATE KEY-----\nsecret\n", "0123abcd/api.test/cert.pem": b"cert"}


def test_what_is_sealed_opens_with_its_key_only_and_unchanged():
    blob = seal(KEY, FILES)
    assert b"secret" not in blob and b"account.key" not in blob   # neither content nor names show
    assert unseal(KEY, blob) == FILES
    assert seal(KEY, FILES) != blob   # a fresh nonce each time
    with pytest.raises(ValueError, match="does not open"):
        unseal(OTHER, blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(ValueError, match="does not open"):
        unseal(KEY, tampered)


def test_the_configs_name_follows_the_content_under_the_key():
    name = sealed_name("st", KEY, FILES)
    assert name.startswith("st-acme-") and name == sealed_name("st", KEY, dict(reversed(FILES.items())))
    assert name != sealed_name("st", KEY, {**FILES, "0123abcd/api.test/key.pem": b"k"})
    assert name != sealed_name("st", OTHER, FILES)   # an HMAC: the name tells nothing without the key


def test_the_folder_is_read_without_a_writes_leftovers(tmp_path):
    assert folder_files(tmp_path / "none") == {}
    (tmp_path / "d" / "api.test").mkdir(parents=True)
    (tmp_path / "d" / "account.key").write_bytes(b"a")
    (tmp_path / "d" / "api.test" / "cert.pem").write_bytes(b"c")
    (tmp_path / "d" / "api.test" / "key.pem.tmp").write_bytes(b"half")
    assert folder_files(tmp_path / "d") == {"account.key": b"a", "api.test/cert.pem": b"c"}
