"""`python -m selfieless.apps.acts --port 8000 --database-url URL --users-url URL`: run one acts replica."""

from ..common.service import serve
from ..common.settings import parse_settings
from .app import create_app


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings("acts", argv, with_users_url=True)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
