# The two commands of the README. Both set up .venv first (idempotent, skipped when nothing changed).
.PHONY: env demo test lint

env:
	bash scripts/setup-env.sh

demo: env
	.venv/bin/finet2i demo

test: env
	bash scripts/run-tests.sh

lint: env
	.venv/bin/ruff check src tests workflow_scripts benchmarks
	.venv/bin/snakemake --lint --configfile config/demo.yaml
