"""keepalived's configuration for one node of the floating IP: pure functions, no sockets.

- Every node starts as BACKUP with ``nopreempt``: whichever holds the address keeps it, so a
  node that comes back does not move it a second time.
- Priorities are distinct (the rank of the node's address among all the nodes' addresses): with
  equal priorities two backups wait the same skew time when the holder goes and both become
  master for an advertisement (seen on the lab with scripts/swarm-lab's own keepalived).
- VRRP v3, unicast to the other nodes' addresses (clouds and many switches drop multicast), an
  advertisement every `advert` seconds: the others take over about 3.5 intervals after the last one.
- The check runs every second (fall 2, rise 1): a failing check puts the node in FAULT, which
  drops the address and tells the others at once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# Backups' priorities: BASE + the node's rank. 255 is reserved for an address owner, so at most
# 255 - BASE nodes; far beyond a swarm's size.
PRIORITY_BASE = 100
CHECK_INTERVAL = 1
CHECK_FALL = 2
CHECK_RISE = 1
CHECK_TIMEOUT = 2


@dataclass(frozen=True)
class VipSettings:
    """What the stack file says (`swarm.floating_ip`) and where the gateways listen."""

    address: str        # with its prefix: 10.211.0.100/24
    router_id: int      # VRRP's virtual router id, 1..255, distinct per floating IP on a network
    advert: float       # seconds between advertisements
    gateway_port: int   # the gateway's public port on every node


def sorted_addresses(nodes: list[str]) -> list[str]:
    """The nodes' addresses, each once, in numeric order (the order priorities follow)."""
    return sorted(set(nodes), key=lambda a: ipaddress.ip_address(a))


def priority(own: str, nodes: list[str]) -> int:
    """This node's VRRP priority: distinct per node, derived from its address's rank only, so
    every node computes the same ranking without talking to the others."""
    ranked = sorted_addresses(nodes)
    if own not in ranked:
        raise ValueError(f"this node's address {own} is not among the nodes' addresses {', '.join(ranked)}")
    if len(ranked) > 255 - PRIORITY_BASE:
        raise ValueError(f"{len(ranked)} nodes: VRRP priorities allow at most {255 - PRIORITY_BASE}")
    return PRIORITY_BASE + 1 + ranked.index(own)


def own_place(nodes: list[str], interfaces: dict[str, list[str]]) -> tuple[str, str]:
    """(interface, address) of this node: the interface holding one of the nodes' addresses.

    `interfaces`: interface name -> its IPv4 addresses (from `ip -j addr`). Exactly one of the
    nodes' addresses must be local; none, or several (the list is wrong), is an error."""
    wanted = set(nodes)
    found = [(name, a) for name, addrs in sorted(interfaces.items()) for a in addrs if a in wanted]
    if not found:
        raise ValueError(f"none of the nodes' addresses ({', '.join(sorted_addresses(nodes))}) is on this machine")
    if len({a for _, a in found}) > 1:
        raise ValueError(f"several of the nodes' addresses are on this machine: {', '.join(a for _, a in found)}")
    return found[0]


def keepalived_config(settings: VipSettings, interface: str, own: str, nodes: list[str],
                      check_command: str, instance: str = "selfieless") -> str:
    """The whole keepalived.conf for the node at `own` on `interface`. `check_command`: the
    program keepalived runs as the check (its exit status counts)."""
    vip = ipaddress.ip_interface(settings.address)
    peers = [a for a in sorted_addresses(nodes) if a != own]
    # One node alone has no peer to name (keepalived refuses an empty unicast_peer block).
    unicast = "".join(["  unicast_peer {\n", *(f"    {a}\n" for a in peers), "  }\n"]) if peers else ""
    return f"""\
# python3 -m selfieless.floating_ip: node {own} of {len(set(nodes))}, floating IP {vip.with_prefixlen}
global_defs {{
  router_id {instance}-{own}
  enable_script_security
  script_user root
}}
vrrp_script gateway {{
  script "{check_command}"
  interval {CHECK_INTERVAL}
  timeout {CHECK_TIMEOUT}
  fall {CHECK_FALL}
  rise {CHECK_RISE}
}}
vrrp_instance {instance} {{
  state BACKUP
  nopreempt
  interface {interface}
  virtual_router_id {settings.router_id}
  version 3
  advert_int {settings.advert:g}
  priority {priority(own, nodes)}
  unicast_src_ip {own}
{unicast}  virtual_ipaddress {{
    {vip.with_prefixlen} dev {interface}
  }}
  track_script {{
    gateway
  }}
}}
"""
