"""Command line. Modules:
    main        `selfieless` and every command but `up`
    up          `selfieless up`: a stack in the foreground with its admin API
    detached    `up --driver swarm --detach` / `down --swarm STACK`: the control plane as a Swarm service
    client      the admin API client, and how a command finds the running `up`
    load        `selfieless load`: the open-loop load generator
    loadcore    its pure parts: the schedule, the target URL, the summary
    __main__    `python -m selfieless.cli`
"""
