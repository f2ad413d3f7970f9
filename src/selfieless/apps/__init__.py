"""The SelfieLessActs microservices and the code they share.

Packages:
    users/    sign-up, removal and the list of usernames
    acts/     categories, acts (photos of good deeds), upvotes
    web/      the single-page web front end under /ui/
    echo/     a replica small enough to run a thousand of (the scale benchmark's service)
    common/   what the services share: settings, errors, JSON bodies, databases, operational routes
"""
