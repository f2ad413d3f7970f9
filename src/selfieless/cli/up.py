"""`selfieless up`: run a stack in the foreground with its admin API, until Ctrl-C or `selfieless down`.

Order: load and adjust the stack (driver, gateway port, database URL), start (or re-attach to) the
gateway process and start the orchestrator (selfieless.orchestrator.assemble, run by
selfieless.orchestrator.runner), start the admin API on the same event loop, write
``<state dir>/admin.json`` so the other commands find us, show progress until every service has its
replicas ready, print where everything is, then wait. On SIGINT/SIGTERM or POST /api/shutdown:
drain and stop every replica, stop the gateway process and the admin API, remove admin.json.
After a kill -9 of `up` the gateway keeps serving; the next `up` re-attaches to it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from selfieless.orchestrator.stack import (
    BUNDLED_DOCKER_STACK,
    BUNDLED_SWARM_STACK,
    BUNDLED_STACK,
    Stack,
    StackError,
    load_stack,
    parse_stack,
)
from selfieless.gateway import new_event_loop
from selfieless.orchestrator.assemble import default_state_dir
from selfieless.orchestrator.port_shift import moved, offset, shift_ports
from selfieless.orchestrator.status import StackStatus

from .client import read_admin_file, remove_admin_file, write_admin_file


DEFAULT_ADMIN_PORT = 8090
# The exit status of an `up` that lost the control-plane lease (another control plane acts now).
LOST_LEASE = 3


class UpError(RuntimeError):
    """A problem `up` reports in one clear message (exit status 1)."""


@dataclass
class UpOptions:
    stack_path: Path | None = None
    driver: str | None = None
    port: int | None = None
    database_url: str | None = None
    admin_host: str = "127.0.0.1"
    admin_port: int | None = None     # None: DEFAULT_ADMIN_PORT, moved with --ports-from
    ports_from: int | None = None     # port_shift.py
    admin_token: str | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    ready_timeout: float = 120.0
    quiet_events: bool = False
    tls_cert: Path | None = None  # --tls-cert/--tls-key: the default certificate of gateway.tls
    tls_key: Path | None = None
    tls_port: int | None = None
    detach: bool = False        # --detach: deploy the control plane as a Swarm service and return
    in_service: bool = False    # running as that service: a stop (Swarm's SIGTERM) leaves the stack running
    # When the stop was asked for (signal or POST /api/shutdown), for the "stopped in" figure.
    stop_requested_at: float | None = None


def _is_db_var(name: str) -> bool:
    return name == "database_url" or name.endswith("_database_url")


def default_stack_path(driver: str | None) -> Path:
    """Without a STACK argument: the Docker deployment (database container, every service in a
    container) when the driver is or resolves to docker, else the local-process stack."""
    if driver == "docker":
        return BUNDLED_DOCKER_STACK
    if driver == "swarm":
        return BUNDLED_SWARM_STACK
    if driver in (None, "auto"):
        setting = load_stack(BUNDLED_STACK).driver if driver is None else "auto"
        from selfieless.orchestrator.drivers import resolve_driver_kind

        if resolve_driver_kind(setting) == "docker":
            return BUNDLED_DOCKER_STACK
    return BUNDLED_STACK


def prepare_stack(opts: UpOptions) -> Stack:
    """Load the stack file and apply the command-line overrides; re-validated as a whole."""
    return shift_ports(_with_overrides(opts), opts.ports_from)


def stack_file(opts: UpOptions) -> Path:
    return (opts.stack_path or default_stack_path(opts.driver)).resolve()


def admin_port(opts: UpOptions) -> int:
    """--admin-port, else 8090 moved by --ports-from's offset (port_shift.py)."""
    if opts.admin_port is not None:
        return opts.admin_port
    if opts.ports_from is None:
        return DEFAULT_ADMIN_PORT
    by = offset(load_stack(stack_file(opts)), opts.ports_from)
    return moved(DEFAULT_ADMIN_PORT, by, "the admin port (use --admin-port)", opts.ports_from)


