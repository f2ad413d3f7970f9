"""keepalived's check on a node: does the gateway at this node's own address answer `/` itself?

`python3 -m selfieless.floating_ip.check HOST PORT` exits 0 when `http://HOST:PORT/` answers 200
with the gateway's status JSON (`"gateway": "selfieless"`): the gateway's own page, no backend
involved, so only the gateway's health counts. Standard library only: it runs every second.
"""

from __future__ import annotations

import json
import sys
import urllib.request

TIMEOUT = 1.0


def is_gateway_status(status: int, body: bytes) -> bool:
    """Whether an answer to `/` is the gateway's own status page."""
    if status != 200:
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("gateway") == "selfieless"


def main(argv: list[str]) -> int:
    host, port = argv
    url = f"http://{host}:{int(port)}/"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            return 0 if is_gateway_status(r.status, r.read(65536)) else 1
    except (OSError, ValueError):
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
