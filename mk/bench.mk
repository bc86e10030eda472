# Benchmarks (docs/performance.md). Each starts its own stack on free ports, like the e2e tests.
.PHONY: wrk bench bench-full bench-quick bench-pipeline

wrk:
	@bash scripts/ensure_wrk.sh

bench: install services nginx wrk ## Issue 9's targets vs same-run references (~15 min); bench/results/
	@$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-full: install services nginx wrk ## make bench plus the 10M-row table
	@$(BIN)/python -m bench.run --full $(BENCH_ARGS)

bench-quick: install services nginx wrk ## Every bench scenario briefly (~1 min); fails on errors, never on speed
	@$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

bench-pipeline: install services nginx ## Orders at a steady rate; POST -> processed_at latency (median, p99)
	@$(BIN)/python -m bench.pipeline $(BENCH_ARGS)
