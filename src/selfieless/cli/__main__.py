"""`python -m selfieless.cli`: the same as the `selfieless` command."""

from .main import main

main()
