"""SelfieLessActs: a small orchestrator for HTTP microservices and the app it runs by default.

Packages:
    orchestrator/   the control plane: stack files, reconcile, probes, scaling, rollouts, drivers
    gateway/        the data plane: the HTTP/1.1 reverse proxy in front of every service
    admin/          a running stack's JSON API, Prometheus metrics and dashboard
    cli/            the `selfieless` command (up, status, events, scale, logs, apply, down, load...)
    apps/           the SelfieLessActs microservices (users, acts) and web front end
    floating_ip/    a swarm stack's floating IP: keepalived's configuration and entrypoint on each node
    __main__        `python -m selfieless`, the same as the `selfieless` command
The bundled stack files are data in ``stacks/``.
"""

__version__ = "0.1.0"
