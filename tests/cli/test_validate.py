"""`selfieless validate`, `--help` everywhere, and `up` refusing bad settings before starting anything."""

import os
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from selfieless.cli.main import app
from selfieless.cli.up import _bind_message
from selfieless.orchestrator.stack import BUNDLED_STACK

runner = CliRunner()
COMMANDS = ["up", "down", "status", "events", "scale", "logs", "validate", "load"]


def test_validate_bundled_stack_ok():
    r = runner.invoke(app, ["validate", str(BUNDLED_STACK)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert r.output.startswith("ok: stack 'selfieless'")
    assert "acts" in r.output and "8000-8009" in r.output and "window 120 s" in r.output


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d["services"]["acts"]["replicas"].update(max=20),
     "services.acts.replicas.max: must be <= the number of host_ports (10 in 8000-8009)"),
    (lambda d: d["services"]["acts"].update(helth={}), "services.acts.helth: unknown key; did you mean 'health'?"),
    (lambda d: d["services"]["users"].update(host_ports="8005-8006"),
     "services.users.host_ports: port 8005 is also used by service 'acts'"),
    (lambda d: d["services"]["acts"]["health"].update(interval="soon"), "services.acts.health.interval: not a duration"),
])
def test_validate_names_the_wrong_field(tmp_path, mutate, expected):
    data = yaml.safe_load(BUNDLED_STACK.read_text())
    mutate(data)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    r = runner.invoke(app, ["validate", str(f)], env={"COLUMNS": "300"})
    assert r.exit_code == 1
    assert f"invalid {f}" in r.output
    assert expected in r.output


def test_validate_bad_yaml_and_missing_file(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("name: x\nservices: [\n")
    r = runner.invoke(app, ["validate", str(f)], env={"COLUMNS": "300"})
    assert r.exit_code == 1 and "not valid YAML" in r.output and "line " in r.output
    r = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")], env={"COLUMNS": "300"})
    assert r.exit_code == 1 and "cannot read" in r.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd):
    r = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "Usage: selfieless " + cmd in r.output.replace("root ", "")


def test_module_entry_points():
    for mod in ("selfieless.cli.main", "selfieless.cli"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "Commands" in r.stdout and "validate" in r.stdout


def test_up_refuses_exposed_admin_without_token(tmp_path):
    r = runner.invoke(app, ["up", "--admin-host", "0.0.0.0", "--port", "0", "--state-dir", str(tmp_path)],
                      env={"COLUMNS": "300", "SELFIELESS_ADMIN_TOKEN": ""})
    assert r.exit_code == 1
    assert "refusing to serve the admin API on 0.0.0.0 without a token" in r.output
    assert not (tmp_path / "admin.json").exists()


def test_up_bad_database_override_and_driver(tmp_path):
    stack = tmp_path / "s.yaml"
    data = yaml.safe_load(BUNDLED_STACK.read_text())
    data["variables"] = {}
    for s in data["services"].values():
        s["variables"] = {}
        s["command"] = [a.replace("{database_url}", "sqlite:///{state_dir}/x.db") for a in s["command"]]
    stack.write_text(yaml.safe_dump(data))
    r = runner.invoke(app, ["up", str(stack), "--port", "0", "--database-url", "sqlite:///x.db",
                            "--state-dir", str(tmp_path)], env={"COLUMNS": "300"})
    assert r.exit_code == 1 and "no `database_url`" in r.output
    r = runner.invoke(app, ["up", "--driver", "kubernetes"], env={"COLUMNS": "300"})
    assert r.exit_code == 1 and "--driver must be process, docker, swarm or auto" in r.output


def test_bind_errors_say_what_to_do():
    import errno

    msg = _bind_message(PermissionError(errno.EACCES, "Permission denied"), 80, "0.0.0.0")
    assert "permission denied" in msg and "--port 8080" in msg
    msg = _bind_message(OSError(errno.EADDRINUSE, "Address in use"), 8080, "0.0.0.0")
    assert "already in use" in msg


def test_commands_without_a_running_up_say_so(tmp_path):
    for cmd in (["status"], ["down"], ["events"], ["scale", "acts", "2"], ["logs", "acts"]):
        r = runner.invoke(app, [*cmd, "--state-dir", str(tmp_path)], env={"COLUMNS": "300", "SELFIELESS_ADMIN_URL": ""})
        assert r.exit_code == 1, (cmd, r.output)
        assert "no running `selfieless up` found" in r.output


def test_output_to_a_pipe_is_never_wrapped(tmp_path):
    # A long error and a long summary line, printed to a pipe with no $COLUMNS: each stays one line.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    data = yaml.safe_load(BUNDLED_STACK.read_text())
    data["name"] = "a-stack-name-long-enough-to-push-the-summary-line-well-past-eighty-columns"
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(data))
    r = subprocess.run([sys.executable, "-m", "selfieless", "validate", str(good)], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("ok: stack 'a-stack-name") and first.endswith("3 services") and len(first) > 80
    data["services"]["acts"]["health"]["interval_between_probes_of_every_replica"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    r = subprocess.run([sys.executable, "-m", "selfieless", "validate", str(bad)], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 1
    assert "  services.acts.health.interval_between_probes_of_every_replica: unknown key\n" in r.stderr
