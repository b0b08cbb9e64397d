# kgserver's image: the `kgserver` CLI (import, train, serve, query) and the MLflow tracking
# server, as run by the manifests in k8s/.
#
#   docker build -t kgserver:0.1.0 .
#
# The install step is `make install`, the very command a developer runs: the same pins
# (constraints.txt), the same pip arguments and packages, one source of truth. It installs
# into /opt/kgserver/.venv with the source beside it (migrations/ included) and copies that
# tree into a runtime stage that has no build tools and runs as a non-root user.
#
# CPU by default: torch's CPU wheels (no CUDA libraries) via TORCH_INDEX; DGL from PyPI is
# the CPU build. CUDA variant (see k8s/README.md, "GPU image"):
#   docker build -t kgserver:0.1.0-cu121 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu121 \
#     --build-arg DGL_WHEELS=https://data.dgl.ai/wheels/torch-2.2/cu121/repo.html .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# An extra index for torch (its +cpu/+cuXXX builds satisfy constraints.txt's torch pin and
# win over the plain build), and an optional find-links page for a CUDA build of DGL.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG DGL_WHEELS=
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kgserver
# What `make install` reads: the Makefile, its prerequisites and the packages it installs.
COPY Makefile pyproject.toml constraints.txt README.md ./
COPY plugins/ plugins/
COPY kgserver/ kgserver/
COPY migrations/ migrations/
RUN export PIP_NO_CACHE_DIR=1 PIP_EXTRA_INDEX_URL="$TORCH_INDEX" \
    && if [ -n "$DGL_WHEELS" ]; then export PIP_FIND_LINKS="$DGL_WHEELS"; fi \
    && make install EXTRAS= \
    && .venv/bin/kgserver --help >/dev/null
# The CoDEx-S sample that k8s/jobs/import imports.
COPY examples/codex-s/ examples/codex-s/

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 kgserver \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/kgserver --create-home \
       --shell /usr/sbin/nologin kgserver
COPY --from=build /opt/kgserver /opt/kgserver
ENV PATH=/opt/kgserver/.venv/bin:$PATH \
    KGSERVER_HOME=/var/lib/kgserver \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/kgserver
EXPOSE 50051
ENTRYPOINT ["kgserver"]
CMD ["--help"]
