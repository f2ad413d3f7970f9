"""The `<stack>-vip` task's entrypoint: `python3 -m selfieless.floating_ip --address A/P
--router-id N --advert S --gateway-port P --nodes ADDR,ADDR,...`.

Reads the machine (the node's IPv4 addresses per interface, `ip -j -4 addr`), picks the node's own
place among the nodes' addresses (keepalived_conf.own_place), writes keepalived's configuration
and becomes keepalived in VRRP-only mode, in the foreground (-P -n), logging to the console
(-l -D) for `docker service logs`. keepalived is then the process Swarm's SIGTERM reaches: it
gives the address up and tells the others before it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from .keepalived_conf import VipSettings, keepalived_config, own_place

RUN_DIR = Path("/run/selfieless-vip")
CHECK_PATH = RUN_DIR / "check"
# The check as a script of its own, run by this very interpreter (the kernel reads the #! line as
# it is): keepalived runs a check's program by its resolved path, which for `python3 -m ...` is
# the system interpreter outside the venv that holds selfieless (measured: every check then
# failed to import it, exit status 1).
CHECK_SCRIPT = """#!{python}
import sys
from selfieless.floating_ip.check import main
sys.exit(main(sys.argv[1:]))
"""


def local_addresses() -> dict[str, list[str]]:
    """Interface name -> its IPv4 addresses on this machine."""
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], check=True, capture_output=True, text=True).stdout
    return {i["ifname"]: [a["local"] for a in i.get("addr_info", []) if a.get("local")] for i in json.loads(out)}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m selfieless.floating_ip", description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="the floating IP with its prefix, e.g. 10.0.0.100/24")
    p.add_argument("--router-id", type=int, required=True)
    p.add_argument("--advert", type=float, required=True)
    p.add_argument("--gateway-port", type=int, required=True)
    p.add_argument("--nodes", required=True, help="every node's address, comma-separated")
    p.add_argument("--print", action="store_true", help="print the configuration and exit")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    nodes = [a for a in args.nodes.split(",") if a]
    settings = VipSettings(args.address, args.router_id, args.advert, args.gateway_port)
    try:
        interface, own = own_place(nodes, local_addresses())
        check = shlex.join([str(CHECK_PATH), own, str(args.gateway_port)])
        conf = keepalived_config(settings, interface, own, nodes, check)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"floating IP: cannot read this machine's addresses with `ip` (iproute2): {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"floating IP: {e}", file=sys.stderr)
        return 2
    if args.print:
        sys.stdout.write(conf)
        return 0
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    CHECK_PATH.write_text(CHECK_SCRIPT.format(python=sys.executable))
    CHECK_PATH.chmod(0o755)   # keepalived's script security: root's, writable by root only
    path = RUN_DIR / "keepalived.conf"
    path.write_text(conf)
    print(f"floating IP {args.address}: node {own} on {interface}; {path}:\n{conf}", flush=True)
    try:
        os.execvp("keepalived", ["keepalived", "-P", "-n", "-l", "-D", "-f", str(path),
                                 "-p", str(RUN_DIR / "keepalived.pid"), "-r", str(RUN_DIR / "vrrp.pid")])
    except OSError as e:
        print(f"floating IP: cannot run keepalived ({e}); scripts/docker-prepare puts it in the base image",
              file=sys.stderr)
        return 2
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
