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

dlq: install ## Show dead letters (count + first LIMIT messages); QUEUE=<queue> for one queue
	@for queue in $(or $(QUEUE),$(DLQ_QUEUES)); do \
		$(BIN)/order-bus dlq show --queue $$queue --limit $(LIMIT) || true; \
	done

dlq-redrive: install ## Move a queue's dead letters back: make dlq-redrive QUEUE=<queue>
	@if [ -z "$(QUEUE)" ]; then \
		echo "usage: make dlq-redrive QUEUE=<queue>   (one of: $(DLQ_QUEUES))"; exit 2; \
	fi
	@$(BIN)/order-bus dlq redrive --queue $(QUEUE)