def _with_overrides(opts: UpOptions) -> Stack:
    path = stack_file(opts)
    stack = load_stack(path)
    if opts.driver is None and opts.port is None and opts.database_url is None and opts.tls_cert is None \
            and opts.tls_key is None and opts.tls_port is None:
        return stack
    data: dict[str, Any] = stack.model_dump(mode="python")
    if opts.driver is not None:
        data["driver"] = opts.driver
    if opts.port is not None:
        data["gateway"]["port"] = opts.port
    if opts.tls_cert is not None or opts.tls_key is not None or opts.tls_port is not None:
        if (opts.tls_cert is None) != (opts.tls_key is None) and data["gateway"]["tls"] is None:
            raise UpError("--tls-cert and --tls-key: give both (the certificate and its key)")
        tls = data["gateway"]["tls"] or {}
        if opts.tls_cert is not None:
            tls["cert"] = str(opts.tls_cert.expanduser().resolve())
        if opts.tls_key is not None:
            tls["key"] = str(opts.tls_key.expanduser().resolve())
        if opts.tls_port is not None:
            tls["port"] = opts.tls_port
        data["gateway"]["tls"] = tls
    if opts.database_url is not None:
        hit = False
        for k in list(data["variables"]):
            if _is_db_var(k):
                data["variables"][k] = opts.database_url
                hit = True
        for svc in data["services"].values():
            for k, v in list(svc["variables"].items()):
                if _is_db_var(k) and "{" not in v:  # a literal URL, not a reference to a stack variable
                    svc["variables"][k] = opts.database_url
                    hit = True
        if not hit:
            raise UpError("--database-url: this stack has no `database_url` / `*_database_url` variable to override")
    return parse_stack(data, str(path) + " (with command-line overrides)")


def _bind_message(e: OSError, port: int, host: str) -> str:
    if e.errno == errno.EACCES:
        return (f"cannot listen on {host}:{port}: permission denied (ports below 1024 need root). "
                f"Try another port: selfieless up --port 8080")
    if e.errno == errno.EADDRINUSE:
        return f"cannot listen on {host}:{port}: the port is already in use. Pick another with --port"
    return f"cannot listen on {host}:{port}: {e.strerror or e}"


def progress_table(status: StackStatus) -> Table:
    t = Table(title=f"starting stack {status.stack} (driver {status.driver})", title_justify="left")
    t.add_column("service")
    t.add_column("ready / desired", justify="right")
    t.add_column("replicas")
    for name, svc in status.services.items():
        states = " ".join(f"{r.port}:{r.state}" for r in svc.replicas)
        pend = " ".join(f"{p.port}:pending" for p in svc.pending)
        mark = "[green]✓[/]" if svc.ready == svc.desired else "[yellow]…[/]"
        t.add_row(name, f"{svc.ready} / {svc.desired} {mark}", " ".join(x for x in (states, pend) if x))
    return t


