.PHONY: openapi openapi-check

openapi: install ## Write the OpenAPI documents and event schemas under docs/ (served at /docs)
	@$(BIN)/python scripts/openapi.py

openapi-check: install ## Fail when docs/openapi or docs/events no longer match the code
	@$(BIN)/python scripts/openapi.py --check
