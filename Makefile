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

SAMPLE_IMAGE := models/samples/astronaut.jpg
$(SAMPLE_IMAGE):
	$(MAKE) setup
	mkdir -p $(dir $@)
	$(PY) -c "from PIL import Image; from skimage import data; Image.fromarray(data.astronaut()).save('$@', quality=90)"

# Until the gRPC server exists (issue 4), serving = the C++ runtime answering one request per task kind on a
# sample photo: JSON results on stdout, drawings under models/samples/.
serve: build model $(SAMPLE_IMAGE)
	$(BUILD_DIR)/engine/florence2-probe --model $(MODEL_DIR)
	$(BUILD_DIR)/engine/florence2-run --model $(MODEL_DIR) --task caption --num-beams 1 --max-new-tokens 24 $(SAMPLE_IMAGE)
	$(BUILD_DIR)/engine/florence2-run --model $(MODEL_DIR) --task od --max-new-tokens 48 \
	  --draw models/samples/astronaut-od.png $(SAMPLE_IMAGE)

clean:
	rm -rf $(BUILD_DIR) models
