.PHONY: install lint test test-gpu smoke

install:  ## torch first: the CPU build from local disk, not a multi-GB CUDA build
	pip install torch==2.13.0 && pip install -e '.[dev]'

lint:
	ruff check src tests benchmarks && ruff format --check src tests benchmarks

test:
	python -m pytest -q

test-gpu:
	python -m pytest -q -m gpu

smoke:  ## one epoch of the default preset on a 4,000-image subset of the JPEG copy
	bash scripts/smoke.sh
