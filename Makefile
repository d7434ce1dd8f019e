# florence-serve: one entry point for set-up, build, test and serve.
#   make test    set up everything (Debian packages, Python venv), build, run ctest and pytest
#   make serve   set up, build, export the default model and run the gRPC server on localhost:50051
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
	libgoogle-perftools-dev libjpeg62-turbo-dev libpng-dev libwebp-dev libtiff-dev zlib1g-dev \
	libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler prometheus-cpp-dev openssl clang nginx nghttp2-client

.PHONY: setup build test test-cpp test-python test-sanitize test-sanitize-inputs model serve image clean

setup:
	tools/setup/apt.sh $(APT_PACKAGES)
	tools/setup/venv.sh
	tools/setup/go_tools.sh
	tools/setup/deploy_tools.sh

# Extra configure arguments and build targets (the image's builder: CMAKE_ARGS=-DFLORENCE_BUILD_TESTS=OFF
# BUILD_TARGETS=florence2-server).
CMAKE_ARGS ?=
BUILD_TARGETS ?=

build: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DFLORENCE_PYTHON=$(CURDIR)/$(PY) -DFLORENCE_BUILD_SERVER=ON \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" $(CMAKE_ARGS)
	cmake --build $(BUILD_DIR) -j$(JOBS) $(if $(BUILD_TARGETS),--target $(BUILD_TARGETS))

test-cpp: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j1

test-python: build
	$(PY) -m pytest

test: test-cpp test-sanitize-inputs test-python

# The C++ suites built with AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer (any finding fails the
# test) in $(SANITIZE_BUILD_DIR), on glibc malloc (ASan replaces it; tcmalloc would too). `make test-sanitize`
# builds and runs everything (~20 min to build and ~40 min to run on 2 cores: not part of `make test`);
# SANITIZE_TESTS narrows the ctest selection, SANITIZE_TARGETS the build.
SANITIZE_BUILD_DIR ?= build-asan
SANITIZE_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
SANITIZE_TESTS ?= .
SANITIZE_TARGETS ?=
export ASAN_OPTIONS ?= detect_leaks=1:strict_string_checks=1
export UBSAN_OPTIONS ?= print_stacktrace=1

test-sanitize: setup
	cmake -S . -B $(SANITIZE_BUILD_DIR) -G Ninja -DFLORENCE_PYTHON=$(CURDIR)/$(PY) -DFLORENCE_BUILD_SERVER=ON \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
	  -DFLORENCE_TCMALLOC=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS=$(SANITIZE_FLAGS)" \
	  "-DCMAKE_EXE_LINKER_FLAGS=$(SANITIZE_FLAGS)" "-DCMAKE_SHARED_LINKER_FLAGS=$(SANITIZE_FLAGS)"
	cmake --build $(SANITIZE_BUILD_DIR) -j$(JOBS) $(if $(SANITIZE_TARGETS),--target $(SANITIZE_TARGETS))
	ctest --test-dir $(SANITIZE_BUILD_DIR) --output-on-failure -j1 -R '$(SANITIZE_TESTS)'

# Part of `make test`: the code that parses bytes a client sends (image decoders and their limits, the
# tokenizer, the generated-text parser, the PNG mask writer) under the sanitizers.
SANITIZE_INPUT_TARGETS := image_decode_test image_preprocess_test image_letterbox_test tokenizer_unit_test \
	tokenizer_model_test postprocess_parse_test postprocess_vectors_test mask_png_test
test-sanitize-inputs:
	$(MAKE) test-sanitize SANITIZE_TARGETS="$(SANITIZE_INPUT_TARGETS)" \
	  SANITIZE_TESTS='^(image_|tokenizer|postprocess_|mask_png)'

$(MODEL_DIR)/manifest.json: tools/requirements.txt $(wildcard tools/florence2/*.py) tools/florence2_export.py
	$(MAKE) setup
	$(PY) tools/florence2_export.py $(MODEL_ARGS) --out $(MODEL_DIR)

model: $(MODEL_DIR)/manifest.json

# The README's first command: set up, build, pick/export the model and run florence2-server in the foreground
# on localhost:50051 (metrics :9090), printing grpcurl examples (tools/serve.sh).
serve: build
	BUILD_DIR=$(BUILD_DIR) tools/serve.sh

# The container image without a Docker daemon (root; buildah, podman, debootstrap): build it, then run it and call
# the server inside it over gRPC (docs/DEPLOY.md, "The image"). Not part of `make test`: ~15-20 min, ~25 GB.
image:
	tools/setup/image_tools.sh
	tools/image/build.sh
	tools/image/smoke.sh

clean:
	rm -rf $(BUILD_DIR) models
