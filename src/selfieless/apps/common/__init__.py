"""Code shared by both microservices: settings, errors, JSON bodies, database, operational routes.

Modules:
    service     assembles one microservice: FastAPI app, error handlers, operational routes, schema
    settings    a replica's settings, from flags or SELFIELESS_* environment variables
    errors      the one error type the services raise, and the handlers that answer JSON for every failure
    body        request bodies read as JSON whatever the Content-Type, validated with pydantic
    responses   JSON answers rendered by orjson
    openapi     the bodies parsed by hand, described in the OpenAPI document
    hotpath     the busiest routes, answered without FastAPI's per-request machinery
    ops         _health, _crash, _count, and the middleware behind them
    accesslog   one line per request in a replica's output, and its process title
    db          engines for SQLite, MariaDB/MySQL and PostgreSQL, and the statements' entry points
    aiodb       MariaDB/MySQL and PostgreSQL on the event loop (asyncmy, asyncpg)
    counter     batching: requests that arrive during a round trip share the next one
    dberrors    what a database error means to a request, whichever driver raised it
    dbhealth    what a database error met by the health check means: busy or dead
"""
