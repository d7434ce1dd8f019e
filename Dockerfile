# florence-serve image: florence2-server plus the model-export tool, for Kubernetes (deploy/) or a plain run.
#
#   docker build -t florence-serve:cpu .                                   # CPU LibTorch, Debian bookworm
#   docker build -t florence-serve:cuda --build-arg FLAVOR=cuda .          # CUDA 13.0 LibTorch
#   docker build -t florence-serve:cuda --build-arg FLAVOR=cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 .
#   docker build --build-arg BAKE_MODEL=1 ...                              # random base weights baked in
#
# Daemonless (buildah/podman, no registry needed): tools/image/build.sh, then tools/image/smoke.sh.
# Build args, layout and what was verified: docs/DEPLOY.md, "The image".
#
# Two stages. `builder` is a Debian machine set up exactly as the README's `make setup` does (Makefile's
# package list through tools/setup/apt.sh, .venv from tools/requirements.txt through tools/setup/venv.sh) and
# builds with `make build`. `runtime` gets the server with the shared libraries it loads (tools/image/bundle.sh),
# a venv holding only what tools/florence2_export.py imports, torch being the very wheel the server was built
# against, and the repository's tools/. It runs as uid 10001 and writes nothing outside /tmp and /models.

# Builder: Debian, because the Makefile's package list names Debian packages.
ARG BUILDER_IMAGE=debian:bookworm-slim
# Runtime base: any image with glibc >= 2.36 (the builder's) and apt's python3 >= 3.11 with python3-venv.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
# cpu: torch 2.11.0+cpu from PyTorch's CPU index. cuda: PyPI's torch 2.11.0, the CUDA 13.0 build, which brings
# its CUDA libraries (cuBLAS, cuDNN, NCCL, ...) as pip packages: the host needs only the NVIDIA driver.
ARG FLAVOR=cpu
# auto (from FLAVOR), pypi (PyPI alone), or an index URL: see tools/image/torch_index.sh.
ARG TORCH_INDEX_URL=auto
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /opt/florence-serve
# Unpinned on purpose, here and below: the base image's suite fixes the versions, and a pinned point release
# disappears from the mirrors at the next one.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends make patchelf \
 && rm -rf /var/lib/apt/lists/*
# Set-up first, from the files it reads only: this layer survives source changes.
COPY Makefile ./
COPY tools/setup/ tools/setup/
COPY tools/requirements.txt tools/
COPY tools/image/torch_index.sh tools/image/
RUN extra="$(tools/image/torch_index.sh "$FLAVOR" "$TORCH_INDEX_URL")" \
 && if [ -n "$extra" ]; then export PIP_EXTRA_INDEX_URL="$extra"; fi \
 && make setup \
 && .venv/bin/python -c 'import torch; print("builder: torch", torch.__version__, "CUDA", torch.version.cuda)' \
 && rm -rf /var/lib/apt/lists/* /root/.cache/pip
COPY . .
# CMAKE_ARGS / BUILD_TARGETS narrow the build to the server where the Makefile knows them; a Makefile without
# them builds everything, tests included, which is slower but gives the same server.
RUN make build CMAKE_ARGS=-DFLORENCE_BUILD_TESTS=OFF BUILD_TARGETS=florence2-server \
 && tools/image/bundle.sh build dist /opt/florence-serve

FROM ${BASE_IMAGE} AS runtime
ARG FLAVOR=cpu
ARG TORCH_INDEX_URL=auto
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
LABEL org.opencontainers.image.title="florence-serve" \
      org.opencontainers.image.description="florence2-server (gRPC Florence-2) and its model-export tool" \
      florence-serve.flavor="${FLAVOR}"
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 florence \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin florence
WORKDIR /opt/florence-serve
COPY tools/requirements.txt tools/
COPY tools/image/torch_index.sh tools/image/runtime_venv.sh tools/image/
RUN tools/image/runtime_venv.sh "$FLAVOR" "$TORCH_INDEX_URL"
COPY --from=builder /opt/florence-serve/dist/ ./
COPY tools/ tools/
# HOME=/tmp: the user has no home and the root filesystem may be read-only; /tmp is the writable scratch.
# NVIDIA_DRIVER_CAPABILITIES: what the NVIDIA container runtime mounts when a GPU is given (none otherwise).
ENV PATH=/opt/florence-serve/.venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Declared this late so that changing them rebuilds only the layer below.
# BAKE_MODEL=1 exports MODEL_ARGS into MODEL_DIR at build time (a volume mounted on /models hides it);
# MODEL_DIR is also the server's default --model.
ARG BAKE_MODEL=0
ARG MODEL_DIR=/models/florence2-base-random
ARG MODEL_ARGS="--random base --seed 0"
# MODEL_ARGS is split into words on purpose (SC2086).
# hadolint ignore=SC2086
RUN ln -s /opt/florence-serve/bin/florence2-server /usr/local/bin/florence2-server \
 && device=cpu && if [ "$FLAVOR" = cuda ]; then device=cuda; fi \
 && printf -- '--model=%s\n--address=0.0.0.0:50051\n--metrics_address=0.0.0.0:9090\n--device=%s\n' \
      "$MODEL_DIR" "$device" >server.flags \
 && florence2-server --version >/dev/null \
 && mkdir -p /models \
 && if [ "$BAKE_MODEL" = 1 ]; then \
      .venv/bin/python tools/florence2_export.py $MODEL_ARGS --out "$MODEL_DIR"; \
    fi
USER 10001:10001
EXPOSE 50051 9090
ENTRYPOINT ["/opt/florence-serve/bin/florence2-server"]
# Later flags override the file's: `docker run IMAGE --flagfile=/opt/florence-serve/server.flags --threads=2`.
CMD ["--flagfile=/opt/florence-serve/server.flags"]
