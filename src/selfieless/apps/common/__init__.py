"""Code shared by both microservices: settings, errors, JSON bodies, database, operational routes."""
