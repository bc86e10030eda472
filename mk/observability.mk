# Observability: a local Prometheus next to `make run`, and promtool on observability/prometheus/.
# (`make app` brings Prometheus, Grafana with observability/dashboards/ and Jaeger under
# docker compose.)
PROMETHEUS_PORT ?= 9090
PROMETHEUS_RUN_DIR := .run/prometheus

.PHONY: prometheus prometheus-tools check-observability

# The observability tests run promtool and a real Prometheus: `make test` makes sure they exist.
test: prometheus-tools

prometheus-tools:
	@bash scripts/ensure_prometheus.sh

prometheus: install prometheus-tools rabbitmq-ui ## Prometheus on :9090 scraping a running `make run` stack, with the alert rules
	@$(BIN)/python scripts/render_prometheus.py --out $(PROMETHEUS_RUN_DIR)/prometheus.yml >/dev/null
	@echo "Prometheus: http://localhost:$(PROMETHEUS_PORT)  (targets: /targets, alerts: /alerts; Ctrl-C stops it)"
	@prometheus --config.file=$(PROMETHEUS_RUN_DIR)/prometheus.yml \
		--storage.tsdb.path=$(PROMETHEUS_RUN_DIR)/data \
		--web.listen-address=127.0.0.1:$(PROMETHEUS_PORT) \
		--enable-feature=exemplar-storage --log.level=warn

check-observability: prometheus-tools ## promtool: scrape configs, alert rules and the rules' unit tests
	@promtool check config observability/prometheus/prometheus.yml observability/prometheus/compose.yml
	@promtool check rules observability/prometheus/rules/*.yml
	@promtool test rules observability/prometheus/tests/*.yml
