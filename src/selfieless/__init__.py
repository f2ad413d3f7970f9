"""SelfieLessActs: a small orchestrator for HTTP microservices and the app it runs by default."""

__version__ = "0.1.0"
