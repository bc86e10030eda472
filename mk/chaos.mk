# Faults under load: tests/chaos on private PostgreSQL, Redis and RabbitMQ (never the shared
# ones). `make test` runs the same cases with faults of a few seconds.
.PHONY: chaos

CHAOS_FAULT_SECONDS ?= 20

chaos: install nginx ## Every fault case with 20 s faults under ~10 orders/s; prints the table (JSON in .run/chaos/)
	@CHAOS_ALL=1 CHAOS_FAULT_SECONDS=$(CHAOS_FAULT_SECONDS) $(BIN)/pytest -q tests/chaos
