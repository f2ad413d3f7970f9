"""`python -m selfieless.apps.users --port 8100 --database-url URL`: run one users replica."""

from ..common.service import serve
from ..common.settings import parse_settings
from .app import create_app


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings("users", argv)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
