"""Command line: `selfieless` (main.py), `selfieless up` (up.py), admin API client (client.py), load generator (load.py, loadcore.py)."""
