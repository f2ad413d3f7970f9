"""The commands the decisions give about replicas, one vocabulary for all of them.

The convergence plan (plan.py) and the rolling replacement (rollout.py) both answer with these;
executor.py carries every one of them out. Plain values: a decision's tests compare them as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

# Which spec a started replica runs: the service's own (the reconciler), or one side of a rollout.
Version = Literal["current", "old", "new"]


@dataclass(frozen=True)
class StartReplica:
    """Start one replica of `version` on host port `port`."""

    version: Version
    port: int
    reason: str
    # The service serves at full strength meanwhile (start-first): the new replica need not boot
    # at the expense of the serving ones (the docker driver's start CPU boost is left off).
    spare: bool = False


@dataclass(frozen=True)
class StopReplica:
    """Take a replica out of rotation (draining it first when `drain`) and stop it."""

    replica_id: str
    drain: bool
    reason: str


@dataclass(frozen=True)
class ReplaceReplica:
    """Stop a broken replica and start a new one on its port, after the crash-loop backoff."""

    replica_id: str
    reason: str


@dataclass(frozen=True)
class CancelStart:
    """Drop a start scheduled on `port` that has not begun yet."""

    port: int
    reason: str


Command = Union[StartReplica, StopReplica, ReplaceReplica, CancelStart]
