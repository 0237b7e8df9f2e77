# syntax=docker/dockerfile:1
# surgescale: one image for every part (gateway, controller, simulators, load generator); the
# simulated cluster and the demo need the simulator's libraries: build with --build-arg EXTRAS=sim.
# The entry point is the `surgescale` command; pick the part with the first argument, e.g.
#   docker run --rm surgescale:dev gateway --help
# The base image is pinned to an exact Python patch release and Debian release; to pin it by
# digest as well, build with --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- optional data for the simulators (dev overlay, docker-compose) ----
# Empty unless supplied as named build contexts, which replace these stages:
#   docker build --build-context calibration=sim/data/calibration \
#                --build-context karpenter-crds=sim/data/karpenter-crds -t surgescale:dev .
# (docker-compose.yml does this.) Without them the gateway and the controller work as usual;
# only the simulated pods and cluster need the tables and CRDs.
FROM scratch AS calibration
FROM scratch AS karpenter-crds

# ---- build stage: a virtualenv with the project and its dependencies, no compilers kept ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# Where pip must trust a CA bundle of the machine's (mounted read-only into the build), e.g.
#   podman build --volume /etc/ssl/certs:/etc/ssl/certs:ro \
#                --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt ...
# (tools/compose_check does this); unset, pip uses the image's own bundle.
ARG PIP_CERT
WORKDIR /src
RUN python -m venv /opt/surgescale
# Dependencies first, in a layer of their own keyed by pyproject.toml alone (they change less
# often than the code), then the packages themselves without dependencies. Only what the product
# runs: the base dependencies, no extra unless named in EXTRAS. The gateway, the controller, the
# simulated pod and the load generator run without the `sim` extra (plots, terminal view, the
# simulated API server's schema and patch libraries); docker-compose.yml builds with EXTRAS=sim
# because it runs the simulated cluster (tests/manifests/test_image_boundary.py checks both).
ARG EXTRAS=""
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *(d for e in sys.argv[1].replace(',', ' ').split() for d in p['optional-dependencies'][e]), sep='\\n')" "$EXTRAS" > requirements.txt \
    && /opt/surgescale/bin/pip install --no-cache-dir -r requirements.txt
COPY README* ./
COPY surgescale ./surgescale
COPY gateway ./gateway
COPY controller ./controller
COPY sim ./sim
RUN /opt/surgescale/bin/pip install --no-cache-dir --no-deps . \
    && /opt/surgescale/bin/pip uninstall -q -y pip setuptools \
    && /opt/surgescale/bin/python -m compileall -q /opt/surgescale/lib

# ---- runtime stage: slim base, the virtualenv, an unprivileged user, nothing else ----
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="surgescale" \
      org.opencontainers.image.description="Low-latency, event-driven autoscaler for LLM inference on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 surgescale \
    && useradd --system --uid 10001 --gid surgescale --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin surgescale
COPY --from=build /opt/surgescale /opt/surgescale
COPY --from=calibration / /opt/surgescale/data/calibration/
COPY --from=karpenter-crds / /opt/surgescale/data/karpenter-crds/
ENV PATH=/opt/surgescale/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SURGESCALE_CALIBRATION_DIR=/opt/surgescale/data/calibration \
    SURGESCALE_KARPENTER_CRDS=/opt/surgescale/data/karpenter-crds
WORKDIR /tmp
# Numeric user so Kubernetes can check runAsNonRoot without resolving names.
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["surgescale"]
CMD ["--help"]
