"""The README as a new user follows it: its commands, in its order, in a fresh copy of the project.

`scripts/up --port 8080` creates the copy's own .venv, puts `selfieless` on the PATH and runs the
bundled stack; then each command of the README's "in a second shell" block runs through bash,
finding `selfieless` on the PATH as a user's shell would. The README's banner block and sample
stack are checked against what is printed and what is bundled.

So that it can run beside a stack on the README's ports, it moves every port the way the README
says a user does: `--port` for the gateway's 8080 and `--ports-from` for the rest (8000 -> a free
block; the admin port 8090 moves with it), and reads the README's commands and output with the
same substitution. The full run installs the project into a new virtualenv (from the package
index pip is configured with) and waits for a 120 s autoscaling window: about four minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support.ports import free_port, free_port_range, port_is_free

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_GATEWAY, README_LOWEST = 8080, 8000


class Ports:
    """Where this run puts what the README says is on 8080, 8090 and 8000-8209."""

    def __init__(self) -> None:
        self.block = free_port_range(210)   # the bundled stack's 8000-8209 moved here, whole
        self.gateway = free_port()
        self.base = self.block[0]

    def port(self, readme_port: int) -> int:
        return self.gateway if readme_port == README_GATEWAY else readme_port - README_LOWEST + self.base

    def text(self, readme: str) -> str:
        """README text with each of its ports (8080, 8000-8209) replaced by this run's."""
        return re.sub(r"\b(8080|8[0-2]\d\d)\b", lambda m: str(self.port(int(m.group(1)))), readme)

    def taken(self) -> list[int]:
        return [p for p in (self.gateway, *self.block) if not port_is_free(p)]


def code_blocks(lang: str = "") -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", README.read_text(), re.S | re.M)


def block_after(marker: str) -> str:
    text = README.read_text()
    start = text.index(marker)
    return re.search(r"^```\w*\n(.*?)^```$", text[start:], re.S | re.M).group(1)


def commands(block: str) -> list[str]:
    """Lines of a sh block, without their trailing `# comment`."""
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def test_readme_sample_stack_is_the_bundled_one():
    from selfieless.orchestrator.stack import BUNDLED_STACK

    sample = yaml.safe_load(block_after("reproduces the\ncourse deployment"))
    bundled = yaml.safe_load(BUNDLED_STACK.read_text())
    assert sample["driver"] == bundled["driver"]
    assert sample["services"]["acts"] == bundled["services"]["acts"]
    for key in ("name", "variables"):
        assert sample[key] == bundled[key], key
    assert sample["gateway"] == bundled["gateway"]