def _host_for_url(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def cli_command() -> str:
    """How to type the CLI in another shell: `selfieless` when it is on the PATH (scripts/up, pip,
    pipx put it there), else the full path of the one running now."""
    if shutil.which("selfieless"):
        return "selfieless"
    argv0 = Path(sys.argv[0])
    if argv0.name == "selfieless" and argv0.exists():
        return str(argv0.resolve().parent / "selfieless")
    return f"{sys.executable} -m selfieless"


def _gateway_text(routes: dict[str, str]) -> str:
    parts = []
    if any(r == "/api/v1" or r.startswith("/api/") for r in routes):
        parts.append("the API (/api/v1/...)")
    if "/ui" in routes:
        parts.append("the web page (/ui/)")
    return " and ".join(parts) if parts else "routes " + ", ".join(sorted(routes))


def next_steps(gateway_url: str, admin_url: str, stack: Stack, cli: str = "selfieless") -> list[str]:
    routes = stack.routes()
    where = [("gateway", gateway_url, _gateway_text(routes)),
             ("dashboard", f"{admin_url}/", "replicas, health, requests/s, events, scale buttons"),
             ("metrics", f"{admin_url}/metrics", "Prometheus text format")]
    width = max(len(url) for _, url, _ in where) + 2
    lines = [f"[bold]{name:<9}[/]  {url:<{width}}{text}" for name, url, text in where]
    lines += ["", "try:"]
    if "/api/v1" in routes:
        lines += [
            f"  curl -i -X POST {gateway_url}/api/v1/categories -H 'content-type: application/json' -d '[\"Nature\"]'",
            f"  curl -i {gateway_url}/api/v1/categories",
        ]
    else:
        from selfieless.gateway.routing import split_key

        host, prefix = split_key(next(iter(routes), "/"))
        # A route for one host only answers a request naming that host.
        lines.append(f"  curl -i {gateway_url}{prefix}" + (f" -H 'Host: {host}'" if host and "*" not in host else ""))
    main_service = routes.get("/api/v1") or next(iter(stack.services), "SERVICE")
    hints = [("status", "replicas, health, requests"), ("events -f", "what the control plane does, and why"),
             (f"logs -f {main_service}", "every replica's requests and errors"), ("down", "or Ctrl-C here")]
    pad = max(len(c) for c, _ in hints) + 2
    lines += [f"  {cli} {c:<{pad}}# {why}" for c, why in hints]
    return lines


def _apply_to_running(opts: UpOptions, state_dir: Path, console: Console) -> int | None:
    """`up` of a stack that is already running under this state dir is an `apply` of it.
    None: what runs there is another stack (the caller reports it)."""
    from .client import AdminClient, AdminError, NoRunningUp

    try:
        client = AdminClient.discover(None, opts.admin_token, state_dir)
        if opts.stack_path is None:
            # No file named: the running stack's own file, not the bundled one (which would move
            # a custom stack onto the bundled ports).
            running_file = client.get("/api/stack").get("file")
            if running_file:
                opts.stack_path = Path(running_file)
        stack = prepare_stack(opts)
        if client.get("/api/status").get("stack") != stack.name:
            return None
        console.print(f"{stack.name} is already running: applying {stack_file(opts)} to it")
        # What this `up` was told on its command line wins over what the running one was told.
        body = {"stack": stack.model_dump(mode="json"), "port": opts.port, "driver": opts.driver,
                "ports_from": opts.ports_from}
        r = client.post("/api/apply", body, timeout=900)
    except NoRunningUp:
        return None
    except AdminError as e:
        for line in (e.body or {}).get("actions", []) if isinstance(e.body, dict) else []:
            console.print(f"  {line}")
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 1
    for line in r["actions"] or ["no change"]:
        console.print(f"  {line}")
    console.print(f"applied in {r['seconds']:.1f} s")
    return 0


async def run_up(opts: UpOptions, console: Console) -> int:
    """The steps of `up`, in order; each is a function below."""
    from selfieless.admin import check_exposure

    state_dir = opts.state_dir.expanduser()
    check_exposure(opts.admin_host, opts.admin_token)
    # Everything `up` and its replicas create (state, logs, SQLite databases with users' password
    # hashes, the admin file) is for the owner only.
    os.umask(0o077)
    code = _when_already_running(opts, state_dir, console)
    if code is not None:
        return code
    stack = prepare_stack(opts)
    runner, request_stop = _runner(opts, console)
    # In the control-plane service a SIGTERM is Swarm moving or updating the task, not a `down`.
    runner.detach = opts.in_service
    await _check_engine(opts, stack)
    lease = await _take_lease(runner, stack, console, request_stop)
    if lease is not None and lease.keeper.held is None:   # stopped while waiting for it
        await runner.stop()
        return 0
    system = await _start_system(runner, stack, state_dir, opts,
                                 acting=lease.keeper.acting if lease is not None else None)
    orch, gw = system.orchestrator, system.gateway
    if lease is not None:
        lease.events_to(orch.events)
    if system.gateway_attached:
        console.print(f"re-attached to the gateway still serving on port {gw.port} (pid {system.gateway_process.pid})")
    admin = await _start_admin(runner, system, state_dir, opts, request_stop)
    # The gateways on every node (swarm): the first node's address; any node's gateway serves.
    gateway_url = f"http://{getattr(gw, 'public_host', None) or _host_for_url(stack.gateway.host)}:{gw.port}"
    write_admin_file(state_dir, {
        "url": admin.url, "pid": os.getpid(), "stack": stack.name, "gateway_url": gateway_url,
        "token_required": bool(opts.admin_token), "started_at": time.time(), "driver": orch.driver.name,
        "gateway_pid": system.gateway_process.pid if system.gateway_process is not None else None,
    })
    unsubscribe = None
    # Run once the replicas and the gateway have stopped (the admin API answers until then).
    runner.after_stop(lambda: remove_admin_file(state_dir, os.getpid()))
    runner.after_stop(admin.stop)
    runner.after_stop(lambda: unsubscribe() if unsubscribe is not None else None)
    try:
        if not opts.quiet_events:
            unsubscribe = orch.events.subscribe(lambda ev: console.print(f"[dim]{ev}[/]", highlight=False))
        seconds = await _show_progress(orch, runner.stop_requested, opts.ready_timeout, console)
        if not runner.stop_requested.is_set():
            _print_started(orch, stack, seconds, opts.ready_timeout, console)
            for line in next_steps(gateway_url, admin.url, stack, cli_command()):
                console.print(line, highlight=False)
            await runner.stop_requested.wait()
    finally:
        console.print("[bold]stopping:[/] draining and stopping every replica...")
        if opts.stop_requested_at is None:
            opts.stop_requested_at = runner.requested_at or time.monotonic()
        await runner.stop()
    if lease is not None and lease.lost is not None:
        console.print(f"[yellow]lost the control-plane lease:[/] {lease.lost}. Stopped acting, and left the "
                      f"stack running for the control plane that holds it now", highlight=False)
        return LOST_LEASE
    return 0


class _Lease:
    """A swarm stack's control-plane lease as `up` holds it (orchestrator/lease_keeper.py)."""

    def __init__(self, keeper: Any, store: Any, console: Console) -> None:
        self.keeper = keeper
        self.store = store
        self.lost: str | None = None
        self.task: asyncio.Task | None = None
        self._emit = lambda reason: console.print(f"[dim]lease: {reason}[/]", highlight=False)
        keeper.on_event = lambda reason: self._emit(reason)

    def events_to(self, events: Any) -> None:
        """From now on the lease's events go to the orchestrator's log, the ones so far first (the
        console shows that log too)."""
        for reason in self.keeper.history:
            events.emit("lease", reason=reason)
        self._emit = lambda reason: events.emit("lease", reason=reason)

    async def finish(self, detached: bool) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.lost is not None:
            return
        if detached:
            await self.keeper.release()
        else:   # `down`: the stack is gone, and its lease record with it
            self.keeper.held = None
            await asyncio.to_thread(self.store.remove)


async def _take_lease(runner: Any, stack: Stack, console: Console, request_stop) -> _Lease | None:
    """With the swarm driver: wait until this control plane holds the stack's lease (only one acts
    at a time), then renew it in the background; losing it stops this one, leaving the stack (its
    services, the gateway) running. None for the other drivers."""
    if stack.driver != "swarm":
        return None
    import docker

    from selfieless.orchestrator.drivers.base import engine_address
    from selfieless.orchestrator.drivers.swarm_lease import SwarmLeaseStore
    from selfieless.orchestrator.lease import Terms
    from selfieless.orchestrator.lease_keeper import LeaseKeeper

    terms = Terms(stack.swarm.lease.seconds, stack.swarm.lease.margin)
    manager = engine_address(stack.swarm.manager)
    # A short timeout: a renewal that hangs is given up on (the keeper stops acting in time anyway).
    try:
        client = docker.DockerClient(base_url=manager, timeout=max(1, int(terms.renew_every)))
    except docker.errors.DockerException as e:
        raise UpError(f"cannot start stack {stack.name}: the swarm manager {manager} does not answer: {e}") from None
    store = SwarmLeaseStore(client, stack.name)
    lease = _Lease(LeaseKeeper(store, terms), store, console)
    runner.after_stop(lambda: asyncio.to_thread(client.close))
    if not await lease.keeper.acquire(runner.stop_requested):
        return lease

    def on_lost(reason: str) -> None:
        lease.lost = reason
        runner.detach = True    # leave the services and the gateway to the control plane that acts
        request_stop()

    lease.task = asyncio.create_task(lease.keeper.keep(on_lost), name="lease-keeper")
    runner.after_stop(lambda: lease.finish(runner.detach))
    return lease


def _when_already_running(opts: UpOptions, state_dir: Path, console: Console) -> int | None:
    """An `up` already running with this state dir: apply this stack to it (its exit code), or
    refuse when it runs another stack; None when none runs."""
    running = read_admin_file(state_dir)
    if running is None or running.get("pid") == os.getpid():
        return None
    code = _apply_to_running(opts, state_dir, console)
    if code is not None:
        return code
    raise UpError(f"a selfieless up is already running with this state dir (pid {running.get('pid')}, "
                  f"admin {running.get('url')}); stop it with `selfieless down` or use another --state-dir")


def _runner(opts: UpOptions, console: Console):
    """The Runner that owns SIGINT/SIGTERM, and the stop that POST /api/shutdown calls."""
    from selfieless.orchestrator.runner import Runner

    def on_signal(n: int) -> None:
        if n > 1:
            console.print("[yellow]still stopping: replicas are draining (drain timeouts bound this)[/]")

    runner = Runner(on_signal=on_signal)

    def request_stop() -> None:
        runner.request_stop()
        if opts.stop_requested_at is None:
            opts.stop_requested_at = runner.requested_at

    runner.install_signals()
    return runner, request_stop


async def _check_engine(opts: UpOptions, stack: Stack) -> None:
    if (opts.driver or stack.driver) == "docker":
        from selfieless.orchestrator.drivers.docker import docker_available

        why = await asyncio.to_thread(docker_available)
        if why is not None:
            raise UpError(f"the docker driver needs a Docker engine: {why}. Use --driver process to run "
                          f"the services as local processes")


async def _start_system(runner: Any, stack: Stack, state_dir: Path, opts: UpOptions, acting=None) -> Any:
    try:
        # The gateway runs as its own process: it keeps serving if this one dies, and the next
        # `up` re-attaches to it (and adopts the replicas).
        return await runner.start(stack, state_dir, driver_setting=opts.driver, gateway_process=True,
                                  acting=acting)
    except OSError as e:
        raise UpError(_bind_message(e, stack.gateway.port, stack.gateway.host)) from None
    except Exception as e:  # a driver that cannot start, ...: one clear line, not a traceback
        raise UpError(f"cannot start stack {stack.name}: {type(e).__name__}: {e}") from None


async def _start_admin(runner: Any, system: Any, state_dir: Path, opts: UpOptions, request_stop) -> Any:
    """The admin API on this event loop; a port it cannot bind stops the system again."""
    from selfieless.admin import AdminServer

    admin = AdminServer(system.orchestrator, system.gateway, host=opts.admin_host, port=admin_port(opts),
                        token=opts.admin_token, shutdown=request_stop, state_dir=str(state_dir),
                        up_overrides={"port": opts.port, "driver": opts.driver, "ports_from": opts.ports_from,
                                      "stack_file": str(stack_file(opts))})
    try:
        await admin.start()
    except OSError as e:
        await runner.stop()
        raise UpError("admin API: " + _bind_message(e, admin_port(opts), opts.admin_host).replace(
            "--port 8080", "--admin-port 8091").replace("with --port", "with --admin-port")) from None
    return admin


async def _show_progress(orch: Any, stop: asyncio.Event, ready_timeout: float, console: Console) -> float:
    """The live start-up table until every service is ready, a stop is asked for or `ready_timeout`
    passes; the seconds it showed."""
    t0 = time.monotonic()
    with Live(progress_table(orch.snapshot()), console=console, refresh_per_second=4, transient=True) as live:
        while not stop.is_set() and not orch.converged():
            if time.monotonic() - t0 > ready_timeout:
                break
            live.update(progress_table(orch.snapshot()))
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except asyncio.TimeoutError:
                pass
    return time.monotonic() - t0


def _print_started(orch: Any, stack: Stack, seconds: float, ready_timeout: float, console: Console) -> None:
    if orch.converged():
        ready = ", ".join(f"{n} {s.ready}/{s.desired}" for n, s in orch.snapshot().services.items())
        console.print(f"[green]stack {stack.name} is up[/] ({ready} ready, driver {orch.driver.name}, "
                      f"{seconds:.1f} s)")
    else:
        console.print(f"[yellow]not every replica is ready after {ready_timeout:g} s;[/] carrying on "
                      f"(see `selfieless status` and `selfieless events`)")
    if stack.gateway.tls is not None:
        console.print(f"HTTPS on port {stack.gateway.tls.port} (plain HTTP is redirected there, except "
                      f"services with redirect_https: false)")


def up_main(opts: UpOptions, console: Console) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if opts.detach:
        from .detached import deploy_detached

        try:
            return deploy_detached(opts, console)
        except (UpError, StackError) as e:
            console.print(f"[red]error:[/] {e}", highlight=False)
            return 1
    try:
        # uvloop, as the gateway: the control plane's probes and timers cost about half the CPU.
        with asyncio.Runner(loop_factory=new_event_loop) as loop:
            code = loop.run(run_up(opts, console))
        # Printed once the event loop and its threads are gone: from the Ctrl-C (or `selfieless
        # down`) to here is what the user waits for; only the interpreter's exit remains.
        if opts.stop_requested_at is not None:
            console.print(f"stopped in {time.monotonic() - opts.stop_requested_at:.1f} s")
        return code
    except (UpError, StackError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 1
    except ValueError as e:  # AdminConfigError, bad driver name...
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 1
