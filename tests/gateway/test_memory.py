"""Bodies stream: a 16 MiB upload to a slow replica, or download by a slow client, does not make
the gateway (a subprocess here, so its memory is its own) hold the body."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gw_support import ThreadBackend, free_port, vm_kb, wait_port

MiB = 1024 * 1024
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def gateway_proc():
    backend = ThreadBackend("M")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfieless.gateway", "--port", str(port),
         "--route", f"/api/v1=127.0.0.1:{backend.port}"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(10)
        backend.stop()


def test_16mib_upload_and_download_bounded_memory(gateway_proc):
    proc, port = gateway_proc
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    piece = os.urandom(64 * 1024)
    total = 16 * MiB

    def body(size=total):
        for _ in range(size // len(piece)):
            yield piece

    # Warm up every path measured below with 1 MiB bodies, so that what is measured is what a
    # body's size costs, not the first use of the code (imports, parser and buffer allocations).
    conn.request("POST", "/api/v1/upload", body=body(MiB), headers={"Content-Length": str(MiB)})
    assert json.loads(conn.getresponse().read())["body_len"] == MiB
    conn.request("PUT", "/api/v1/upload", body=body(MiB))
    assert json.loads(conn.getresponse().read())["body_len"] == MiB
    conn.request("GET", f"/api/v1/big?n={MiB}")
    assert len(conn.getresponse().read()) == MiB
    base = vm_kb(proc.pid, "VmHWM")

    # Content-Length upload to a replica that reads slowly.
    conn.request("POST", "/api/v1/upload?delay=0.01", body=body(),
                 headers={"Content-Length": str(total)})
    resp = conn.getresponse()
    result = json.loads(resp.read())
    assert resp.status == 200 and result["body_len"] == total
    h = hashlib.sha256()
    for p in body():
        h.update(p)
    assert result["body_sha"] == h.hexdigest()
    upload_growth = vm_kb(proc.pid, "VmHWM") - base

    # Chunked upload (re-chunked by the gateway) of the same size.
    conn.request("PUT", "/api/v1/upload?delay=0.001", body=body())
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["body_len"] == total

    # Download by a client that reads slowly.
    conn.request("GET", f"/api/v1/big?n={total}")
    resp = conn.getresponse()
    got = 0
    while True:
        chunk = resp.read(256 * 1024)
        if not chunk:
            break
        got += len(chunk)
        time.sleep(0.004)
    assert got == total
    growth = vm_kb(proc.pid, "VmHWM") - base
    print("HWM growth KiB: upload", upload_growth, "total", growth)
    # The README's claim: a 16 MiB upload grows the gateway by a few hundred KiB. Measured with
    # this warm-up: 12-288 KiB for the upload, up to about 360 KiB for all three on a busy machine
    # (allocator noise, seen in CI); a gateway that holds even one extra MiB of body fails both.
    assert upload_growth < 640, f"gateway peak RSS grew {upload_growth} KiB on a 16 MiB upload"
    assert growth < 896, f"gateway peak RSS grew {growth} KiB while streaming 16 MiB bodies"