def _env(tmp: Path) -> dict[str, str]:
    """A user's shell: no venv active, no /usr/local/bin (this machine's), a personal bin dir on PATH."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    venv_bins = {str(Path(p) / "bin") for p in {os.environ.get("VIRTUAL_ENV", ""), os.path.realpath(sys.prefix)} if p}
    path = [str(bin_dir)] + [d for d in os.environ["PATH"].split(":")
                             if d and d not in ("/usr/local/bin", "/usr/local/sbin") and d not in venv_bins
                             and not d.endswith("/.venv/bin")]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SELFIELESS_") and k not in ("VIRTUAL_ENV", "COLUMNS", "LINES", "PYTHONPATH")}
    env.update(PATH=":".join(path), SELFIELESS_BIN_DIR=str(bin_dir), SELFIELESS_STATE_DIR=str(tmp / "state"),
               NO_COLOR="1")
    return env


def _copy_project(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _wait_for(path: Path, needle: str, timeout: float, proc: subprocess.Popen | None = None) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before printing {needle!r}:\n{text}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {needle!r} after {timeout} s:\n{text}")
        time.sleep(0.25)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_commands_in_order_in_a_fresh_clone(tmp_path):
    from selfieless.cli.main import replica_prefix

    ports = Ports()
    assert ports.taken() == [], ports.taken()
    if shutil.which("curl") is None:
        pytest.skip("curl is missing: apt-get install -y curl")
    clone = tmp_path / "clone"
    _copy_project(clone)
    env = _env(tmp_path)
    assert shutil.which("selfieless", path=env["PATH"]) is None

    (up_line,) = [c for c in commands(block_after("## Two commands")) if c.startswith("scripts/up")]
    assert up_line == "scripts/up --port 8080"
    up_out = tmp_path / "up.out"
    with open(up_out, "wb") as sink:
        up = subprocess.Popen(["bash", "-c", f"{ports.text(up_line)} --ports-from {ports.base}"], cwd=clone, env=env, stdout=sink, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        text = _wait_for(up_out, " is up", 600, up)
        # `selfieless` is now on the PATH, as the script said.
        assert f"linked {tmp_path}/bin/selfieless -> {clone}/.venv/bin/selfieless" in text
        assert shutil.which("selfieless", path=env["PATH"]) == str(tmp_path / "bin" / "selfieless")
        # The README's banner block is what was printed, line for line, and nothing is wrapped.
        assert "installing the project into .venv" in text
        for line in block_after("`up` prints where everything is").splitlines():
            assert ports.text(line) in text, (line, text)
        assert "  selfieless status " in text and "  selfieless logs -f acts " in text
        assert (f"curl -i -X POST http://127.0.0.1:{ports.gateway}/api/v1/categories -H 'content-type: application/json' "
                "-d '[\"Nature\"]'\n") in text
        assert "Warning" not in text and "Traceback" not in text

        steps = [ports.text(c) for c in commands(block_after("these commands, in this order"))]
        assert [s.split()[0] for s in steps] == ["selfieless", "curl", "selfieless", "selfieless", "selfieless",
                                                 "selfieless"]
        results: dict[str, str] = {}
        for step in steps:
            if step.endswith(" -f") or " -f " in step:
                continue  # followed below, each for as long as its promise takes
            if step == "selfieless down":
                break
            r = subprocess.run(["bash", "-c", step], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=120)
            assert r.returncode == 0, (step, r.stdout, r.stderr)
            results[step] = r.stdout
        status = results["selfieless status"]
        assert "acts" in status and "pid" in status and "window 120s/20" in status
        assert "HTTP/1.1 201" in results[steps[1]]
        load = results[steps[2]]
        assert "200: 20" in load, load

        # `selfieless events -f`: the promised second acts replica, when the window ends.
        events_out = tmp_path / "events.out"
        with open(events_out, "wb") as sink:
            events = subprocess.Popen(["bash", "-c", steps[3]], cwd=tmp_path, env=env, stdout=sink,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            text = _wait_for(events_out, f"ready     acts/acts-{ports.port(8001)}-", 200)
        finally:
            os.killpg(events.pid, signal.SIGINT)
            events.wait(10)
        scaled = [line for line in text.splitlines() if " scaled    acts: " in line]
        assert len(scaled) == 1 and re.search(r"scaled acts 1→2: 2\d requests in the window ending ", scaled[0]), text
        print("\n" + text)

        # `selfieless logs -f acts`: request lines from every replica, each with its prefix, no warning.
        logs_out = tmp_path / "logs.out"
        prefix = [replica_prefix("acts", ports.port(p)) for p in (8000, 8001)]
        with open(logs_out, "wb") as sink:
            logs = subprocess.Popen(["bash", "-c", steps[4]], cwd=tmp_path, env=env, stdout=sink,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(logs_out, prefix[0], 30)
            for _ in range(6):  # round-robin over the two replicas
                subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{ports.gateway}/api/v1/categories"],
                               check=True, timeout=30)
            _wait_for(logs_out, prefix[1], 30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                text = logs_out.read_text(errors="replace")
                lines = text.splitlines()
                if all(any(line.startswith(p) and " GET /api/v1/categories 200 " in line
                           for line in lines) for p in prefix):
                    break
                time.sleep(0.25)
        finally:
            os.killpg(logs.pid, signal.SIGINT)
            logs.wait(10)
        for p in prefix:
            assert any(line.startswith(p) and " GET /api/v1/categories 200 " in line for line in lines), (p, text)
        assert any(" POST /api/v1/categories 201 " in line for line in lines), text
        assert "Warning" not in text and "found in sys.modules" not in text, text

        # `selfieless down`: everything stops.
        r = subprocess.run(["bash", "-c", steps[5]], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0 and "stopped" in r.stdout, (r.stdout, r.stderr)
        assert up.wait(60) == 0
        text = up_out.read_text()
        assert re.search(r"stopped in \d+\.\d s\n", text) and "Traceback" not in text, text
        assert ports.taken() == []
        # A second start installs nothing: the project is installed and pyproject.toml unchanged.
        again = subprocess.run(["bash", "scripts/up", "--help"], cwd=clone, env=env, capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 0 and "installing" not in again.stdout, again.stdout + again.stderr
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
        for record in (tmp_path / "state").glob("*/replicas/*.json"):  # replicas left behind, if any
            try:
                os.killpg(int(yaml.safe_load(record.read_text())["pid"]), signal.SIGKILL)
            except (OSError, ValueError, KeyError, TypeError):
                pass


def test_the_readme_points_only_at_files_in_the_project():
    # A clone has no ../shared/: every relative link and path the README names is in the project.
    text = README.read_text()
    assert "../" not in text
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), target


def test_docs_api_describes_every_route_the_services_serve(tmp_path):
    from selfieless.apps.acts.app import create_app as acts_app
    from selfieless.apps.common.settings import ServiceSettings
    from selfieless.apps.users.app import create_app as users_app

    doc = (ROOT / "docs" / "api.md").read_text()
    assert "[`docs/api.md`](docs/api.md)" in README.read_text()
    for create in (acts_app, users_app):
        spec = create(ServiceSettings(database_url=f"sqlite:///{tmp_path}/x.db")).openapi()
        for path, operations in spec["paths"].items():
            for method in operations:
                assert f"`{method.upper()} {path}" in doc, (method, path)
