"""The `selfieless` command line.

    selfieless up [STACK]            run a stack (the bundled SelfieLessActs one by default)
    selfieless status | events | apply | rollout | scale | logs | down
                                     talk to a running `up` through its admin API
    selfieless validate STACK        check a stack file
    selfieless load URL --rps R --duration S
                                     open-loop load generator

Every command has --help. Commands that talk to a running `up` find it through
``<state dir>/admin.json``, ``--admin URL`` or ``$SELFIELESS_ADMIN_URL`` (token:
``--admin-token`` / ``$SELFIELESS_ADMIN_TOKEN``); ``--admin swarm://STACK`` finds the control plane
of a stack deployed with ``up --driver swarm --detach`` through the manager at ``$DOCKER_HOST``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from .client import AdminClient, AdminError, NoRunningUp, default_state_dir

if TYPE_CHECKING:  # the CLI reads status over HTTP: it does not import the orchestrator to start
    from selfieless.orchestrator.status import ServiceStatus, WindowStatus

app = typer.Typer(
    name="selfieless",
    help="A small orchestrator for HTTP microservices, and the SelfieLessActs app it runs by default.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

# Width of output that is not a terminal: wide enough that nothing is ever wrapped (a table is only
# as wide as its contents; rich would otherwise assume 80 columns for a file or a pipe).
UNWRAPPED_WIDTH = 10_000


def make_console(stderr: bool = False) -> Console:
    """A rich console that wraps only on a terminal: written to a file or a pipe, a suggested
    command or an event line stays on one line (an explicit $COLUMNS still wins)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS"):
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=UNWRAPPED_WIDTH)


console = make_console()
err = make_console(stderr=True)

# Options shared by the commands that talk to a running `up`.
AdminOpt = typer.Option(None, "--admin", envvar="SELFIELESS_ADMIN_URL", metavar="URL",
                        help="Admin API of the running `up` (default: found via <state dir>/admin.json); "
                        "swarm://STACK: the control plane of `up --detach`, found through $DOCKER_HOST.")
TokenOpt = typer.Option(None, "--admin-token", envvar="SELFIELESS_ADMIN_TOKEN",
                        help="Bearer token of the admin API, if it has one.")
StateOpt = typer.Option(None, "--state-dir", envvar="SELFIELESS_STATE_DIR",
                        help="State directory of the `up` to talk to (default ~/.local/state/selfieless).")


def _client(admin: str | None, token: str | None, state_dir: Path | None) -> AdminClient:
    try:
        return AdminClient.discover(admin, token, state_dir)
    except NoRunningUp as e:
        _fail(str(e))


def _fail(msg: str, code: int = 1):
    err.print(f"[red]error:[/] {msg}")
    raise typer.Exit(code)


def _call(fn, *a, **kw) -> Any:
    try:
        return fn(*a, **kw)
    except NoRunningUp as e:
        _fail(str(e))
    except AdminError as e:
        _fail(str(e))


# ------------------------------------------------------------------------------------------------
# up / down


