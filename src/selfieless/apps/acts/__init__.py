"""The acts microservice: categories, acts (photos of good deeds), upvotes.

Modules:
    app             the service's application object
    api             its routes (docs/api.md, "Acts service")
    rules           pure validation: the course timestamp format and the base64 image text
    schema          its tables: categories and acts
    store           its SQL: one statement with bound parameters per request
    users_client    asks the users service (through the gateway) whether a username exists
    __main__        `python -m selfieless.apps.acts`: run one replica
"""
