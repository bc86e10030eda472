"""The Celery worker that processes orders and reports `order_processed` on the event bus."""
