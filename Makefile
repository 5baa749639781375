# linescore: every target sets itself up; `make test` and `make run` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per set of extras: `make run` installs what serving needs, the rest everything.
SERVE_STAMP := $(VENV)/.installed-serve-stamp
FULL_STAMP := $(VENV)/.installed-train-test-client-stamp
PIP_INSTALL = $(BIN)/pip install --quiet --quiet --disable-pip-version-check -c requirements.lock
MODEL_VERSION ?= 2.1.0
BUILD ?= build

.PHONY: install install-serve run test lint models experiments adapt-curves ablation bench soak gallery clean

# Serving: the package and its own dependencies only (no torch, Selenium, astropy...).
$(SERVE_STAMP): pyproject.toml requirements.lock
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "linescore needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e .
	touch $@

# Everything: training, tests and the client tools (a superset of serving's).
$(FULL_STAMP): pyproject.toml requirements.lock
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "linescore needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[train,test,client]'
	touch $(SERVE_STAMP) $@

install-serve: $(SERVE_STAMP)

install: $(FULL_STAMP)

run: install-serve
	$(BIN)/linescore serve --host 127.0.0.1 --port 8080

lint: install
	$(BIN)/ruff check service training tests bench
	$(BIN)/ruff format --check service training tests bench

test: lint
	$(BIN)/pytest

models: install
	$(BIN)/python -m training build --version $(MODEL_VERSION) --workdir $(BUILD)

# Generalisation: the cross-simulator matrix, leave-one-family-out, and the packaged model on
# the simulators it never saw (C, D) (about 95 min on 2 cores).
EXPERIMENT_SIZES ?= --train-size 16000 --test-size 20000 --epochs 6
experiments: install
	$(BIN)/python -m training experiment cross --out models/$(MODEL_VERSION) \
		--workdir $(BUILD)/experiments $(EXPERIMENT_SIZES)
	$(BIN)/python -m training experiment lofo --out models/$(MODEL_VERSION) \
		--workdir $(BUILD)/experiments $(EXPERIMENT_SIZES)
	for simulator in C D; do $(BIN)/python -m training experiment unseen \
		--model models/$(MODEL_VERSION) --simulator $$simulator --test-size 20000 \
		--out models/$(MODEL_VERSION) || exit 1; done
	$(MAKE) adapt-curves
	$(BIN)/python -m training report --model models/$(MODEL_VERSION)

# Learning from a night's labels (models/<version>/ADAPT.md): C and D side by side, one core each,
# then how adapt's settings were chosen (on B, for a parent trained on A alone): about 80 min.
adapt-curves: install
	$(BIN)/python -m training experiment adapt --model models/$(MODEL_VERSION) --simulator C \
		--workdir $(BUILD)/curves --out models/$(MODEL_VERSION) & c=$$!; \
	$(BIN)/python -m training experiment adapt --model models/$(MODEL_VERSION) --simulator D \
		--workdir $(BUILD)/curves --out models/$(MODEL_VERSION); d=$$?; wait $$c && [ $$d = 0 ]
	$(BIN)/python -m training experiment adapt-choices --workdir $(BUILD)/curves \
		--out models/$(MODEL_VERSION)

ablation: install
	$(BIN)/python -m training simulate --out $(BUILD)/ablation.h5 --total 20000 --seed 2020
	$(BIN)/python -m training ablate --data $(BUILD)/ablation.h5 --size 20000 \
		--out models/$(MODEL_VERSION)/ABLATION.md

bench: install
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.choices

# 60 s at 80% of the measured maximum, then schemathesis with thousands of cases (~3 min).
soak: install
	$(BIN)/python -m bench.soak
	SCHEMATHESIS_EXAMPLES=150 $(BIN)/pytest -p no:cacheprovider -s tests/test_schemathesis.py

gallery: install
	$(BIN)/python -m training gallery --out $(BUILD)/gallery.png

clean:
	rm -rf $(VENV) $(BUILD)
