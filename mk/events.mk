# The event pipeline: RabbitMQ's UI and the dead-letter queues.
.PHONY: rabbitmq-ui dlq dlq-redrive

# The queues `make dlq` looks at: each subscriber's dead-letter queue, and the exchange's
# unrouted queue (events published before any subscriber had declared its queue).
BUS_QUEUE_PREFIX ?= order-platform
BUS_EXCHANGE ?= order-platform.events
DLQ_QUEUES ?= $(BUS_QUEUE_PREFIX).event-consumer.new_order.dlq \
	$(BUS_QUEUE_PREFIX).orders.order_processed.dlq \
	$(BUS_EXCHANGE).unrouted
LIMIT ?= 10

rabbitmq-ui: ## Enable RabbitMQ's management UI (:15672) and Prometheus metrics, if root
	@bash scripts/rabbitmq_plugins.sh

# QUEUE=tasks names the worker's dead-letter list of failed Celery tasks (in Redis, read
# with the WORKER_* settings; see order_worker.deadletters).
TASK_DLQ := tasks
# QUEUE=outbox names the outbox events the relay set aside (in PostgreSQL, read with the
# ORDERS_* settings; see orders_service.outbox_dlq).
OUTBOX_DLQ := outbox

dlq: install ## Show dead letters (count + first LIMIT messages): bus queues, failed Celery tasks, outbox events set aside; QUEUE=<queue> for one
	@for queue in $(or $(QUEUE),$(DLQ_QUEUES) $(TASK_DLQ) $(OUTBOX_DLQ)); do \
		if [ "$$queue" = "$(TASK_DLQ)" ]; then \
			$(BIN)/order-worker dlq show --limit $(LIMIT) || true; \
		elif [ "$$queue" = "$(OUTBOX_DLQ)" ]; then \
			$(BIN)/orders-service dlq show --limit $(LIMIT) || true; \
		else \
			$(BIN)/order-bus dlq show --queue $$queue --limit $(LIMIT) || true; \
		fi; \
	done

dlq-redrive: install ## Move dead letters back: make dlq-redrive QUEUE=<queue> (QUEUE=tasks: failed Celery tasks, QUEUE=outbox: outbox events)
	@if [ -z "$(QUEUE)" ]; then \
		echo "usage: make dlq-redrive QUEUE=<queue>   (one of: $(DLQ_QUEUES) $(TASK_DLQ) $(OUTBOX_DLQ))"; exit 2; \
	fi
	@if [ "$(QUEUE)" = "$(TASK_DLQ)" ]; then \
		$(BIN)/order-worker dlq redrive; \
	elif [ "$(QUEUE)" = "$(OUTBOX_DLQ)" ]; then \
		$(BIN)/orders-service dlq redrive; \
	else \
		$(BIN)/order-bus dlq redrive --queue $(QUEUE); \
	fi
