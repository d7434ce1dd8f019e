# florence-serve: one entry point for set-up, build, test and serve.
#   make test    set up everything (Debian packages, Python venv), build, run ctest and pytest
#   make serve   set up, export the default model, build, and run it (see README)
SHELL := /bin/bash
PY := .venv/bin/python
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
# Default served model: seeded random weights of the real Florence-2-base architecture.
MODEL_DIR ?= models/florence2-base-random
MODEL_ARGS ?= --random base --seed 0
APT_PACKAGES := build-essential cmake ninja-build pkg-config git \
	'python3 --version=python3' 'python3 -m venv --help=python3-venv' 'npm --version=npm' \
	libabsl-dev nlohmann-json3-dev libssl-dev libgtest-dev libgmock-dev libspdlog-dev \
	libjpeg62-turbo-dev libpng-dev libwebp-dev libtiff-dev zlib1g-dev

.PHONY: setup build test test-cpp test-python model serve clean

setup:
	tools/setup/apt.sh $(APT_PACKAGES)
	tools/setup/venv.sh

build: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DFLORENCE_PYTHON=$(CURDIR)/$(PY) \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(BUILD_DIR) -j$(JOBS)

test-cpp: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j1

test-python: setup
	$(PY) -m pytest

test: test-cpp test-python

$(MODEL_DIR)/manifest.json: tools/requirements.txt $(wildcard tools/florence2/*.py) tools/florence2_export.py
	$(MAKE) setup
	$(PY) tools/florence2_export.py $(MODEL_ARGS) --out $(MODEL_DIR)

model: $(MODEL_DIR)/manifest.json

serve: build model
	$(BUILD_DIR)/engine/florence2-probe --model $(MODEL_DIR)

clean:
	rm -rf $(BUILD_DIR) models
