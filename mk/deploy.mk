# Deployment: images, docker compose, kind + Helm, and their checks (docs/deploy.md).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_FILES := -f docker-compose.yml -f docker-compose.observability.yml
IMAGE_TAG ?= dev
# The deployment checks get their own environment (workspace + the `deploy` group), so
# `make install`'s exact sync of .venv and these tools never undo each other.
DEPLOY_VENV := .run/deploy-venv
IMAGE_TARGETS := auth orders event-consumer worker gateway

.PHONY: test-deploy deploy-tools app app-down kind-up kind-down images test-images

deploy-tools: uv
	@UV_PROJECT_ENVIRONMENT=$(DEPLOY_VENV) $(UV) sync --frozen --quiet --group deploy
	@bash scripts/ensure_deploy_tools.sh

test-deploy: deploy-tools ## Check Dockerfile, compose, Helm chart, k8s/ and Tiltfile with real validators
	@DEPLOY_TOOLS_REQUIRED=1 $(DEPLOY_VENV)/bin/pytest tests/deploy -q -p no:cacheprovider

app: env ## The stack under docker compose (+ Prometheus, Grafana, Jaeger); prints the URLs
	@$(COMPOSE) $(COMPOSE_FILES) up --build -d
	@echo "gateway     http://localhost:$${GATEWAY_PORT:-8000}"
	@echo "RabbitMQ    http://localhost:15672  (guest/guest)"
	@echo "Prometheus  http://localhost:9090"
	@echo "Grafana     http://localhost:3000   (admin/admin)"
	@echo "Jaeger      http://localhost:16686"
	@echo "logs: $(COMPOSE) logs -f api   stop: make app-down"

app-down: ## Stop the compose stack (keeps its volumes; add -v by hand to drop them)
	@$(COMPOSE) $(COMPOSE_FILES) down

kind-up: ## A kind cluster with Envoy Gateway, data services, monitoring and the chart
	@bash scripts/kind-up.sh

kind-down: ## Delete the kind cluster
	@bash scripts/kind-down.sh

images: ## Build every image with podman, from locally bootstrapped bases (no registry needed)
	@eval "$$(bash scripts/podman/setup.sh | tail -n 2)"; \
	for target in $(IMAGE_TARGETS); do \
		echo "==> localhost/order-platform/$$target:$(IMAGE_TAG)"; \
		podman build --format docker --network host --build-arg BASE_IMAGE="$$BASE_IMAGE" \
			--build-arg NGINX_IMAGE="$$NGINX_IMAGE" \
			--target $$target -t localhost/order-platform/$$target:$(IMAGE_TAG) . || exit 1; \
	done

test-images: images ## Run the images against the local data services; the README walkthrough through the gateway container
	@python3 scripts/podman/test_images.py
