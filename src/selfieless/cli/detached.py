"""`selfieless up --driver swarm --detach` and `selfieless down --swarm STACK`: a stack whose
control plane runs as a Swarm service (orchestrator/drivers/swarm_control.py), deployed and
removed from any machine that reaches a manager."""

from __future__ import annotations

import asyncio
import time

from rich.console import Console

from selfieless.orchestrator.drivers.base import engine_address

from .up import UpError, UpOptions, admin_port, cli_command, prepare_stack


ELECTION_WAIT = 120.0   # how long `down --swarm` tries again while the swarm elects a leader


def deploy_detached(opts: UpOptions, console: Console) -> int:
    """`up --driver swarm --detach`: the control plane as a Swarm service (drivers/swarm_control.py)."""
    import docker
    import yaml

    from selfieless.orchestrator.drivers import swarm_control, swarm_sealed

    stack = prepare_stack(opts)
    if stack.driver != "swarm":
        raise UpError("--detach runs the control plane as a Swarm service: it needs --driver swarm")
    image = stack.swarm.helper_image or next((s.image for s in stack.services.values() if s.image), None)
    if image is None:
        raise UpError("--detach: no image to run the control plane in (set swarm.helper_image)")
    manager = engine_address(stack.swarm.manager)
    # The task reads the stack as this `up` resolved it (command-line overrides applied), and
    # reaches the manager through its own node's socket.
    data = stack.model_dump(mode="json", exclude_none=True)
    data.get("swarm", {}).pop("manager", None)
    client = None
    try:
        client = docker.DockerClient(base_url=manager, timeout=30)
        secrets = swarm_control.ship_files(client, stack.name, data)   # the task reads its copies
        if stack.gateway.tls is not None and stack.gateway.tls.acme is not None:
            secrets.append(swarm_sealed.seal_secret(client, stack.name))   # its ACME folder, sealed in the swarm
        token = swarm_control.admin_token_secret(client, stack.name, opts.admin_token) if opts.admin_token else None
        text = yaml.safe_dump(data, sort_keys=False)
        where = stack.swarm.control_placement
        did = swarm_control.deploy(client, stack.name, text, image, stack.gateway.port, admin_port(opts),
                                   where.constraints, where.preferences, secrets, token)
    except (docker.errors.DockerException, ValueError, OSError) as e:
        raise UpError(f"cannot deploy the control plane of {stack.name} on {manager}: {e}") from None
    finally:
        if client is not None:
            client.close()
    cli = cli_command()
    admin = (f"admin API on port {admin_port(opts)} of that node's addresses, with the token: `{cli} status "
             f"--admin swarm://{stack.name}` finds it (DOCKER_HOST: a manager)" if token else
             f"admin API on its 127.0.0.1:{admin_port(opts)} (--admin-token: on the node's addresses, "
             f"for `--admin swarm://{stack.name}` from elsewhere)")
    console.print(f"{did}. On the manager that runs it: gateway on port {stack.gateway.port}, {admin}. "
                  f"`docker service logs -f {swarm_control.control_service_name(stack.name)}` shows its events; "
                  f"`{cli} down --swarm {stack.name}` removes it and the stack.", highlight=False)
    return 0


def admin_url(stack_name: str) -> str:
    """`--admin swarm://STACK`: the admin API of the stack's control-plane service, found through
    the manager at DOCKER_HOST (drivers/swarm_control.admin_url)."""
    import docker

    from selfieless.orchestrator.drivers import swarm_control

    from .client import NoRunningUp

    manager = engine_address()
    client = None
    try:
        client = docker.DockerClient(base_url=manager, timeout=15)
        return swarm_control.admin_url(client, stack_name)
    except (docker.errors.DockerException, ValueError) as e:
        raise NoRunningUp(f"the control plane of {stack_name} (through {manager}): {e}") from None
    finally:
        if client is not None:
            client.close()


def down_detached(stack_name: str, volumes: bool, console: Console) -> int:
    """`down --swarm STACK`: remove the control-plane service (its `up` stops and releases the
    lease), take the lease, then remove the stack's services (and volumes) as `down` does."""
    import docker

    from selfieless.orchestrator.drivers.base import DriverError
    from selfieless.orchestrator.drivers.swarm_control import swarm_electing

    manager = engine_address()
    deadline = time.monotonic() + ELECTION_WAIT
    while True:
        try:
            client = docker.DockerClient(base_url=manager, timeout=30)
            return _take_down(client, manager, stack_name, volumes, console)
        except (docker.errors.DockerException, DriverError) as e:
            if swarm_electing(str(e)) and time.monotonic() < deadline:
                # A manager that rejoined after a cut can make the leader step down for an
                # election, seconds after the swarm looked whole: what failed is done again.
                console.print(f"[dim]the swarm is electing a leader ({e}); trying again[/]", highlight=False)
                time.sleep(2.0)
                continue
            console.print(f"[red]error:[/] removing stack {stack_name} on {manager}: {e}", highlight=False)
            return 1


def _take_down(client, manager: str, stack_name: str, volumes: bool, console: Console) -> int:
    import docker
    import yaml

    from selfieless.orchestrator.drivers import swarm_control
    from selfieless.orchestrator.drivers.swarm import SwarmDriver
    from selfieless.orchestrator.drivers.swarm_lease import SwarmLeaseStore
    from selfieless.orchestrator.lease import Terms
    from selfieless.orchestrator.lease_keeper import LeaseKeeper
    from selfieless.orchestrator.stack import LeaseSpec

    text = swarm_control.stack_text(client, stack_name)
    # Only its lease's terms: the files it names are in the control plane's task, not here.
    lease = LeaseSpec.model_validate(((yaml.safe_load(text) or {}).get("swarm") or {}).get("lease") or {}) \
        if text else None
    terms = Terms(lease.seconds, lease.margin) if lease else Terms()
    if swarm_control.remove(client, stack_name):
        console.print(f"removed service {swarm_control.control_service_name(stack_name)}")

    async def take_down() -> list[str]:
        store = SwarmLeaseStore(client, stack_name)
        keeper = LeaseKeeper(store, terms, on_event=lambda r: console.print(f"[dim]lease: {r}[/]", highlight=False))
        # The removed service's `up` releases the lease, or it lapses within L + m; a holder still
        # renewing after that is another control plane of the stack, which must be stopped first.
        give_up = asyncio.Event()
        asyncio.get_running_loop().call_later(terms.seconds + 2 * terms.margin + 30, give_up.set)
        if not await keeper.acquire(give_up):
            raise UpError(f"another control plane of {stack_name} still holds its lease (see the lease lines "
                          f"above): stop it (`selfieless down` where it runs), then run this again")
        keep = asyncio.create_task(keeper.keep(lambda reason: None))
        driver = SwarmDriver(stack_name, manager=manager, client=client, acting=keeper.acting)
        try:
            await driver.cleanup()
            return await driver.remove_volumes() if volumes else []
        finally:
            keep.cancel()
            await asyncio.gather(keep, return_exceptions=True)
            await asyncio.to_thread(store.remove)

    try:
        removed = asyncio.run(take_down())
    except UpError as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 1
    finally:
        try:
            left = swarm_control.remove_configs(client, stack_name)
            if left:
                console.print(f"[yellow]left in use, for the next down:[/] {', '.join(left)}", highlight=False)
        except docker.errors.DockerException:   # the swarm electing: the retry or the next down takes them
            pass
        client.close()
    console.print(f"[green]removed stack {stack_name}[/] (its services and network)"
                  + (f"; volumes: {', '.join(removed) or 'none'}" if volumes else ""))
    return 0