@app.command()
def up(
    stack: Optional[Path] = typer.Argument(None, help="Stack file (default: the bundled SelfieLessActs stack)."),
    driver: Optional[str] = typer.Option(None, "--driver", help="process, docker, swarm or auto (default: the stack's; "
                                         "auto = docker when an engine answers, else process)."),
    port: Optional[int] = typer.Option(None, "--port", help="Gateway port (the bundled stack says 80, which needs "
                                       "root; e.g. --port 8080)."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help="Database URL for every service "
                                               "(overrides the stack's *database_url variables)."),
    admin_host: str = typer.Option("127.0.0.1", "--admin-host", help="Admin API address; anything but "
                                   "loopback requires --admin-token."),
    admin_port: Optional[int] = typer.Option(None, "--admin-port", help="Admin API / dashboard port (default "
                                             "8090, moved with --ports-from)."),
    ports_from: Optional[int] = typer.Option(None, "--ports-from", metavar="N",
                                             help="Move every replica port range and dependency port, and the "
                                             "admin port, by one offset so the lowest is N (bundled stack: "
                                             "acts N..N+9, admin N+90, users N+100.., web N+200..)."),
    admin_token: Optional[str] = typer.Option(None, "--admin-token", envvar="SELFIELESS_ADMIN_TOKEN",
                                              help="Require 'Authorization: Bearer <token>' on the admin API."),
    state_dir: Optional[Path] = typer.Option(None, "--state-dir", envvar="SELFIELESS_STATE_DIR",
                                             help="Where replica state, logs and SQLite files go "
                                             "(default ~/.local/state/selfieless)."),
    ready_timeout: float = typer.Option(120.0, "--ready-timeout", help="How long to show start-up progress "
                                        "before carrying on anyway (s)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print control-plane events as they happen."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", metavar="FILE", help="Serve HTTPS with this "
                                            "certificate (PEM chain) as the default one (gateway.tls.cert)."),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", metavar="FILE", help="The key of --tls-cert."),
    tls_port: Optional[int] = typer.Option(None, "--tls-port", help="HTTPS port (default 443, or gateway.tls.port)."),
    detach: bool = typer.Option(False, "--detach", help="With --driver swarm: run the control plane as a "
                                "one-replica Swarm service on a manager (moved to another manager when its "
                                "node dies) and return; `selfieless down --swarm STACK` removes it all."),
    in_service: bool = typer.Option(False, "--in-service", hidden=True,
                                    help="Set by --detach's service: a stop leaves the stack running."),
):
    """Run a stack in the foreground: gateway, replicas, admin API and dashboard. Ctrl-C stops it cleanly."""
    from .up import UpOptions, up_main

    if driver is not None and driver not in ("process", "docker", "swarm", "auto"):
        _fail(f"--driver must be process, docker, swarm or auto, not {driver!r}")
    token_file = os.environ.get("SELFIELESS_ADMIN_TOKEN_FILE")
    if not admin_token and token_file:
        # How --detach's task gets it: a Swarm secret's file (the Docker secrets convention).
        try:
            admin_token = Path(token_file).read_text().strip()
        except OSError as e:
            _fail(f"$SELFIELESS_ADMIN_TOKEN_FILE: cannot read {token_file}: {e.strerror}")
    opts = UpOptions(stack_path=stack, driver=driver, port=port, database_url=database_url, admin_host=admin_host,
                     admin_port=admin_port, ports_from=ports_from, admin_token=admin_token or None,
                     state_dir=state_dir or default_state_dir(), ready_timeout=ready_timeout, quiet_events=quiet,
                     tls_cert=tls_cert, tls_key=tls_key, tls_port=tls_port, detach=detach, in_service=in_service)
    raise typer.Exit(up_main(opts, console))


