"""Password storage: the client sends a SHA-1 hex digest; we keep only a salted scrypt hash of it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

SHA1_HEX = re.compile(r"[0-9a-fA-F]{40}")

# scrypt parameters: ~16 MiB and a few tens of ms per hash, the interactive-login setting.
_N, _R, _P = 2**14, 8, 1


def is_sha1_hex(value: str) -> bool:
    return SHA1_HEX.fullmatch(value) is not None


def hash_digest(digest: str) -> str:
    salt = os.urandom(16)
    key = hashlib.scrypt(digest.lower().encode("ascii"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_digest(digest: str, stored: str) -> bool:
    _, n, r, p, salt, key = stored.split("$")
    candidate = hashlib.scrypt(digest.lower().encode("ascii"), salt=base64.b64decode(salt),
                               n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(candidate, base64.b64decode(key))
