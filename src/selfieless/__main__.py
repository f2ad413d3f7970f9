"""`python -m selfieless`: the same as the `selfieless` command."""

from selfieless.cli.main import main

main()
