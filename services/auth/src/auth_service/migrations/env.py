from alembic import context

from auth_service.models import Base
from auth_service.settings import Settings
from order_common.migrations import run_env

if context.config.config_file_name is not None:
    # The `alembic` CLI with services/auth/alembic.ini: take the URL from the service settings
    # (AUTH_DATABASE_URL). `auth-service migrate` and tests pass theirs in the config instead.
    context.config.set_main_option(
        "sqlalchemy.url", Settings().database_url.get_secret_value().replace("%", "%%")
    )

run_env(Base.metadata)
