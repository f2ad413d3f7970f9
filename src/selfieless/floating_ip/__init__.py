"""The stack's floating IP on a swarm (`swarm: {floating_ip: ...}`): keepalived on every node.

The control plane runs the global Swarm service `<stack>-vip` (the swarm driver's edge
services, drivers/swarm_edge_spec.vip_service_definition): one task per node, on the node's own
network (host network), with the capabilities VRRP needs. Each task runs ``python3 -m
selfieless.floating_ip``, which finds the node's own address and interface, writes keepalived's
configuration and becomes keepalived (VRRP only). keepalived's check asks the node's own gateway
for ``/``; a node whose gateway does not answer, or that is cut off, gives the address up and
another takes it.

    keepalived_conf.py  the configuration, a pure function of the node's place and the settings
    check.py            the check keepalived runs: does the local gateway answer `/` itself?
    __main__.py         the task's entrypoint: read the machine, write the files, exec keepalived
"""
