"""Where a swarm stack's control-plane lease lives: the labels of a Swarm config, `<stack>-lease`.

A config's labels are the one thing Swarm lets change on a config, and every change is sent with
the version index read before it: the managers commit it through Raft only if nobody wrote in
between ("update out of sequence" otherwise), and only with a quorum. So two control planes
cannot both win a write, and one on a manager cut off from the quorum cannot renew at all. The
rules (who may write what, and when) are orchestrator/lease.py's; this is only the I/O, blocking
(the keeper runs it in a worker thread).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..lease import Lease, from_labels, to_labels
from .swarm_spec import LABEL_STACK

# What the config holds: nothing is read from it, but a config must hold something.
DATA = b"the labels hold the selfieless control-plane lease of this stack\n"


def lease_name(stack: str) -> str:
    return f"{stack}-lease"


@dataclass(frozen=True)
class Record:
    lease: Lease | None     # None: no record, or one whose labels hold no lease
    version: int | None     # the version index to write against (None: no record)
    id: str | None


class SwarmLeaseStore:
    def __init__(self, client: Any, stack: str):
        self.api = client.api
        self.stack = stack
        self.name = lease_name(stack)
        # A renewal runs in a worker thread that a cancelled keeper cannot stop: once remove() has
        # run, a write still on its way must not create the record again (seen: `down` left the
        # lease config behind). The lock orders the two; `removed` refuses later writes.
        self._lock = threading.Lock()
        self._removed = False

    def read(self) -> Record:
        for c in self.api.configs(filters={"name": self.name}):
            spec = c.get("Spec") or {}
            if spec.get("Name") == self.name:   # the name filter matches prefixes
                return Record(from_labels(spec.get("Labels")), int(c["Version"]["Index"]), c["ID"])
        return Record(None, None, None)

    def write(self, lease: Lease, read: Record) -> bool:
        """Write `lease` over what `read` found; False when another write came first, or the
        record was removed by this store."""
        with self._lock:
            return not self._removed and self._write(lease, read)

    def _write(self, lease: Lease, read: Record) -> bool:
        import docker.errors

        if read.id is None:
            try:
                self.api.create_config(self.name, DATA, labels={**to_labels(lease), LABEL_STACK: self.stack})
                return True
            except docker.errors.APIError as e:
                if e.status_code == 409:   # created by another control plane since our read
                    return False
                raise
        current = self.api.inspect_config(read.id)
        spec = dict(current["Spec"])
        spec["Labels"] = {**(spec.get("Labels") or {}), **to_labels(lease)}
        # `docker config update` does not exist in the CLI nor the SDK: the Engine API's
        # POST /configs/{id}/update, with only the labels changed.
        resp = self.api._post_json(self.api._url("/configs/{0}/update", read.id), data=spec,
                                   params={"version": read.version})
        try:
            self.api._raise_for_status(resp)
        except docker.errors.APIError as e:
            if "out of sequence" in str(e):
                return False
            raise
        return True

    def remove(self) -> None:
        """Remove the record (the stack is gone); this store writes nothing after."""
        with self._lock:
            self._removed = True
            self._remove()

    def _remove(self) -> None:
        import docker.errors

        record = self.read()
        if record.id is not None:
            try:
                self.api.remove_config(record.id)
            except docker.errors.NotFound:
                pass
