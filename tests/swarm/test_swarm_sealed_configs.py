"""The control plane's ACME folder kept in the swarm (drivers/swarm_sealed.py) against the lab's
real manager: saved as a sealed config that every manager reads and whose data shows nothing of
the folder, restored into an empty folder (a control plane on another manager), saved again
unchanged as the same config, changed as a new one that replaces the old, and removed by `down
--swarm`'s clean-up with the seal secret. A second or two on a lab that is up."""

from __future__ import annotations

import base64
import random

from selfieless.orchestrator.drivers import swarm_control
from selfieless.orchestrator.drivers.swarm_sealed import LABEL_SEALED, SealedFolder, seal_secret

STACK = f"slseal{random.randrange(10**5)}"


def _sealed(client) -> list[dict]:
    return [c for c in client.api.configs(filters={"label": f"{LABEL_SEALED}=acme"})
            if c["Spec"]["Labels"].get(swarm_control.LABEL_CONTROL) == STACK]


def test_the_acme_folder_is_kept_sealed_in_the_swarm_and_restored_elsewhere(lab, tmp_path):
    client = lab.client()
    try:
        secret_id, secret_name = seal_secret(client, STACK)
        assert seal_secret(client, STACK) == (secret_id, secret_name)   # made once
        key = b"k" * 32   # the task reads the secret's content; the API never shows it
        here = tmp_path / "here" / "acme"
        (here / "d1" / "api.test").mkdir(parents=True)
        (here / "d1" / "account.key").write_bytes(b"ACCOUNT KEY")
        (here / "d1" / "api.test" / "key.pem").write_bytes(b"HOST KEY")
        first = SealedFolder(client, STACK, key, here).save()
        [config] = _sealed(client)
        assert config["Spec"]["Name"] == first
        data = base64.b64decode(client.api.inspect_config(config["ID"])["Spec"]["Data"])
        assert b"KEY" not in data and b"api.test" not in data

        there = tmp_path / "there" / "acme"
        assert SealedFolder(client, STACK, key, there).restore() == 2
        assert (there / "d1" / "account.key").read_bytes() == b"ACCOUNT KEY"
        assert (there / "d1" / "api.test" / "key.pem").stat().st_mode & 0o777 == 0o600

        assert SealedFolder(client, STACK, key, there).save() == first and len(_sealed(client)) == 1
        (there / "d1" / "api.test" / "cert.pem").write_bytes(b"CERT")
        second = SealedFolder(client, STACK, key, there).save()
        assert second != first and [c["Spec"]["Name"] for c in _sealed(client)] == [second]
    finally:
        swarm_control.remove_configs(client, STACK)
        left = _sealed(client) + [s for s in client.api.secrets() if s["Spec"]["Name"].startswith(f"{STACK}-")]
        client.close()
    assert left == []
