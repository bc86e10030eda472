"""Consumes `new_order` events and hands each order to the Celery worker, once per event id."""
