"""The control plane: keeps a stack's services at their desired replica count behind the gateway.

Modules, in the order data flows through them:
    stack       the stack file (YAML, validated) -> Stack
    plan        desired vs actual -> convergence actions (pure)
    autoscale   counter samples -> scaling decisions: `window` (course) and `rate` policies (pure)
    backoff     crash-loop restart delays (pure)
    replica     a replica's state machine
    health      the HTTP probe and what a probe result means
    lifecycle   observation about one replica -> the step to take and its event (pure)
    service     what the runtime keeps per service (ServiceRuntime)
    scaling     the desired counts: manual scale, the autoscaler loops, scale from zero
    status      the typed status snapshot and its JSON form
    events      ring buffer of events, each with its reason
    drivers/    how replicas run: process (local children) or docker (containers)
    controller  Orchestrator: the runtime that carries the decisions out
    assemble    gateway + driver + orchestrator from a stack (for the CLI / admin API)
"""

from .controller import Orchestrator
from .events import Event, EventLog
from .stack import Stack, StackError, load_stack

__all__ = ["Orchestrator", "Event", "EventLog", "Stack", "StackError", "load_stack"]