@app.command()
def down(
    admin: Optional[str] = AdminOpt, admin_token: Optional[str] = TokenOpt, state_dir: Optional[Path] = StateOpt,
    timeout: float = typer.Option(120.0, "--timeout", help="How long to wait for it to finish stopping (s)."),
    volumes: bool = typer.Option(False, "--volumes", help="Also remove the stack's data volumes (the database), "
                                 "which are kept by default; with the swarm driver on every node."),
    swarm: Optional[str] = typer.Option(None, "--swarm", metavar="STACK", help="A stack started with `up --driver "
                                        "swarm --detach`: remove its control-plane service, then its services "
                                        "(DOCKER_HOST: a manager)."),
):
    """Ask the running `selfieless up` to drain and stop everything, and wait until it has."""
    if swarm is not None:
        from .detached import down_detached

        raise typer.Exit(down_detached(swarm, volumes, console))
    try:
        client = AdminClient.discover(admin, admin_token, state_dir)
    except NoRunningUp as e:
        # No control plane: an `up` killed (kill -9) and not restarted leaves its gateway serving.
        from selfieless.orchestrator.gateway_process import stop_left_over

        stopped = [] if admin else stop_left_over(state_dir or default_state_dir())
        if not stopped:
            # A swarm stack outlives its `up` (services and the gateway on every node stay): it is
            # taken down through the manager instead.
            _fail(f"{e}\nA swarm stack whose `up` is gone: `selfieless down --swarm STACK` with DOCKER_HOST "
                  f"pointing at a manager removes its services and gateways.")
        for stack_name, pid in stopped:
            console.print(f"stopped the gateway of stack {stack_name} (pid {pid}), left serving by an `up` that "
                          f"is gone; its replicas may still run: `selfieless up` adopts them, then "
                          f"`selfieless down` stops them")
        return
    st = _call(client.get, "/api/status") if volumes else None
    _call(client.post, "/api/shutdown", params={"volumes": "1"} if volumes else None)
    console.print(f"asked the stack at {client.url} to shut down; waiting for its replicas to drain...")
    deadline = time.monotonic() + timeout
    while client.alive():
        if time.monotonic() > deadline:
            _fail(f"still running after {timeout:g} s")
        time.sleep(0.25)
    console.print("[green]stopped[/]")
    if st is not None and st.get("driver") == "docker":
        from selfieless.orchestrator.drivers.docker import remove_volumes

        removed = remove_volumes(st["stack"])
        console.print(f"removed volumes: {', '.join(removed) if removed else 'none'}")
    elif st is not None and st.get("driver") == "swarm":
        console.print("removed the stack's volumes on every node that is up (the `up` output lists them)")


# ------------------------------------------------------------------------------------------------
# status / events / scale / logs


def _window_text(w: WindowStatus | None) -> str:
    if not w:
        return "-"
    if not w.started:
        return "0 (not started)"
    return f"{w.count} ({w.ends_in:.0f} s left)"


def _policy_text(svc: ServiceStatus) -> str:
    w = svc.window
    if svc.policy == "window" and w:
        return f"window {w.seconds:g}s/{w.requests_per_replica}"
    return svc.policy


LISTED = 20  # replicas per service `selfieless status` lists without --all (a thousand rows took 1 s)


