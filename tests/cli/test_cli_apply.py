"""`up` of a stack that is already running applies the changed file to it (a real `selfieless up`
subprocess, process driver): live settings restart nothing, a changed environment rolls acts, and
the rollout history is still there after `up` restarts."""

import yaml

from cli_support import UpProcess, replica_pids, run_cli, write_test_stack
from support.ports import free_port_range


def test_up_again_applies_the_changed_file_and_the_history_survives_a_restart(tmp_path):
    path = write_test_stack(tmp_path / "stack.yaml", free_port_range(4), free_port_range(1), probe_interval=0.3)
    up = UpProcess(tmp_path, path)
    try:
        state = up.wait_ready(90)
        sd = ["--state-dir", str(up.state_dir)]
        acts_before, users_before = replica_pids(state, "acts"), replica_pids(state, "users")

        data = yaml.safe_load(path.read_text())
        data["gateway"]["port"] = up.port   # what the running `up` was started with (--port)
        data["services"]["acts"].setdefault("environment", {})["ROLLOUT_VERSION"] = "2"  # rolls acts
        data["services"]["users"]["health"]["interval"] = 0.4                  # live
        data["services"]["acts"]["update"] = {"monitor": "0.5s"}               # live
        path.write_text(yaml.safe_dump(data, sort_keys=False))

        dry = run_cli("apply", str(path), "--dry-run", *sd)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "roll    acts: environment changed" in dry.stdout
        assert "update  users: health (live, no restart)" in dry.stdout

        second = run_cli("up", str(path), "--port", str(up.port), *sd, timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"already running: applying {path.resolve()} to it" in second.stdout
        assert "roll    acts: environment changed" in second.stdout and "applied in" in second.stdout

        state = up.status()
        assert state["converged"]
        acts_after = replica_pids(state, "acts")
        assert len(acts_after) == len(acts_before) and not set(acts_after.values()) & set(acts_before.values())
        assert replica_pids(state, "users") == users_before          # a live change restarted nothing
        history = run_cli("rollout", "history", "acts", *sd)
        assert history.returncode == 0 and "complete" in history.stdout and "environment changed" in history.stdout

        again = run_cli("apply", str(path), *sd, timeout=120)
        assert again.returncode == 0 and "no change" in again.stdout, again.stdout + again.stderr
        # Without a file, `apply` and a second `up` mean the running stack's own file, never the
        # bundled one (which would move this stack onto the bundled ports).
        same = run_cli("apply", *sd, timeout=120)
        assert same.returncode == 0, same.stdout + same.stderr
        assert f"applying {path.resolve()} (the file the running stack was started from)" in same.stdout
        assert "no change" in same.stdout
        same = run_cli("up", "--port", str(up.port), *sd, timeout=120)
        assert same.returncode == 0 and f"applying {path.resolve()} to it" in same.stdout, same.stdout + same.stderr
        assert "no change" in same.stdout

    finally:
        up.stop()
    # `up` restarted on the same state dir (tmp_path/state): the rollout history is still there.
    restarted = UpProcess(tmp_path, path)
    try:
        restarted.wait_ready(90)
        history = run_cli("rollout", "history", "acts", "--admin", restarted.admin)
        assert history.returncode == 0, history.stdout + history.stderr
        assert "complete" in history.stdout and "environment changed" in history.stdout
    finally:
        restarted.stop()


def test_apply_keeps_the_port_up_was_given_unless_told_another(tmp_path):
    path = write_test_stack(tmp_path / "stack.yaml", free_port_range(4), free_port_range(1), probe_interval=0.3)
    up = UpProcess(tmp_path, path)   # `up FILE --port P`, the file naming another port
    try:
        up.wait_ready(90)
        sd = ["--state-dir", str(up.state_dir)]
        assert yaml.safe_load(path.read_text())["gateway"]["port"] != up.port
        same = run_cli("apply", str(path), *sd, timeout=120)
        assert same.returncode == 0, same.stdout + same.stderr
        assert "no change" in same.stdout
        other = run_cli("apply", str(path), "--port", str(up.port + 1), *sd, timeout=120)
        assert other.returncode != 0
        assert "gateway.port" in other.stdout + other.stderr
        explicit = run_cli("apply", str(path), "--port", str(up.port), *sd, timeout=120)
        assert explicit.returncode == 0 and "no change" in explicit.stdout, explicit.stdout + explicit.stderr
    finally:
        up.stop()
