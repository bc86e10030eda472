"""The orders database's Alembic history. Run it with ``orders-service migrate``."""