def status_tables(wire: dict) -> list:
    """The renderables `selfieless status` prints from GET /api/status: a services table, a replicas
    table, decisions."""
    from selfieless.orchestrator.status import from_json

    st = from_json(wire)
    title = f"stack {st.stack} · driver {st.driver} · {'converged' if st.converged else 'converging'}"
    services = Table(title=title, title_justify="left")
    for col, kw in (("service", {}), ("desired", {"justify": "right"}), ("actual", {"justify": "right"}),
                    ("ready", {"justify": "right"}), ("min..max", {"justify": "right"}), ("ports", {}),
                    ("policy", {}), ("api req", {"justify": "right"}), ("window count", {})):
        services.add_column(col, **kw)
    replicas = Table(title="replicas", title_justify="left")
    for col, kw in (("service", {}), ("port", {"justify": "right"}), ("pid", {"justify": "right"}),
                    ("id", {"no_wrap": True}), ("state", {}),
                    ("health", {}), ("in-flight", {"justify": "right"}), ("requests", {"justify": "right"}),
                    ("restarts", {"justify": "right"}), ("db conns", {"justify": "right"}),
                    ("uptime", {"justify": "right"})):
        replicas.add_column(col, **kw)
    colours = {"ready": "green", "starting": "yellow", "unhealthy": "red", "exited": "red", "stopping": "dim"}
    decisions = []
    for name, svc in st.services.items():
        services.add_row(name, str(svc.desired), str(svc.actual), str(svc.ready),
                         f"{svc.min}..{svc.max}", svc.host_ports, _policy_text(svc), str(svc.api_requests),
                         _window_text(svc.window))
        if svc.last_decision:
            decisions.append(f"{name}: {svc.last_decision}")
        if svc.no_port:
            decisions.append(f"{name}: [red]{svc.no_port}[/]")
        for r in svc.replicas:
            c = colours.get(r.state, "white")
            replicas.add_row(name, str(r.port), str(r.pid or "-"), r.id, f"[{c}]{r.state}[/]", r.health,
                             str(r.in_flight), str(r.requests), str(r.restarts),
                             "-" if r.db_connections is None else str(r.db_connections), f"{r.uptime:.0f} s")
        for p in svc.pending:
            replicas.add_row(name, str(p.port), "-", "-", "[yellow]pending[/]", "-", "-", "-", "-", "-",
                             f"in {p.due_in:.1f} s")
        if svc.not_listed:
            left = ", ".join(f"{n} {state}" for state, n in svc.not_listed.items())
            replicas.add_row(name, "", "", f"[dim]and {sum(svc.not_listed.values())} more: {left} (--all lists them)[/]",
                             "", "", "", "", "", "", "")
    out: list = [services, replicas]
    if st.certs:
        from selfieless.orchestrator.status import cert_line

        out.append("certificates:\n" + "\n".join(
            f"  {'[red]' if c.problem or c.expires_in is None or c.expires_in <= 0 else ''}{cert_line(c)}"
            f"{'[/]' if c.problem or c.expires_in is None or c.expires_in <= 0 else ''}" for c in st.certs))
    if st.gateways:
        from selfieless.orchestrator.status import gateway_line

        out.append("gateways (one per node):\n" + "\n".join(
            f"  {'' if g.attached and g.answering else '[yellow]'}{gateway_line(g)}"
            f"{'' if g.attached and g.answering else '[/]'}" for g in st.gateways))
    if decisions:
        out.append("last decisions:\n" + "\n".join(f"  {d}" for d in decisions))
    return out


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print the raw status JSON."),
    every: bool = typer.Option(False, "--all", help=f"List every replica (default: at most {LISTED} per service, "
                               "those that need a look first)."),
    admin: Optional[str] = AdminOpt, admin_token: Optional[str] = TokenOpt, state_dir: Optional[Path] = StateOpt,
):
    """Services and replicas of the running stack: port, pid, id, state, health, in-flight, requests, restarts,
    connections held to a server database, desired vs actual, and the autoscaler's current window count."""
    st = _call(_client(admin, admin_token, state_dir).get, "/api/status",
               params=None if every or as_json else {"list": LISTED})
    if as_json:
        print(json.dumps(st, indent=2))
        return
    for t in status_tables(st):
        console.print(t)


def _event_line(ev: dict) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(ev["ts"]))
    who = "/".join(x for x in (ev.get("service"), ev.get("replica")) if x)
    return f"{when} #{ev['id']} {ev['kind']:<9} {who}: {ev['reason']}"


