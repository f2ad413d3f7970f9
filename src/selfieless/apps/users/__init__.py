"""The users microservice: sign-up, removal and the list of usernames.

Modules:
    app         the service's application object
    api         its routes (docs/api.md, "Users service")
    passwords   the client's SHA-1 digest kept only as a salted scrypt hash
    schema      its tables
    __main__    `python -m selfieless.apps.users`: run one replica
"""
