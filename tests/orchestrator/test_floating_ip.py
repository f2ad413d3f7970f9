"""The floating IP's keepalived configuration (selfieless/floating_ip): pure, table tests; and the
check's reading of the gateway's answer. keepalived itself runs in tests/swarm/test_swarm_floating_ip.py."""

from __future__ import annotations

import json

import pytest

from selfieless.floating_ip.check import is_gateway_status
from selfieless.floating_ip.keepalived_conf import VipSettings, keepalived_config, own_place, priority

NODES = ["10.211.0.12", "10.211.0.11", "10.211.0.13"]
SETTINGS = VipSettings("10.211.0.101/24", 52, 0.5, 80)


@pytest.mark.parametrize("own, nodes, want", [
    ("10.211.0.11", NODES, 101),
    ("10.211.0.12", NODES, 102),
    ("10.211.0.13", NODES, 103),
    ("10.211.0.9", ["10.211.0.10", "10.211.0.9"], 101),        # numeric order, not text order
    ("10.211.0.9", ["10.211.0.9", "10.211.0.9"], 101),          # listed twice, counted once
    ("10.0.0.1", ["10.0.0.1"], 101),
])
def test_priority_is_the_rank_of_the_node_address(own, nodes, want):
    assert priority(own, nodes) == want


def test_every_node_gets_a_distinct_priority_whatever_the_order_given():
    assert sorted(priority(a, NODES) for a in NODES) == [101, 102, 103]
    assert [priority(a, NODES) for a in NODES] == [priority(a, list(reversed(NODES))) for a in NODES]


def test_a_node_not_in_the_list_or_too_many_nodes_is_refused():
    with pytest.raises(ValueError, match="not among"):
        priority("10.211.0.99", NODES)
    many = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(200)]
    with pytest.raises(ValueError, match="at most"):
        priority(many[0], many)


@pytest.mark.parametrize("interfaces, want", [
    ({"lo": ["127.0.0.1"], "eth0": ["10.211.0.12"]}, ("eth0", "10.211.0.12")),
    # the floating IP itself (held now) and docker's bridges beside it change nothing
    ({"lo": ["127.0.0.1"], "docker_gwbridge": ["10.212.0.1"], "eth0": ["10.211.0.13", "10.211.0.101"]},
     ("eth0", "10.211.0.13")),
    ({"ens5": ["192.168.1.4"], "wg0": ["10.211.0.11"]}, ("wg0", "10.211.0.11")),
])
def test_own_place_is_the_interface_holding_a_node_address(interfaces, want):
    assert own_place(NODES, interfaces) == want


@pytest.mark.parametrize("interfaces, match", [
    ({"lo": ["127.0.0.1"], "eth0": ["192.168.1.4"]}, "none of the nodes' addresses"),
    ({"eth0": ["10.211.0.11"], "eth1": ["10.211.0.12"]}, "several"),
    ({}, "none"),
])
def test_own_place_refuses_a_machine_that_is_not_exactly_one_node(interfaces, match):
    with pytest.raises(ValueError, match=match):
        own_place(NODES, interfaces)


def _conf(own="10.211.0.12", nodes=NODES, settings=SETTINGS):
    return keepalived_config(settings, "eth0", own, nodes, "/usr/bin/python3 -m selfieless.floating_ip.check 10.211.0.12 80")


def _block(conf: str, name: str) -> list[str]:
    """The lines of the `name { ... }` block (not nested further)."""
    lines = conf.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(name + " {"))
    out = []
    for line in lines[start + 1:]:
        if line.strip() == "}":
            break
        out.append(line.strip())
    return out


def test_the_configuration_is_a_backup_without_preemption_unicast_to_the_other_nodes():
    conf = _conf()
    inst = _block(conf, "vrrp_instance selfieless")
    for line in ("state BACKUP", "nopreempt", "interface eth0", "virtual_router_id 52", "version 3",
                 "advert_int 0.5", "priority 102", "unicast_src_ip 10.211.0.12"):
        assert line in inst
    assert _block(conf, "unicast_peer") == ["10.211.0.11", "10.211.0.13"]
    assert _block(conf, "virtual_ipaddress") == ["10.211.0.101/24 dev eth0"]
    assert _block(conf, "track_script") == ["gateway"]


def test_the_check_follows_the_local_gateway_every_second_fall_2_rise_1():
    script = _block(_conf(), "vrrp_script gateway")
    assert script[0] == 'script "/usr/bin/python3 -m selfieless.floating_ip.check 10.211.0.12 80"'
    assert {"interval 1", "fall 2", "rise 1"} <= set(script)


@pytest.mark.parametrize("settings, lines", [
    (VipSettings("192.168.7.50/16", 7, 1, 8080), {"virtual_router_id 7", "advert_int 1"}),
    (VipSettings("10.211.0.101/24", 255, 0.25, 80), {"virtual_router_id 255", "advert_int 0.25"}),
])
def test_the_settings_reach_the_configuration(settings, lines):
    conf = _conf(settings=settings)
    assert lines <= set(_block(conf, "vrrp_instance selfieless"))
    assert _block(conf, "virtual_ipaddress") == [f"{settings.address} dev eth0"]


def test_a_single_node_names_no_peer():
    conf = _conf(own="10.0.0.1", nodes=["10.0.0.1"])
    assert "unicast_peer" not in conf and "unicast_src_ip 10.0.0.1" in conf


@pytest.mark.parametrize("status, body, ok", [
    (200, json.dumps({"gateway": "selfieless", "services": {}}).encode(), True),
    (200, b'{"gateway": "nginx"}', False),
    (200, b"<html>it works</html>", False),
    (200, b"[1, 2]", False),
    (503, json.dumps({"gateway": "selfieless"}).encode(), False),
])
def test_the_check_counts_only_the_gateways_own_status_page(status, body, ok):
    assert is_gateway_status(status, body) is ok
