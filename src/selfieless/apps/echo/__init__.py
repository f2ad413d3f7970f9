"""A replica small enough to run a thousand of: the scale benchmark's service (issue 28).

`python -m selfieless.apps.echo --port P --service NAME` answers every GET with one fixed JSON
body naming its service and port, and any path ending in `/_health` with `{}`. It is a real
process with a real listening socket, probed and proxied like the course's services, but it holds
no database and imports no web framework (asyncio, uvloop and httptools only), so a preloaded
fork costs about a megabyte of its own (see the README's "Limits").

Modules:
    server      the HTTP/1.1 server: one asyncio protocol per connection, parsed by httptools
    __main__    the command line: port, service name, host (SELFIELESS_* by default)
"""
