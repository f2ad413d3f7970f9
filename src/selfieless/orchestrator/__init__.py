"""The control plane: keeps a stack's services at their desired replica count behind the gateway.

Modules, in the order data flows through them (docs/architecture.md draws them):
  configuration
    stack             the stack file (YAML, validated) -> Stack
    port_shift        `up --ports-from N`: every host port of the stack moved together
  pure decisions (table-tested, no I/O)
    commands          the one vocabulary of commands about replicas (start, stop, replace, cancel)
    plan              port-owned mode: desired vs actual -> convergence commands
    taken_ports       port-owned mode: ports another program holds, left out of the plan a while
    driver_owned      engine-owned mode: snapshots vs records, the count to send, silent tasks
    lifecycle         one observation about one replica -> the step to take and its events
    replica           a replica's state machine
    health            what a probe result means (and the TCP check of dependencies)
    disruption        the disruption budget: replace a failing replica now, or keep it serving
    backoff           crash-loop restart delays
    autoscale         counter samples -> scaling decisions (`window` and `rate` policies)
    scale_to_zero     when the rate policy may leave zero replicas, and waking from zero
    rollout           the per-port rolling replacement, a state machine
    apply_plan        a running stack + a new stack file -> what `apply` changes
    fleet             a gateway on every node: whom to attach, counters summed, views merged
    lease             the control-plane lease: acquire, renew, stop acting, take over (one acts at a time)
  the runtime
    controller        Orchestrator: the shared core (reconcile loop, probing, pool, callbacks, status)
    reconciler        the Reconciler interface, and the mode chosen by the kind of driver
    reconcile_ports   port-owned mode (PortDriver: process, docker): starts, replacements, adoption
    reconcile_engine  engine-owned mode (EngineDriver: swarm): the count, snapshots, silent tasks
    executor          carries out every command about replicas (start, drain and stop, replace)
    pool              the gateway pool as the control plane sees it: joins, leaves, who is in rotation
    service           what the runtime keeps per service (ServiceRuntime)
    probing, probe    the health-probe loop per replica, and the HTTP probe it sends
    scaling           the desired counts: manual scale, the autoscaler loops, scale from zero
    rollout_exec      rolling updates: the entry points, and the per-port rollout carried out
    rollout_owned     a rolling update done by the engine, followed
    rollout_history   the rollouts of a stack, kept in its state directory (for undo)
    apply_exec        carries out an apply plan
    status, events    the typed status snapshot, and the log of what happened and why
    lease_keeper      holds the lease: waits for it, renews it, says when it is lost
    drivers/          how replicas run: process, docker (PortDrivers), swarm (an EngineDriver)
  assembly
    assemble          gateway + driver + orchestrator from a stack (for the CLI / admin API)
    gateway_process   the gateway as its own process: start it, re-attach to it, stop it
    gateway_fleet     the swarm driver's gateway on every node, driven as one (GatewayFleet)
    fleet_tls         HTTPS on the gateways on every node: certificates read or issued once, sent to each
    runner            start / signals / stop of a running system
    pids              is a process still there (drivers, gateway process, CLI)
    __main__          `python -m selfieless.orchestrator STACK.yaml`
"""

from .controller import Orchestrator
from .events import Event, EventLog
from .stack import Stack, StackError, load_stack

__all__ = ["Orchestrator", "Event", "EventLog", "Stack", "StackError", "load_stack"]