@app.command()
def events(
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events as they happen (Ctrl-C stops)."),
    last: int = typer.Option(50, "--last", "-n", help="How many past events to show first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    admin: Optional[str] = AdminOpt, admin_token: Optional[str] = TokenOpt, state_dir: Optional[Path] = StateOpt,
):
    """The control plane's event log: every start, readiness, failure, replacement and scaling, with its reason."""
    client = _client(admin, admin_token, state_dir)
    first = _call(client.get, "/api/events", params={"after": 0})
    evs = first["events"][-last:] if last > 0 else []

    def show(batch):
        for ev in batch:
            print(json.dumps(ev) if as_json else _event_line(ev), flush=True)

    show(evs)
    if not follow:
        return
    cursor = first["next"]
    _ctrl_c_ends_at_once()
    while True:
        try:
            r = client.get("/api/events", params={"after": cursor, "wait": 25}, timeout=40)
        except NoRunningUp:
            err.print("the stack stopped")
            return
        except AdminError as e:
            _fail(str(e))
        show(r["events"])
        cursor = r["next"]


def _ctrl_c_ends_at_once() -> None:
    """Let Ctrl-C end a follower by the signal's default action rather than KeyboardInterrupt.

    A KeyboardInterrupt that arrives while Python runs a finalizer (an HTTP client's, here, every
    long poll) is printed as "Exception ignored" and dropped, and the follower then waits out its
    next long poll; the README's own test saw `events -f`, and later `logs -f`, outlive Ctrl-C by
    10 s. The default action cannot be lost, and a follower has nothing to clean up: every line is
    flushed as it is printed.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)


@app.command()
def apply(
    stack: Optional[Path] = typer.Argument(None, help="Stack file (default: the file the running stack was "
                                           "started from)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and change nothing."),
    timeout: float = typer.Option(900.0, "--timeout", help="How long to wait for the stack to converge (s)."),
    port: Optional[int] = typer.Option(None, "--port", help="Gateway port (default: the one the running `up` "
                                       "was given with --port, else the file's)."),
    admin: Optional[str] = AdminOpt, admin_token: Optional[str] = TokenOpt, state_dir: Optional[Path] = StateOpt,
):
    """Change the running stack to match the file: live where possible, rolling replacement where
    the replicas must change; returns once converged (exit 1 with the reason otherwise). The port
    and driver given to `up` on its command line are kept. Without STACK, the running stack's own
    file is read again."""
    import yaml

    from selfieless.orchestrator.stack import StackError, load_stack

    client = _client(admin, admin_token, state_dir)
    path = stack or _running_stack_file(client)
    try:
        load_stack(path)  # the clear local error first
    except StackError as e:
        _fail(str(e))
    body = {"stack": yaml.safe_load(path.read_text()), "dry_run": dry_run}
    if port is not None:
        body["port"] = port
    try:
        r = client.post("/api/apply", body, timeout=timeout)
    except NoRunningUp as e:
        _fail(str(e))
    except AdminError as e:
        for line in (e.body or {}).get("actions", []) if isinstance(e.body, dict) else []:
            console.print(f"  {line}")
        _fail(str(e))
    for line in r["actions"] or ["no change"]:
        console.print(f"  {line}")
    for ro in r.get("rollouts", []):
        console.print(f"{ro['service']}: rolling update {ro['outcome']} in {ro['seconds']:.1f} s")
    console.print("dry run: nothing changed" if dry_run else f"applied in {r['seconds']:.1f} s")


def _running_stack_file(client: AdminClient) -> Path:
    """The file the running `up` was started from, readable here, or a clear refusal."""
    file = _call(client.get, "/api/stack").get("file")
    if not file:
        _fail("the running stack does not say which file it was started from: name the stack file")
    path = Path(file)
    if not path.is_file():
        _fail(f"the running stack was started from {file}, which cannot be read here: name the stack file")
    console.print(f"applying {file} (the file the running stack was started from)")
    return path


@app.command()
def rollout(
    action: str = typer.Argument(..., help="status, history, undo or restart."),
    service: str = typer.Argument(..., help="Service name, e.g. acts."),
    admin: Optional[str] = AdminOpt, admin_token: Optional[str] = TokenOpt, state_dir: Optional[Path] = StateOpt,
):
    """Rolling updates of one service: the last one (status), all of them (history), back to the
    version before the last one (undo), or every replica replaced by a fresh one (restart)."""
    if action not in ("status", "history", "undo", "restart"):
        _fail(f"action must be status, history, undo or restart, not {action!r}")
    client = _client(admin, admin_token, state_dir)
    r = _call(client.post, "/api/rollout", {"service": service, "action": action}, timeout=900)
    if action in ("status", "history"):
        if r.get("rolling"):
            console.print(f"{service}: {r['rolling']} under way")
        for h in r["history"] or []:
            when = time.strftime("%H:%M:%S", time.localtime(h["at"]))
            console.print(f"{when}  {h['outcome']:<12} {h['seconds']:>6.1f} s  {h['reason']}: {h['detail']}")
        if not r["history"] and not r.get("rolling"):
            console.print(f"{service}: no rolling update recorded")
    else:
        console.print(f"{service}: {action} {r['outcome']} in {r['seconds']:.1f} s")


tls_app = typer.Typer(help="HTTPS at the gateway.", no_args_is_help=True)
app.add_typer(tls_app, name="tls")


@tls_app.command("reload")
def tls_reload(admin: Optional[str] = AdminOpt, admin_token: Optional[str] = TokenOpt,
               state_dir: Optional[Path] = StateOpt):
    """Load the gateway's certificate files again now (it also notices changed files by itself):
    new handshakes get the new certificates, open connections are not dropped."""
    client = _client(admin, admin_token, state_dir)
    try:
        client.post("/api/tls/reload")
    except NoRunningUp as e:
        _fail(str(e))
    except AdminError as e:
        details = (e.body or {}).get("details") if isinstance(e.body, dict) else None
        _fail(str(e) + "".join(f"\n  {d}" for d in details or ()))
    console.print("certificates reloaded")


@app.command(context_settings={"ignore_unknown_options": True})
def scale(
    service: str = typer.Argument(..., help="Service name, e.g. acts."),
    replicas: str = typer.Argument(..., help="Desired replica count, within the stack's replicas.min..max."),
    wait: bool = typer.Option(False, "--wait", help="Wait until that many replicas are ready."),
    timeout: float = typer.Option(60.0, "--timeout", help="With --wait: how long (s)."),
    admin: Optional[str] = AdminOpt, admin_token: Optional[str] = TokenOpt, state_dir: Optional[Path] = StateOpt,
):
    """Set a service's replica count now; the autoscaler carries on from it at its next decision."""
    try:
        n = int(replicas)
    except ValueError:
        _fail(f"replicas must be a whole number, not {replicas!r}")
    client = _client(admin, admin_token, state_dir)
    before = _call(client.get, "/api/status")["services"].get(service, {}).get("desired")
    # Negative and out-of-range counts are the admin API's to refuse, with its message.
    r = _call(client.post, "/api/scale", {"service": service, "replicas": n})
    arrow = f"{before} → {r['desired']}" if before is not None else str(r["desired"])
    console.print(f"{service}: desired {arrow} (actual {r['actual']})")
    if wait:
        deadline = time.monotonic() + timeout
        while True:
            svc = _call(client.get, "/api/status")["services"][service]
            if svc["ready"] == svc["desired"] and svc["actual"] == svc["desired"] and not svc["pending"]:
                console.print(f"{service}: {svc['ready']} ready")
                return
            if time.monotonic() > deadline:
                _fail(f"{service}: {svc['ready']} of {svc['desired']} ready after {timeout:g} s")
            time.sleep(0.25)


@app.command()
def logs(
    service: str = typer.Argument(..., help="Service name, e.g. acts."),
    replica: Optional[int] = typer.Option(None, "--replica", "-r", help="Only the replica on this host port."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output (Ctrl-C stops)."),
    tail: int = typer.Option(100, "--tail", "-n", help="Lines of each log to show first."),
    admin: Optional[str] = AdminOpt, admin_token: Optional[str] = TokenOpt, state_dir: Optional[Path] = StateOpt,
):
    """Output of a service's replicas (process driver: one log file per host port, kept across replacements)."""
    client = _client(admin, admin_token, state_dir)
    params: dict[str, Any] = {"service": service, "tail": tail}
    if replica is not None:
        params["port"] = replica
    r = _call(client.get, "/api/logs", params=params)
    if not r["files"]:
        console.print(f"no logs for {service} yet")
    prefixed = replica is None
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    pending: dict[int, str] = {}

    def show(files, final: bool = False):
        for f in files:
            text = f["text"]
            if not prefixed:
                sys.stdout.write(text)
                continue
            out, pending[f["port"]] = prefix_lines(replica_prefix(service, f["port"], colour),
                                                   pending.get(f["port"], ""), text, final)
            sys.stdout.write(out)
        sys.stdout.flush()

    show(r["files"], final=not follow)
    if not follow:
        return
    offsets = {f["port"]: f["offset"] for f in r["files"]}
    _ctrl_c_ends_at_once()
    try:
        while True:
            time.sleep(0.5)
            p = dict(params)
            p["offsets"] = ",".join(f"{k}:{v}" for k, v in offsets.items())
            try:
                r = client.get("/api/logs", params=p)
            except NoRunningUp:
                err.print("the stack stopped")
                return
            except AdminError as e:
                _fail(str(e))
            show(r["files"])
            for f in r["files"]:
                offsets[f["port"]] = f["offset"]
    except KeyboardInterrupt:
        return


_PREFIX_COLOURS = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94)  # ANSI foreground colours, as compose cycles them


def replica_prefix(service: str, port: int, colour: bool = False) -> str:
    """`acts-8003  | `, like `docker compose logs`: the same width for every port of a service."""
    label = f"{service}-{port}".ljust(len(service) + 6)
    if not colour:
        return f"{label} | "
    return f"\x1b[{_PREFIX_COLOURS[port % len(_PREFIX_COLOURS)]}m{label} |\x1b[0m "


def prefix_lines(prefix: str, pending: str, text: str, final: bool = False) -> tuple[str, str]:
    """Prefix every complete line of `pending + text`; an unfinished last line is held back (returned
    as the new pending text) until the rest of it arrives, unless `final`."""
    text = pending + text
    lines = text.split("\n")
    rest = lines.pop()  # "" when the text ends with a newline
    if final and rest:
        lines.append(rest)
        rest = ""
    return "".join(f"{prefix}{line}\n" for line in lines), rest


# ------------------------------------------------------------------------------------------------
# validate / load


@app.command()
def validate(stack: Path = typer.Argument(..., help="Stack file to check.")):
    """Check a stack file: prints exactly which field is wrong (exit 1), or a summary of what it defines."""
    from selfieless.orchestrator.stack import StackError, load_stack

    try:
        s = load_stack(stack)
    except StackError as e:
        err.print(f"[red]invalid[/] {stack}:")
        for p in e.problems:
            err.print(f"  {p}")
        raise typer.Exit(1)
    tls = s.gateway.tls
    https = "" if tls is None else (
        f", HTTPS on :{tls.port} ({len(tls.certs) + (tls.cert is not None)} certificate file(s)"
        + (f", ACME from {tls.acme.directory}" if tls.acme else "") + ")")
    console.print(f"[green]ok[/]: stack {s.name!r}, driver {s.driver}, gateway {s.gateway.host}:{s.gateway.port} "
                  f"({s.gateway.balance}){https}, {len(s.services)} service{'s' if len(s.services) != 1 else ''}")
    t = Table()
    for col in ("service", "routes", "host ports", "replicas (initial, min..max)", "autoscale", "health"):
        t.add_column(col)
    for name, svc in s.services.items():
        pol = svc.autoscale
        pol_text = {"window": lambda: f"window {pol.window_seconds:g} s, {pol.requests_per_replica} req/replica",
                    "rate": lambda: f"rate {pol.target_rps_per_replica:g} rps/replica",
                    "none": lambda: "none"}[pol.policy]()
        where = " ".join(svc.routes) or ("/" if svc.hosts else "-")
        t.add_row(name, (f"{', '.join(svc.hosts)}: " if svc.hosts else "") + where, str(svc.host_ports),
                  f"{svc.replicas.start_count}, {svc.replicas.min}..{svc.replicas.max}", pol_text,
                  f"{svc.health.path} every {svc.health.interval:g} s")
    for name, dep in s.dependencies.items():
        t.add_row(f"{name} (dependency)", "-", f"127.0.0.1:{dep.host_port}", "1, 1..1", "none",
                  f"tcp every {dep.health.interval:g} s")
    console.print(t)


@app.command()
def load(
    url: str = typer.Argument(..., help="URL to send requests to."),
    rps: float = typer.Option(..., "--rps", help="Requests per second (sent on schedule whatever the latency)."),
    duration: float = typer.Option(..., "--duration", help="Seconds to send for."),
    method: str = typer.Option("GET", "--method", "-X", help="HTTP method."),
    body: Optional[str] = typer.Option(None, "--body", help="JSON request body (sent as application/json)."),
    concurrency: int = typer.Option(64, "--concurrency", "-c", help="Maximum open connections."),
    timeout: float = typer.Option(10.0, "--timeout", help="Per-request timeout (s)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Open-loop load generator: requests go out at fixed intervals whatever the latency, then a summary
    (sent, status counts, errors, p50/p99 latency, achieved rate). Exit status 2 if any request failed
    (connection error, timeout or 5xx)."""
    from .loadcore import target_url

    if rps <= 0 or duration <= 0 or concurrency <= 0:
        _fail("--rps, --duration and --concurrency must be > 0")
    try:
        url, note = target_url(url)
    except ValueError as e:
        _fail(str(e))
    if note:
        err.print(note)
    summary = _send_load(url, rps, duration, method=method.upper(), body=_json_body(body),
                         concurrency=concurrency, timeout=timeout, quiet=as_json)
    if as_json:
        print(json.dumps(summary.as_dict(), indent=2))
        return
    console.print(_load_table(summary, f"{method.upper()} {url}"))
    if summary.errors or any(s >= 500 for s in summary.statuses):
        raise typer.Exit(2)


def _json_body(body: str | None) -> bytes | None:
    if body is None:
        return None
    try:
        json.loads(body)
    except ValueError as e:
        _fail(f"--body is not valid JSON: {e}")
    return body.encode()


def _send_load(url: str, rps: float, duration: float, *, quiet: bool, **kw: Any):
    """run_load with a progress bar on stderr (none when `quiet`); its summary."""
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .load import run_load
    from .loadcore import planned_count

    counts = {"ok": 0, "bad": 0}
    with Progress(TextColumn("[bold]load[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err,
                  disable=quiet, transient=False) as progress:
        task = progress.add_task("load", total=planned_count(rps, duration), info="")

        def on_result(res):
            counts["ok" if res.status is not None and res.status < 400 else "bad"] += 1
            progress.update(task, advance=1, info=f"ok {counts['ok']} · failed {counts['bad']}")

        return asyncio.run(run_load(url, rps, duration, on_result=on_result, **kw))


def _load_table(summary, title: str) -> Table:
    ms = lambda v: "-" if v is None else f"{v * 1000:.1f} ms"  # noqa: E731
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column(justify="right", style="bold")
    t.add_column()
    t.add_row("sent", f"{summary.sent} of {summary.planned} planned")
    t.add_row("statuses", ", ".join(f"{k}: {v}" for k, v in summary.statuses.items()) or "-")
    t.add_row("errors", ", ".join(f"{k}: {v}" for k, v in summary.errors.items()) or "none")
    t.add_row("latency", f"p50 {ms(summary.p50)} · p90 {ms(summary.p90)} · p99 {ms(summary.p99)} · max {ms(summary.max)}")
    t.add_row("rate", f"{summary.achieved_rps:.1f} req/s achieved (target {summary.target_rps:g}) over {summary.elapsed:.1f} s")
    if summary.max_send_delay > 0.05:
        t.add_row("client lag", f"a send went out up to {summary.max_send_delay * 1000:.0f} ms late (client saturated)")
    return t


def main() -> None:
    app(prog_name="selfieless")


if __name__ == "__main__":
    main()
