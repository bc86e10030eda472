.PHONY: bench

bench: install services nginx ## Load the stack with wrk; report req/s as ratios to a same-run reference
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; }
	@$(BIN)/python -m bench.run $(BENCH_ARGS)

.PHONY: bench-pipeline

bench-pipeline: install services nginx ## Orders at a steady rate; POST -> processed_at latency (median, p99)
	@$(BIN)/python -m bench.pipeline $(BENCH_ARGS)
