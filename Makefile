# sweeplab: reproducible sweeps. `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?= runs
PORT   ?= 5000
SWEEP  ?= cnn
ARGS   ?=
WORKERS ?=
# WORKERS=N: N trials at once on this machine, each in its own worker process (search.workers).
RUNARGS = $(if $(WORKERS),search.workers=$(WORKERS)) $(ARGS)
export TF_CPP_MIN_LOG_LEVEL = 3

.PHONY: help setup run sweep test test-slow test-all ui dashboard report postgres lint bench bench-plan clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## create .venv and install sweeplab with its dev tools

run: setup  ## the default sweep: Optuna over a CNN on the embedded digits set (offline); WORKERS=N
	$(PY) -m search.run output_dir=$(OUT) $(RUNARGS)

sweep: setup  ## a named sweep overlay: make sweep SWEEP=cnn ARGS="search.n_trials=5" WORKERS=2
	$(PY) -m search.run +sweep=$(SWEEP) output_dir=$(OUT) $(RUNARGS)

test: setup  ## the test suite (real training at tiny sizes), without the cases marked slow
	$(PY) -m pytest -q -m "not slow" $(ARGS)

test-slow: setup  ## the long end-to-end cases (kill and resume, clusters, many workers); CI runs them too
	$(PY) -m pytest -q -m "slow and not timing" $(ARGS)

test-all: setup  ## everything: make test, then make test-slow, in one pytest run
	$(PY) -m pytest -q -m "not timing" $(ARGS)

# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: the same UI with 2 processes instead of ~10 (280 MB each).
ui: setup  ## the MLflow UI on 127.0.0.1:$(PORT) over the sweeps' store; prints the sweep's link
	@$(PY) -m tracking.relocate $(OUT)
	@$(PY) -m tracking.run_tags $(OUT) $(PORT)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui \
		--backend-store-uri sqlite:///$(OUT)/mlflow.db \
		--default-artifact-root $(OUT)/mlartifacts --host 127.0.0.1 --port $(PORT) --workers 1

DPORT ?= 8080
dashboard: setup  ## optuna-dashboard on 127.0.0.1:$(DPORT) over the Optuna studies of $(OUT)
	$(VENV)/bin/optuna-dashboard sqlite:///$(OUT)/optuna.db --host 127.0.0.1 --port $(DPORT)

report: setup  ## leaderboard of the latest sweep; ARGS="STUDY --top 5 --sort seconds --format csv --html"
	$(PY) -m search.report --output-dir $(OUT) $(ARGS)

postgres:  ## install PostgreSQL server binaries (Debian, as root) for the multi-worker tests
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# Clusters (docs/clusters.md): JOBS workers of one sweep on a shared study; ARGS must name the
# servers: ARGS="search.storage=postgresql+psycopg://... tracking.tracking_uri=http://..."
JOBS        ?= 2
JOB_CPUS    ?= 1
RAY_ADDRESS ?= auto
.PHONY: slurm ray

slurm: setup  ## JOBS workers as Slurm jobs (Hydra's submitit launcher): make slurm JOBS=8 ARGS="..."
	$(PY) -m search.run -m +cluster=slurm 'worker=range($(JOBS))' output_dir=$(OUT) $(ARGS)

ray: setup  ## JOBS workers as Ray tasks on RAY_ADDRESS (default auto), JOB_CPUS CPUs each
	$(PY) -m search.cluster.ray_workers --workers $(JOBS) --address $(RAY_ADDRESS) \
		--cpus-per-worker $(JOB_CPUS) -- output_dir=$(OUT) $(ARGS)

bench: setup  ## benchmarks -> bench/results/*.json; QUICK=1: minutes; ARGS="overhead": only that
	$(PY) bench/run_all.py $(if $(QUICK),--quick) $(ARGS)

bench-plan: setup  ## the plan printed before trial 0 against what ran, within 25 % (tests marked timing)
	$(PY) -m pytest -q -m timing $(ARGS)

lint: setup  ## ruff, the import contracts of pyproject's [tool.importlinter] (lint-imports), then mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

clean:  ## delete run outputs (MLflow store, Optuna DB, artifacts); keeps .venv
	rm -rf $(OUT) outputs multirun .pytest_cache
