"""Preloading for the process driver: fork replicas from a process that has imported the app already.

Starting a Python service spends most of its time importing (FastAPI, SQLAlchemy, uvicorn: about
0.5 s here, several times that on a loaded machine), and a replacement replica is not serving
until that is done. A preloader is a small server process per module that imports the module once
and then forks a replica for each request, the way gunicorn's `--preload` does. The child calls
setsid(), points stdout/stderr at its log file, takes the replica's environment and argv, and runs
the module as `__main__`, so from the outside it is the same process `python -m MODULE ...` would
have been.

Only for services that opt in (`preload: true` in the stack file): the module is imported before
any replica exists, so it must not do work at import time, and it reads its settings when it runs,
not when it is imported (the replica's environment is applied after the fork).

The preloader keeps its children as zombies until the driver asks it to reap one, so the driver
still learns each replica's exit status ("killed by SIGKILL") even though the replica is not its
own child. It exits when the driver closes the control socket; its children live on (they are in
their own sessions) and init reaps them.

Protocol: one JSON object per line each way over a socketpair.
    -> {"op": "spawn", "argv": [...], "env": {...}, "cwd": "...", "log": "..."}   <- {"pid": N}
    -> {"op": "reap", "pid": N}                                                    <- {"code": C|null}
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import traceback

READY = {"ready": True}


# --- the preloader process ----------------------------------------------------------------------

def _run_child(module: str, request: dict) -> None:
    """In the forked child: become the replica. Never returns."""
    code = 1
    try:
        os.setsid()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.chdir(request.get("cwd") or os.getcwd())
        os.environ.clear()
        os.environ.update(request["env"])
        # argv as `python -m MODULE args...` would see it; run_module sets argv[0] itself.
        sys.argv = [module, *request["argv"]]
        # The preloader imported the code run_module is about to execute as __main__ (for a package,
        # MODULE.__main__). Left in sys.modules, runpy warns that running it again "may result in
        # unpredictable behaviour"; dropped, it is executed once more as __main__, and what it imports
        # (the app, FastAPI, SQLAlchemy...) stays imported, which is the point of preloading.
        sys.modules.pop(_main_module_of(module), None)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _main_module_of(module: str) -> str:
    """The module `python -m MODULE` executes: MODULE.__main__ for a package, else MODULE."""
    imported = sys.modules.get(module)
    return f"{module}.__main__" if hasattr(imported, "__path__") else module


def _reap(pid: int) -> int | None:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)


def serve(module: str, fd: int) -> None:
    """The preloader's main loop: import `module`, then fork a replica per spawn request."""
    sock = socket.socket(fileno=fd)
    try:
        from setproctitle import setproctitle

        setproctitle(f"selfieless: preloader {module}")
    except ImportError:
        pass
    imported = importlib.import_module(module)
    if hasattr(imported, "__path__"):  # a package: `python -m pkg` runs pkg.__main__
        importlib.import_module(f"{module}.__main__")
    reader, writer = sock.makefile("rb"), sock.makefile("wb")
    _send(writer, READY)
    for line in reader:
        request = json.loads(line)
        if request["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                reader.close()
                writer.close()
                sock.close()
                _run_child(module, request)
            reply = {"pid": pid}
        elif request["op"] == "reap":
            reply = {"code": _reap(request["pid"])}
        else:
            reply = {"error": f"unknown op {request['op']!r}"}
        _send(writer, reply)


def _send(writer, message: dict) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    writer.flush()


# --- the driver's side ---------------------------------------------------------------------------

class PreloadError(RuntimeError):
    pass


class Preloader:
    """The driver's handle on one preloader process (one per module)."""

    def __init__(self, python: str, module: str, log_path: str):
        self.module = module
        self._lock = threading.Lock()  # requests and replies must not interleave
        self._sock, theirs = socket.socketpair()
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [python, "-m", __name__, module, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                umask=0o077)  # its forks (the replicas) create databases and logs: owner only
        theirs.close()
        self._reader, self._writer = self._sock.makefile("rb"), self._sock.makefile("wb")
        self._children: set[int] = set()

    def wait_loaded(self, timeout: float) -> None:
        """Blocks until the module is imported (the first line the preloader sends)."""
        self._sock.settimeout(timeout)
        try:
            line = self._reader.readline()
        except OSError as exc:
            raise PreloadError(f"preloader for {self.module} did not start: {exc}") from None
        if json.loads(line or b"null") != READY:
            raise PreloadError(f"preloader for {self.module} failed to import it (see its log)")
        self._sock.settimeout(10.0)

    def _ask(self, request: dict) -> dict:
        with self._lock:
            try:
                _send(self._writer, request)
                line = self._reader.readline()
            except OSError as exc:
                raise PreloadError(f"preloader for {self.module}: {exc}") from None
        if not line:
            raise PreloadError(f"preloader for {self.module} exited")
        return json.loads(line)

    def spawn(self, argv: list[str], env: dict[str, str], log: str, cwd: str | None = None) -> int:
        reply = self._ask({"op": "spawn", "argv": argv, "env": env, "log": log, "cwd": cwd or os.getcwd()})
        if "pid" not in reply:
            raise PreloadError(reply.get("error", "spawn failed"))
        self._children.add(reply["pid"])
        return reply["pid"]

    def owns(self, pid: int) -> bool:
        return pid in self._children

    def reap(self, pid: int) -> int | None:
        """Exit status of a replica forked by this preloader (which must have exited)."""
        self._children.discard(pid)
        try:
            return self._ask({"op": "reap", "pid": pid}).get("code")
        except PreloadError:
            return None

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        """The preloader exits on EOF; the replicas it forked keep running."""
        for f in (self._reader, self._writer, self._sock):
            try:
                f.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def module_of(command: list[str]) -> tuple[str, list[str]] | None:
    """`[python, -m, MODULE, args...]` -> (MODULE, args); None for any other command."""
    if len(command) >= 3 and command[1] == "-m" and os.path.basename(command[0]).startswith("python"):
        return command[2], command[3:]
    return None


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
