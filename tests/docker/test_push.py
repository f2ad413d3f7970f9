"""`scripts/docker-prepare --push REGISTRY` against a real registry (Debian's docker-registry,
started here on a free loopback port with its own storage): every image lands in the registry,
and what a node pulls back is the image that was built."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from support.ports import free_port
from support.processes import wait_until

REPO = Path(__file__).resolve().parents[2]
IMAGES = ("users:latest", "acts:latest", "web:latest", "selfieless/mariadb:latest")


@pytest.fixture
def registry(tmp_path):
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("needs Debian's docker-registry (scripts/provision swarm-lab installs it)")
    if os.geteuid() != 0:
        pytest.skip("scripts/docker-prepare needs root")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {tmp_path}/data}}}}\n"
                      f"http: {{addr: '127.0.0.1:{port}'}}\n")
    with open(tmp_path / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, (tmp_path / "registry.log").read_text()
        try:
            return httpx.get(f"{url}/v2/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, 30, 0.1, what="the registry to answer")
        yield f"127.0.0.1:{port}", url
    finally:
        proc.terminate()
        proc.wait(10)
        for img in IMAGES:
            subprocess.run(["docker", "rmi", f"127.0.0.1:{port}/{img}"], capture_output=True)


def _image_id(ref: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", ref], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_push_fills_the_registry_with_the_built_images(registry):
    name, url = registry
    r = subprocess.run([str(REPO / "scripts" / "docker-prepare"), "--push", name], capture_output=True, text=True,
                       timeout=540)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{name}/acts:latest" in r.stdout
    catalog = httpx.get(f"{url}/v2/_catalog", timeout=5).json()["repositories"]
    assert sorted(catalog) == ["acts", "selfieless/mariadb", "users", "web"]
    for repo in catalog:
        assert httpx.get(f"{url}/v2/{repo}/tags/list", timeout=5).json()["tags"] == ["latest"]
    # What a node pulls is what was built: drop the local tag, pull it back, compare the ids.
    subprocess.run(["docker", "rmi", f"{name}/acts:latest"], capture_output=True, check=True)
    pulled = subprocess.run(["docker", "pull", "-q", f"{name}/acts:latest"], capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stderr
    assert _image_id(f"{name}/acts:latest") == _image_id("acts:latest")


def test_push_needs_a_registry_name():
    r = subprocess.run([str(REPO / "scripts" / "docker-prepare"), "--push"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "--push needs a registry" in r.stderr
