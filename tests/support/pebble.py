"""A real ACME CA for the tests: Debian's `pebble` (Let's Encrypt's test server), with
`pebble-challtestsrv` as its DNS server answering every name with 127.0.0.1, so that test host
names resolve to the gateway under test. Its listener has a certificate from a throwaway CA
(``ca_bundle``); its own root, which signs what it issues, is at ``<mgmt>/roots/0``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trustme

from support.ports import free_port_range

NEEDS_PEBBLE = "needs Debian's pebble and pebble-challtestsrv (ACME test CA): run `scripts/provision pebble`"


def _wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def run_pebble(folder: Path, http_port: int | None = None, address: str = "127.0.0.1", listen: str = "127.0.0.1"):
    """Pebble validating HTTP-01 on ``http_port`` (default: a free port, for the gateway to take)
    of ``address`` (what its DNS answers for every name), its API on ``listen`` (the lab's
    control planes reach it at the host's lab address); yields {directory, ca_bundle, mgmt, gw_port, log}. Skips when pebble is not installed."""
    if not (shutil.which("pebble") and shutil.which("pebble-challtestsrv")):
        pytest.skip(NEEDS_PEBBLE)
    ca = trustme.CA()
    leaf = ca.issue_cert(*dict.fromkeys(("localhost", "127.0.0.1", listen)))
    leaf.cert_chain_pems[0].write_to_path(str(folder / "pebble.crt"))
    leaf.private_key_pem.write_to_path(str(folder / "pebble.key"))
    ca.cert_pem.write_to_path(str(folder / "pebble-ca.pem"))
    acme_port, mgmt_port, dns_port, dns_mgmt, tls_alpn = free_port_range(5)
    gw_port = http_port or free_port_range(1)[0]
    (folder / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"{listen}:{acme_port}", "managementListenAddress": f"{listen}:{mgmt_port}",
        "certificate": str(folder / "pebble.crt"), "privateKey": str(folder / "pebble.key"),
        "httpPort": gw_port, "tlsPort": tls_alpn, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    log = open(folder / "pebble.log", "wb")
    dns = subprocess.Popen(["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "",
                            "-tlsalpn01", "", "-management", f"127.0.0.1:{dns_mgmt}", "-defaultIPv4", address,
                            "-defaultIPv6", ""], stdout=log, stderr=subprocess.STDOUT)
    # No sleeping before validations, and no nonces rejected on purpose: the tests are about us.
    # Valid authorizations are always reused, as Let's Encrypt does for 30 days: a renewal then
    # meets authorizations already valid (pebble's default reuses half of them, at random).
    ca_proc = subprocess.Popen(["pebble", "-config", str(folder / "pebble.json"),
                                "-dnsserver", f"127.0.0.1:{dns_port}"], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
                                    "PEBBLE_AUTHZREUSE": "100"})
    try:
        _wait_port(listen, acme_port, 30)
        _wait_port(listen, mgmt_port, 30)
        yield {"directory": f"https://{listen}:{acme_port}/dir", "ca_bundle": str(folder / "pebble-ca.pem"),
               "mgmt": f"https://{listen}:{mgmt_port}", "gw_port": gw_port, "log": folder / "pebble.log"}
    finally:
        for p in (ca_proc, dns):
            p.terminate()
            p.wait(10)
        log.close()
