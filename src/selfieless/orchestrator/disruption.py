"""The disruption budget: whether a ready replica that failed its health probes is replaced now.

When several replicas of a service fail together, a shared dependency (the database busy or
down, the disk full) is far more likely than independent faults, and replacing them all at once
makes it worse: every request in flight is killed (a long write rolls back and can never finish)
and the service has no replica at all while the replacements boot. So, like a Kubernetes
disruption budget (and Envoy's panic threshold), at most `max_unavailable` replicas of a service
are taken down at a time: a ready replica that fails while others are already being replaced or
are still starting stays in rotation, keeps being probed, and is replaced once a sibling is ready
again (or recovers by itself). A one-replica service is always replaced at once: nothing else
could serve anyway. Exited replicas are not the budget's business: they are gone already.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_UNAVAILABLE = 1


@dataclass(frozen=True)
class Allowance:
    """What the budget allows for one failed ready replica."""

    replace: bool
    all_failing: bool   # every replica of the service is failing or being replaced


def on_failure(ready: int, failing_ready: int, unavailable: int, max_unavailable: int = MAX_UNAVAILABLE) -> Allowance:
    """A ready replica failed its probes (threshold reached).

    ready: replicas of the service in rotation, this one included; failing_ready: how many of
    them currently fail their probes (this one included); unavailable: replicas not ready (starting,
    unhealthy, exited) plus starts waiting on a port."""
    all_failing = ready + unavailable >= 2 and failing_ready >= ready
    if ready + unavailable <= 1:
        return Allowance(True, all_failing)
    return Allowance(unavailable < max_unavailable, all_failing)


def describe_hold(service: str, total: int, all_failing: bool, unavailable: int) -> str:
    if all_failing:
        return (f"all {total} replicas of {service} failed together: shared dependency? keeping them "
                f"in rotation and replacing at most {MAX_UNAVAILABLE} at a time")
    return (f"{unavailable} replica{'s' if unavailable != 1 else ''} of {service} already being replaced: "
            f"kept in rotation until a sibling is ready (disruption budget {MAX_UNAVAILABLE})")
