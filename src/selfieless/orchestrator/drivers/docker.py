"""The docker driver: each replica is a container, through the Docker Engine API (docker SDK 7).

- Containers carry labels `selfieless.stack`, `selfieless.service`, `selfieless.port`; that is
  how a restarted orchestrator finds (adopts) them. Names are `<stack>-<service>-<port>-<suffix>`,
  so `docker ps | grep acts` lists exactly the acts replicas.
- The container port is published on 0.0.0.0:<host port> (a dependency's on 127.0.0.1 only).
- A stack `network` is a user-defined network every container joins (so they reach a dependency
  such as `selfieless-db` by name); it is created on first use and removed by `cleanup()`.
  Named volumes are created with the stack's label and kept until `remove_volumes()`.
- Stop = `docker stop` with the grace period, then remove; grace 0 (replacing a broken replica)
  removes with force at once, which kills it. A container that is already dead has freed its host
  port: stop() returns at once and the removal finishes in the background, so its replacement
  starts without waiting for it (a start that still finds the port taken retries briefly).
- Exits come from the engine's event stream (`die` events for this stack's label), read in a
  thread because the SDK is blocking, and handed to the event loop. A container reported dead is
  not inspected again when it is stopped: its removal goes straight to the background.
- A container starts with START_CPU_BOOST times the normal CPU weight (cpu_shares) and gets the
  normal weight back once it passes its first probe (ready()). Under load, a replacement waits
  mostly for the Python app to boot in its new container; with an equal weight that boot gets one
  share among every busy replica's, and takes 2-3 times longer than on an idle machine. (On
  cgroup v2 the runtime converts shares to cpu.weight; the ratio between this stack's containers
  is the same, but with some runtime versions 1024 shares is a lower weight than the default.)
  A start-first rollout's new replica gets no boost (LaunchSpec.start_boost): every old replica
  still serves, so nothing waits for it, and a boosted boot would take the CPU from them. (On the
  shared 2-core test machine benchmarks/rollout.py --driver docker put p99 during / before a
  rollout at 1.6x and 2.9x with the boost, 1.5-2.7x without it over 4 runs: noise dominates.)
All blocking SDK calls run in worker threads so the event loop never stalls on the engine.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from typing import Any

from .base import DriverError, ExitEvent, LaunchSpec, PortDriver, ReplicaHandle, engine_address
from .logtail import ended_itself, tail_text, with_tail
from .port_holder import PortTaken, holder_of

LABEL_STACK = "selfieless.stack"
LABEL_SERVICE = "selfieless.service"
LABEL_PORT = "selfieless.port"
# How long a start retries while the engine still holds the host port of a container that just died.
PORT_RETRY_SECONDS = 2.0
# CPU weight of a running container (the kernel's default), and the factor a starting one gets.
CPU_SHARES = 1024
START_CPU_BOOST = 8
_PORT_TAKEN = ("port is already allocated", "address already in use")
_TRANSIENT = ("port is already allocated", "address already in use", "is already in use by container",
              "already in progress")


def docker_available(timeout: float = 2.0) -> str | None:
    """None when a Docker engine answers; otherwise why not (for `driver: auto` and test skips)."""
    try:
        import docker
    except ImportError:
        return "the docker SDK is not installed (pip install docker)"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        client.close()
        return None
    except Exception as e:  # the SDK raises many kinds (DockerException, requests errors...)
        return f"no Docker engine answers at {engine_address()} ({engine_problem(e)})"


# What the socket error behind the SDK's nested exception text means, in a few words.
_PROBLEMS = (
    ("FileNotFoundError", "no such socket: is dockerd running?"),
    ("No such file or directory", "no such socket: is dockerd running?"),
    ("Connection refused", "connection refused: is dockerd running?"),
    ("PermissionError", "permission denied: run as root or join the docker group"),
    ("Permission denied", "permission denied: run as root or join the docker group"),
    ("timed out", "no answer in time"),
    ("Read timed out", "no answer in time"),
)


def engine_problem(exc: BaseException) -> str:
    """The SDK's `Error while fetching server API version: ('Connection aborted.',
    FileNotFoundError(2, ...))` as something a person can act on."""
    text = f"{type(exc).__name__}: {exc}"
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        text += f" {type(seen).__name__}: {seen}"
        seen = seen.__cause__ or seen.__context__
    for needle, meaning in _PROBLEMS:
        if needle in text:
            return meaning
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


class DockerDriver(PortDriver):
    name = "docker"

    def __init__(self, stack: str, client: Any = None):
        super().__init__()
        import docker

        self.stack = stack
        self.client = client or docker.from_env()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: threading.Thread | None = None
        self._event_stream: Any = None
        self._known: dict[str, ReplicaHandle] = {}   # container id -> handle
        self._stopping: set[str] = set()
        # Starts run in parallel worker threads; creating the network twice would make two networks
        # of the same name (docker allows that), so creation is serialised.
        self._setup_lock = threading.Lock()
        self._ready_setup: set[str] = set()
        self._removals: set[asyncio.Future] = set()   # background removals of dead containers
        # Short ids (not names: a dependency's name is reused) of containers the event stream
        # reported dead; written by its thread.
        self._dead: set[str] = set()

    def _handle(self, c: Any) -> ReplicaHandle:
        labels = c.labels or {}
        created = c.attrs.get("Created", "")
        return ReplicaHandle(
            id=c.name, service=labels.get(LABEL_SERVICE, "?"), port=int(labels.get(LABEL_PORT, 0)),
            started_at=_parse_ts(created), detail=c.id[:12],
        )

    async def start(self, spec: LaunchSpec) -> ReplicaHandle:
        if not spec.image:
            raise DriverError(f"service {spec.service!r} has no image for the docker driver")
        self._ensure_watcher()
        name = spec.name or f"{self.stack}-{spec.service}-{spec.host_port}-{secrets.token_hex(2)}"

        def run() -> Any:
            import docker.errors

            extra: dict[str, Any] = {}
            if spec.network:
                self._ensure_network(spec.network)
                extra["network"] = spec.network
            if spec.extra_hosts:
                extra["extra_hosts"] = dict(spec.extra_hosts)
            if spec.volumes:
                for vol in spec.volumes:
                    self._ensure_volume(vol)
                extra["volumes"] = {vol: {"bind": path, "mode": "rw"} for vol, path in spec.volumes.items()}
            deadline = time.monotonic() + PORT_RETRY_SECONDS
            recreated = False
            while True:
                try:
                    if spec.name:
                        # A fixed name: a leftover container (of an earlier run, or the one this
                        # replaces, still being removed) would block it.
                        try:
                            self.client.containers.get(name).remove(force=True)
                        except docker.errors.NotFound:
                            pass
                    return self._run(spec, name, extra)
                except docker.errors.APIError as e:
                    if spec.network and "network" in str(e) and "not found" in str(e) and not recreated:
                        # Removed behind our back: make it again (once).
                        recreated = True
                        with self._setup_lock:
                            self._ready_setup.discard(spec.network)
                        self._ensure_network(spec.network)
                        continue
                    # The previous container on this port died, but the engine may still be
                    # releasing its port mapping (or its name): retry for a moment.
                    if not any(m in str(e) for m in _TRANSIENT) or time.monotonic() > deadline:
                        raise
                    try:
                        self.client.containers.get(name).remove(force=True)  # a half-made one
                    except docker.errors.APIError:
                        pass
                    time.sleep(0.05)

        try:
            c = await asyncio.to_thread(run)
        except Exception as e:
            if any(m in str(e) for m in _PORT_TAKEN):
                # Still taken after the retries: not a container of ours releasing it.
                raise PortTaken(spec.host_port, holder_of(spec.host_port),
                                f"cannot start {spec.image} on port {spec.host_port}: {e}") from e
            raise DriverError(f"cannot start {spec.image} on port {spec.host_port}: {e}") from e
        h = self._handle(c)
        self._known[c.id] = h
        return h

    def _run(self, spec: LaunchSpec, name: str, extra: dict[str, Any]) -> Any:
        return self.client.containers.run(
            spec.image,
            # The stack's `command` is the process driver's way to run the service; a
            # container runs its image's own entrypoint, listening on container_port.
            name=name,
            detach=True,
            labels={LABEL_STACK: self.stack, LABEL_SERVICE: spec.service, LABEL_PORT: str(spec.host_port)},
            ports={f"{spec.container_port}/tcp": (spec.host_ip, spec.host_port)},
            environment=spec.environment,
            cpu_shares=CPU_SHARES * (START_CPU_BOOST if spec.start_boost else 1),
            **extra,
        )

    async def ready(self, handle: ReplicaHandle) -> None:
        import docker.errors

        def unboost() -> None:
            try:
                self.client.api.update_container(handle.id, cpu_shares=CPU_SHARES)
            except docker.errors.NotFound:
                pass  # gone already

        try:
            await asyncio.to_thread(unboost)
        except docker.errors.APIError:
            pass  # e.g. exiting meanwhile: a boost on a container that is going away is harmless

    async def stop(self, handle: ReplicaHandle, grace: float = 5.0) -> None:
        import docker.errors

        self._stopping.add(handle.id)

        def remove(c: Any) -> None:
            try:
                c.remove(force=True)  # kills it first if it still runs
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                if "already in progress" not in str(e):
                    raise

        def stop_and_remove() -> Any:
            try:
                c = self.client.containers.get(handle.id)
            except docker.errors.NotFound:
                return None
            if c.status in ("exited", "dead"):
                return c  # its port is free already; removed in the background
            if grace > 0 and c.status == "running":
                try:
                    c.stop(timeout=max(1, int(round(grace))))
                except docker.errors.APIError:
                    pass  # already stopped or dying; removal below is what matters
            remove(c)
            return None

        def find_and_remove() -> None:
            try:
                remove(self.client.containers.get(handle.id))
            except docker.errors.NotFound:
                pass

        try:
            if handle.detail in self._dead:
                # The engine said it died, so its port is free: nothing to wait for. (Asking the
                # engine first would wait for it to finish cleaning up after the exit.)
                self._dead.discard(handle.detail)
                fut = asyncio.ensure_future(asyncio.to_thread(find_and_remove))
                self._removals.add(fut)
                fut.add_done_callback(self._removals.discard)
                return
            dead = await asyncio.to_thread(stop_and_remove)
            if dead is not None:
                fut = asyncio.ensure_future(asyncio.to_thread(remove, dead))
                self._removals.add(fut)
                fut.add_done_callback(self._removals.discard)
        finally:
            self._stopping.discard(handle.id)
            self._known = {k: v for k, v in self._known.items() if v.id != handle.id}

    async def list(self) -> list[ReplicaHandle]:
        def find() -> list[Any]:
            return self.client.containers.list(all=True, filters={"label": f"{LABEL_STACK}={self.stack}"})

        out = []
        for c in await asyncio.to_thread(find):
            if c.status in ("exited", "dead", "created"):
                # Gone replicas: remove so they do not pile up; the reconciler starts fresh ones.
                await asyncio.to_thread(c.remove, force=True)
                continue
            h = self._handle(c)
            self._known[c.id] = h
            out.append(h)
        return out

    async def image_ids(self, images: dict[str, str]) -> tuple[dict[str, list[str]], dict[str, str | None]]:
        """What a rebuilt image (same name, new id) is detected by: the id each running container
        was created from (an image name is resolved once, at creation) against what the name
        resolves to now."""
        import docker.errors

        def look() -> tuple[dict[str, list[str]], dict[str, str | None]]:
            running: dict[str, list[str]] = {}
            for c in self.client.api.containers(filters={"label": f"{LABEL_STACK}={self.stack}"}):
                service = (c.get("Labels") or {}).get(LABEL_SERVICE)
                if service in images:
                    running.setdefault(service, []).append(c.get("ImageID"))
            current: dict[str, str | None] = {}
            for service, image in images.items():
                try:
                    current[service] = self.client.api.inspect_image(image)["Id"]
                except docker.errors.ImageNotFound:
                    current[service] = None   # the start will say so; no content to compare
            return running, current

        return await asyncio.to_thread(look)

    async def adopt(self, handle: ReplicaHandle) -> None:
        self._ensure_watcher()

    async def cleanup(self) -> None:
        if self._removals:  # a dead container still attached would keep the network in use
            await asyncio.wait(list(self._removals), timeout=30)

        def remove_networks() -> None:
            with self._setup_lock:
                self._ready_setup.clear()
            for net in self.client.networks.list(filters={"label": f"{LABEL_STACK}={self.stack}"}):
                try:
                    net.remove()
                except Exception:
                    pass  # still in use by a container someone else attached: leave it

        await asyncio.to_thread(remove_networks)

    def _ensure_network(self, name: str) -> None:
        with self._setup_lock:
            if name in self._ready_setup:
                return
            if not self.client.networks.list(names=[name]):
                self.client.networks.create(name, driver="bridge", check_duplicate=True,
                                            labels={LABEL_STACK: self.stack})
            self._ready_setup.add(name)

    def _ensure_volume(self, name: str) -> None:
        import docker.errors

        with self._setup_lock:
            try:
                self.client.volumes.get(name)
            except docker.errors.NotFound:
                self.client.volumes.create(name, labels={LABEL_STACK: self.stack})

    async def close(self) -> None:
        if self._removals:
            await asyncio.wait(list(self._removals), timeout=30)
        stream, self._event_stream = self._event_stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass

    # The engine's event stream is blocking: one daemon thread reads it and hands each `die`
    # event to the event loop with call_soon_threadsafe.
    def _ensure_watcher(self) -> None:
        if self._watcher is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._event_stream = self.client.events(
            decode=True, filters={"label": f"{LABEL_STACK}={self.stack}", "event": "die", "type": "container"}
        )
        self._watcher = threading.Thread(target=self._read_events, name="docker-events", daemon=True)
        self._watcher.start()

    def _read_events(self) -> None:
        stream = self._event_stream
        try:
            for ev in stream:
                attrs = (ev.get("Actor") or {}).get("Attributes") or {}
                name = attrs.get("name", "")
                if name in self._stopping:
                    continue
                cid = str((ev.get("Actor") or {}).get("ID") or ev.get("id") or "")
                self._dead.add(cid[:12])
                code = attrs.get("exitCode")
                event = ExitEvent(
                    replica_id=name, service=attrs.get(LABEL_SERVICE, "?"), port=int(attrs.get(LABEL_PORT, 0) or 0),
                    exit_code=int(code) if code is not None else None,
                    reason=with_tail(f"container died (exit code {code})",
                                     self._log_tail(cid) if ended_itself(_int(code)) else ""),
                )
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._report_exit, event)
        except Exception:
            pass  # stream closed by close(), or the engine went away


    def _log_tail(self, container_id: str) -> str:
        """The dead container's last log lines (it is still there: we remove it when we stop it)."""
        try:
            raw = self.client.containers.get(container_id).logs(tail=20)
        except Exception:
            return ""
        return tail_text(raw.decode("utf-8", "replace"))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def remove_volumes(stack: str, client: Any = None) -> list[str]:
    """Remove the named volumes the driver created for `stack` (its data); returns their names."""
    import docker

    client = client or docker.from_env()
    removed = []
    for vol in client.volumes.list(filters={"label": f"{LABEL_STACK}={stack}"}):
        vol.remove(force=True)
        removed.append(vol.name)
    return removed


def _parse_ts(value: str) -> float:
    # Docker gives RFC 3339 with nanoseconds; seconds precision is plenty for status output.
    try:
        return time.mktime(time.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    except (ValueError, TypeError):
        return time.time()
