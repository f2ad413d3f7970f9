"""The process driver: each replica is a local child process.

- Each replica runs in its own session/process group (start_new_session), so a stop signals the
  whole group and nothing it spawned is left behind, and a Ctrl-C aimed at the orchestrator's
  terminal does not hit the replicas.
- stdout/stderr go to `<state_dir>/<stack>/logs/<service>-<port>.log` (log_files() lists them; a
  replacement on the same port appends to its predecessor's file).
- A JSON state file per replica (`<state_dir>/<stack>/replicas/<id>.json`: pid, port, service,
  start time, command line) lets a restarted orchestrator find and adopt its replicas. A pid is
  only trusted if the kernel's start time for it still matches (pids get reused).
- Exits are noticed at once through a pidfd per replica registered with the event loop (works for
  adopted processes too, which are not our children); without pidfd support we fall back to
  polling every 100 ms.
- Services with `preload: true` are forked from a preloader that imported the module once
  (preload.py), so a replacement does not wait for the imports; anything else is a plain child.
- Stop: SIGTERM (plus SIGCONT, so a SIGSTOPped replica can act on it) to the group, SIGKILL after
  the grace period.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..pids import pid_alive, start_ticks
from .base import Driver, DriverError, ExitEvent, LaunchSpec, ReplicaHandle
from .logtail import ended_itself, file_tail, with_tail
from .port_holder import PortTaken, holder_of
from .preload import Preloader, PreloadError, module_of

# Files a replica creates (SQLite databases, logs) are readable by the owner only.
PRIVATE_UMASK = 0o077


def private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.1
START_MARKER = "--- "  # begins the line written to a replica's log before each start
PRELOAD_TIMEOUT = 30.0  # importing the module in the preloader; on a loaded machine it can be slow


def port_in_use(port: int) -> bool:
    """True when something already listens on `port` (on any local address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR as the replica's server will use: connections lingering in TIME_WAIT from a
    # previous replica do not count, only a live listener does.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "exited"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class ProcessDriver(Driver):
    name = "process"

    def __init__(self, stack: str, state_dir: str | os.PathLike):
        super().__init__()
        self.stack = stack
        self.root = Path(state_dir) / stack
        self.state_path = self.root / "replicas"
        self.log_path = self.root / "logs"
        # Replica logs and databases may hold users' data and connection strings: owner only.
        for d in (self.root, self.state_path, self.log_path):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
        self._children: dict[int, subprocess.Popen] = {}      # pid -> Popen, for reaping our own
        self._watched: dict[str, asyncio.Future] = {}          # replica id -> resolves on exit
        self._handles: dict[str, ReplicaHandle] = {}
        self._closing = False
        self._preloaders: dict[str, Preloader] = {}             # module -> its preloader
        self._preloader_lock = asyncio.Lock()

    # --- interface ---------------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> ReplicaHandle:
        if not spec.command:
            raise DriverError(f"service {spec.service!r} has no command for the process driver")
        if port_in_use(spec.host_port):
            # Starting anyway would be worse than failing: the new replica would die on bind, and
            # its health probe would reach the stranger's server and put it in the pool.
            raise PortTaken(spec.host_port, holder_of(spec.host_port))
        cmd = list(spec.command)
        # "python" in a stack file means the interpreter running the orchestrator (its venv),
        # not whatever `python` happens to be first on PATH.
        if cmd[0] in ("python", "python3"):
            cmd[0] = sys.executable
        log_file = self.log_path / f"{spec.service}-{spec.host_port}.log"
        env = {**os.environ, **spec.environment}
        with open(log_file, "ab", opener=private_opener) as out:
            out.write(f"\n{START_MARKER}{time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(cmd)}\n".encode())
        pid = await self._fork_preloaded(spec, cmd, env, log_file) if spec.preload else None
        if pid is None:
            pid = self._spawn(cmd, env, log_file)
        handle = ReplicaHandle(
            id=f"{spec.service}-{spec.host_port}-{pid}", service=spec.service, port=spec.host_port,
            started_at=time.time(), pid=pid, detail=" ".join(cmd),
        )
        self._write_state(handle, cmd, str(log_file))
        self._handles[handle.id] = handle
        self._watch(handle)
        return handle

    async def stop(self, handle: ReplicaHandle, grace: float = 5.0) -> None:
        pid = handle.pid
        assert pid is not None
        done = self._watched.get(handle.id)
        if done is None and pid_alive(pid, self._recorded_ticks(handle)):
            done = self._watch(handle)
        if done is not None and not done.done():
            self._signal_group(pid, signal.SIGTERM)
            self._signal_group(pid, signal.SIGCONT)
            try:
                await asyncio.wait_for(asyncio.shield(done), grace)
            except asyncio.TimeoutError:
                self._signal_group(pid, signal.SIGKILL)
                try:
                    await asyncio.wait_for(asyncio.shield(done), 5.0)
                except asyncio.TimeoutError:
                    raise DriverError(f"{handle.id}: pid {pid} survived SIGKILL") from None
        # Anything the replica spawned into its group dies with it.
        self._signal_group(pid, signal.SIGKILL)
        self._forget(handle)

    async def list(self) -> list[ReplicaHandle]:
        found = []
        for f in sorted(self.state_path.glob("*.json")):
            try:
                st = json.loads(f.read_text())
            except (OSError, ValueError):
                f.unlink(missing_ok=True)
                continue
            if not pid_alive(st["pid"], st.get("proc_start_ticks")):
                f.unlink(missing_ok=True)  # stale: the process is gone (or its pid was reused)
                continue
            h = self._handles.get(st["id"]) or ReplicaHandle(
                id=st["id"], service=st["service"], port=st["port"], started_at=st["started_at"],
                pid=st["pid"], detail=" ".join(st.get("cmdline", [])),
            )
            found.append(h)
        return found

    async def adopt(self, handle: ReplicaHandle) -> None:
        self._handles[handle.id] = handle
        if handle.id not in self._watched:
            self._watch(handle)

    async def close(self) -> None:
        self._closing = True
        for preloader in self._preloaders.values():
            await asyncio.to_thread(preloader.close)
        self._preloaders.clear()
        loop = asyncio.get_running_loop()
        for h in list(self._handles.values()):
            fd = getattr(self._watched.get(h.id), "_pidfd", None)
            if fd is not None:
                loop.remove_reader(fd)
                os.close(fd)
        self._watched.clear()

    def log_file(self, service: str, port: int) -> Path:
        return self.log_path / f"{service}-{port}.log"

    def log_files(self, service: str) -> dict[int, Path]:
        """Every log file of `service` (one per port: a replacement appends to its predecessor's)."""
        out = {}
        for f in self.log_path.glob(f"{service}-*.log"):
            rest = f.stem[len(service) + 1:]
            if rest.isdigit():
                out[int(rest)] = f
        return out

    # --- internals ---------------------------------------------------------------------------

    def _spawn(self, cmd: list[str], env: dict[str, str], log_file: Path) -> int:
        with open(log_file, "ab") as out:
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True, close_fds=True, umask=PRIVATE_UMASK)
            except OSError as e:
                raise DriverError(f"cannot start {cmd[0]!r}: {e.strerror}") from e
        self._children[proc.pid] = proc
        return proc.pid

    async def _fork_preloaded(self, spec: LaunchSpec, cmd: list[str], env: dict[str, str],
                              log_file: Path) -> int | None:
        """A replica forked from the module's preloader; None (start it normally) when that fails."""
        target = module_of(cmd)
        if target is None:
            log.warning("%s: preload needs a `python -m MODULE` command; starting normally", spec.service)
            return None
        module, args = target
        try:
            async with self._preloader_lock:
                preloader = self._preloaders.get(module)
                if preloader is None or not preloader.alive:
                    preloader = Preloader(cmd[0], module, str(self.log_path / f"preload-{module}.log"))
                    await asyncio.to_thread(preloader.wait_ready, PRELOAD_TIMEOUT)
                    self._preloaders[module] = preloader
            return await asyncio.to_thread(preloader.spawn, args, env, str(log_file))
        except PreloadError as e:
            log.warning("%s: %s; starting normally", spec.service, e)
            self._preloaders.pop(module, None)
            return None

    def _state_file(self, handle: ReplicaHandle) -> Path:
        return self.state_path / f"{handle.id}.json"

    def _write_state(self, handle: ReplicaHandle, cmd: list[str], log: str) -> None:
        data = {
            "id": handle.id, "stack": self.stack, "service": handle.service, "port": handle.port,
            "pid": handle.pid, "started_at": handle.started_at,
            "proc_start_ticks": start_ticks(handle.pid), "cmdline": cmd, "log": log,
        }
        tmp = self._state_file(handle).with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self._state_file(handle))  # atomic: a reader never sees half a file

    def _recorded_ticks(self, handle: ReplicaHandle) -> int | None:
        try:
            return json.loads(self._state_file(handle).read_text()).get("proc_start_ticks")
        except (OSError, ValueError):
            return None

    def _forget(self, handle: ReplicaHandle) -> None:
        self._state_file(handle).unlink(missing_ok=True)
        self._handles.pop(handle.id, None)
        self._watched.pop(handle.id, None)

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)  # start_new_session made the replica its group's leader: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self, pid: int) -> int | None:
        for preloader in self._preloaders.values():
            if preloader.owns(pid):
                return preloader.reap(pid)
        proc = self._children.pop(pid, None)
        if proc is not None:
            try:
                return proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                return None
        try:  # adopted, but maybe still our child (same interpreter restarted the orchestrator)
            wpid, status = os.waitpid(pid, os.WNOHANG)
            return os.waitstatus_to_exitcode(status) if wpid else None
        except ChildProcessError:
            return None

    def _watch(self, handle: ReplicaHandle) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        self._watched[handle.id] = done
        pid = handle.pid
        assert pid is not None

        def exited() -> None:
            if done.done():
                return
            code = self._reap(pid)
            done.set_result(code)
            self._state_file(handle).unlink(missing_ok=True)
            if not self._closing:
                tail = file_tail(self.log_file(handle.service, handle.port), START_MARKER) if ended_itself(code) else ""
                self._report_exit(ExitEvent(handle.id, handle.service, handle.port, code,
                                            with_tail(_describe(code), tail)))

        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            loop.call_soon(exited)
            return done
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            done._pidfd = fd  # type: ignore[attr-defined]

            def readable() -> None:
                loop.remove_reader(fd)
                os.close(fd)
                done._pidfd = None  # type: ignore[attr-defined]
                exited()

            loop.add_reader(fd, readable)
        else:
            ticks = start_ticks(pid)

            async def poll() -> None:
                while pid_alive(pid, ticks) and not (pid in self._children and self._children[pid].poll() is not None):
                    await asyncio.sleep(POLL_INTERVAL)
                exited()

            done._poller = loop.create_task(poll())  # type: ignore[attr-defined]
        return done
