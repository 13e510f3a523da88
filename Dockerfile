# One image, two programs: the operator (entrypoint, runs as non-root) and the node agent
# (`lwt-agent`, started by the operator's DaemonSet as root with only CAP_BPF and CAP_NET_ADMIN;
# see docs/install.md),
# plus the compiled built-in BPF objects. Build: docker build -t lwt-operator:0.1.0 .
#
# tests/packaging/test_dockerfile.py runs this file's RUN commands (builder stage) on the test
# machine, with the path ARGs pointed into a temp dir: keep every build step in a RUN of the
# builder stage and every path in an ARG. No `# syntax=` directive: it would make BuildKit pull a
# frontend image at build time; the built-in frontend (Docker >= 23, BuildKit) knows RUN --mount.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# Where the builder puts the virtualenv and the BPF objects; the runtime stage copies both to
# the same paths (a virtualenv is not relocatable).
ARG VENV=/opt/lwt-operator
ARG BPF_BUILD=/build/bpf
# clang compiles the built-ins for -target bpf; libbpf-dev has bpf_helpers.h; the libc and
# kernel headers are the ones bpf/Makefile includes (docs/kernel-facts.md#building-bpf-objects-on-debian). Debian's own packages of
# the release the base image is built on: pinning versions would break with every point
# release, the base image tag pins the release (hadolint DL3008 is ignored for that reason).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang make libbpf-dev linux-libc-dev libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY bpf/ bpf/
RUN make -C bpf BUILD="${BPF_BUILD}"

COPY pyproject.toml README.md ./
COPY node-agent/ node-agent/
COPY operator/ operator/
# A regular (non-editable) install: the runtime image has no source tree. The cache mount
# keeps pip's downloads out of the image layer and speeds up rebuilds.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv "${VENV}" \
    && "${VENV}/bin/pip" install --no-compile . \
    && "${VENV}/bin/lwt-operator" --help >/dev/null \
    && "${VENV}/bin/lwt-agent" --help >/dev/null

FROM ${PYTHON_IMAGE}
ARG VENV=/opt/lwt-operator
ARG BPF_BUILD=/build/bpf
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="lwt-operator" \
      org.opencontainers.image.description="Kubernetes operator and node agent that attach Linux LWT BPF programs to pod routes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

COPY --from=builder ${VENV} ${VENV}
# Only the built-ins (bpf/*.c), not the loader's test objects (bpf/testobj/).
COPY --from=builder ${BPF_BUILD}/*.o /usr/lib/lwt-operator/bpf/

ENV PATH="${VENV}/bin:${PATH}" \
    LWT_BPF_DIR=/usr/lib/lwt-operator/bpf \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The operator's identity. The agent DaemonSet overrides it (runAsUser: 0): capabilities
# given to a non-root user are not effective without ambient capabilities, which Kubernetes
# cannot grant.
USER 65532:65532
ENTRYPOINT ["lwt-operator"]
CMD ["--help"]
