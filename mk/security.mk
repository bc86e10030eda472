.PHONY: audit

audit: install ## pip-audit over uv.lock: fails on a known vulnerability with a fix (exit 3: not reachable)
	@$(BIN)/python scripts/audit.py
