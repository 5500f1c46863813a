# Two commands do all the set-up on a fresh machine:
#   make pipeline   # creates .venv from requirements.lock, runs the local pipeline (polarity)
#   make test       # same set-up, then the test suite
DATASET ?= polarity
ARGS ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: pipeline pipeline-imdb test test-unit venv lock clean

$(STAMP): requirements.lock setup.py scripts/setup_venv.sh
	bash scripts/setup_venv.sh

venv: $(STAMP)

pipeline: $(STAMP)
	$(PY) -m pipeline run --dataset $(DATASET) $(ARGS)

pipeline-imdb:
	$(MAKE) pipeline DATASET=imdb

test: $(STAMP)
	$(PY) -m pytest -q tests

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not e2e" tests

# Re-pin every package after changing dependencies in setup.py.
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^sentiment-rnn-pipeline' > requirements.lock.new
	( sed -n '1,3p' requirements.lock; cat requirements.lock.new ) > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock; rm -f requirements.lock.new

clean:
	rm -rf outputs
