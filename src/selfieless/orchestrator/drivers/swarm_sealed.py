"""The control plane's ACME folder kept in the swarm, sealed, so that a control plane started on
another manager (`up --detach`, after a node's loss) serves the certificates already issued
instead of asking the CA again.

Where: a Swarm config (configs live in the managers' Raft store: every manager reads them, and
they survive any one node), holding the whole folder (account key, certificates, their keys)
encrypted with AES-256-GCM. The key is a Swarm secret of the control plane (`<stack>-seal`,
made by the first `up --detach`), which Swarm mounts in the control plane's task only: the
manager's API shows a config's data to whoever asks, but never a secret's. Each save is a config
of its own, named by an HMAC of its content under the key (the same folder saved twice is one
config; the name says nothing of the content), and replaces the older ones. The configs and the
secret carry `selfieless.control-plane=<stack>`: `down --swarm` removes them with the stack.

Pure: :func:`seal`, :func:`unseal`, :func:`folder_files`, :func:`sealed_name`. I/O (blocking):
:func:`seal_secret` (the CLI), :class:`SealedFolder` (the control plane: ``restore`` at start,
``save`` after each certificate issued).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from selfieless.gateway.tls import write_private

from .swarm_control import LABEL_CONTROL

LABEL_SEALED = "selfieless.sealed"   # what a config holds: "acme"
AAD = b"selfieless acme folder v1"   # binds a blob to its use
SECRETS_DIR = Path("/run/secrets")   # where Swarm mounts a task's secrets


def seal_secret_name(stack: str) -> str:
    return f"{stack}-seal"


def sealed_name(stack: str, key: bytes, files: dict[str, bytes]) -> str:
    digest = hmac.new(key, _plain(files), hashlib.sha256).hexdigest()[:16]
    return f"{stack}-acme-{digest}"


def _plain(files: dict[str, bytes]) -> bytes:
    return json.dumps({k: base64.b64encode(v).decode() for k, v in sorted(files.items())}).encode()


def seal(key: bytes, files: dict[str, bytes]) -> bytes:
    """relative path -> content, encrypted and authenticated under `key` (32 bytes)."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, _plain(files), AAD)


def unseal(key: bytes, blob: bytes) -> dict[str, bytes]:
    """What `seal` sealed; ValueError if the key is another or the blob was changed."""
    try:
        plain = AESGCM(key).decrypt(blob[:12], blob[12:], AAD)
    except (InvalidTag, ValueError):
        raise ValueError("the sealed ACME folder does not open with this key (another key, or changed)") from None
    return {k: base64.b64decode(v) for k, v in json.loads(plain).items()}


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> content), leftovers of a write (.tmp) aside."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".tmp")}


# --- I/O ---------------------------------------------------------------------------------------

def seal_secret(client: Any, stack: str) -> tuple[str, str]:
    """The stack's seal key as a secret, made once: (id, name), for the control plane's mounts."""
    name = seal_secret_name(stack)
    api = client.api
    found = [s for s in api.secrets(filters={"name": name}) if (s.get("Spec") or {}).get("Name") == name]
    if found:
        return found[0]["ID"], name
    return api.create_secret(name, os.urandom(32), labels={LABEL_CONTROL: stack})["ID"], name


def _sealed_configs(api: Any, stack: str) -> list[dict]:
    found = api.configs(filters={"label": f"{LABEL_SEALED}=acme"})
    return [c for c in found if ((c.get("Spec") or {}).get("Labels") or {}).get(LABEL_CONTROL) == stack]


class SealedFolder:
    """One control plane's ACME folder and its sealed copy in the swarm."""

    def __init__(self, client: Any, stack: str, key: bytes, folder: Path) -> None:
        self.client, self.stack, self.key, self.folder = client, stack, key, folder

    @classmethod
    def in_task(cls, client: Any, stack: str, folder: Path) -> SealedFolder | None:
        """The one of a control plane running as a Swarm service (the seal secret mounted in its
        task by `up --detach`); None elsewhere: a control plane on a machine of its own keeps its
        state directory there."""
        key_file = SECRETS_DIR / seal_secret_name(stack)
        return cls(client, stack, key_file.read_bytes(), folder) if key_file.exists() else None

    def save(self) -> str | None:
        """Keep the folder in the swarm (a config of its own unless one holds the same already),
        and remove the older ones. Returns the config's name (None: the folder is empty)."""
        files = folder_files(self.folder)
        if not files:
            return None
        api = self.client.api
        name = sealed_name(self.stack, self.key, files)
        existing = _sealed_configs(api, self.stack)
        if not any(c["Spec"]["Name"] == name for c in existing):
            api.create_config(name, seal(self.key, files), labels={LABEL_CONTROL: self.stack, LABEL_SEALED: "acme"})
        for c in existing:
            if c["Spec"]["Name"] != name:
                api.remove_config(c["ID"])
        return name

    def restore(self) -> int:
        """Write the newest saved folder's files into the folder (0600); the number written."""
        api = self.client.api
        configs = sorted(_sealed_configs(api, self.stack), key=lambda c: c.get("CreatedAt") or "")
        if not configs:
            return 0
        data = api.inspect_config(configs[-1]["ID"])["Spec"].get("Data") or ""
        files = unseal(self.key, base64.b64decode(data))
        root = self.folder.resolve()
        for rel, content in files.items():
            path = (root / rel).resolve()
            if root not in path.parents:   # a name that climbs out is no file of ours
                raise ValueError(f"the sealed ACME folder names a file outside it: {rel}")
            write_private(path, content)
        return len(files)
