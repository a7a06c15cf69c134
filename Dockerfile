# syntax=docker/dockerfile:1
# One image for every EnerLink service: `docker run enerlink <ingest|aggregate|archive|api|edge|up>`.
# Build stage installs the project into a virtualenv; the runtime stage copies only that venv
# onto a slim base and runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/enerlink
WORKDIR /src
# README.m[d]: the project's long description when present (a glob, so its absence is no error)
COPY pyproject.toml README.m[d] ./
COPY enerlink ./enerlink
COPY schemas ./schemas
COPY edge ./edge
COPY ingest ./ingest
COPY aggregator ./aggregator
COPY archiver ./archiver
COPY settlement ./settlement
COPY api ./api
COPY hass ./hass
# "sim" brings the simulator's science libraries (the demo fleet); EXTRAS= for a leaner image
ARG EXTRAS=sim
RUN /opt/enerlink/bin/pip install --no-compile "./${EXTRAS:+[${EXTRAS}]}" \
 && /opt/enerlink/bin/python -m compileall -q /opt/enerlink/lib

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="enerlink" \
      org.opencontainers.image.description="Edge gateway and ingestion pipeline for smart energy meters" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 enerlink \
 && useradd --system --uid 10001 --gid enerlink --home-dir /var/lib/enerlink --create-home \
    --shell /usr/sbin/nologin enerlink \
 && install -d -o enerlink -g enerlink /var/lib/enerlink/state /var/lib/enerlink/archive
COPY --from=build /opt/enerlink /opt/enerlink
ENV PATH=/opt/enerlink/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER enerlink
WORKDIR /var/lib/enerlink
EXPOSE 8000
ENTRYPOINT ["enerlink"]
CMD ["--help"]
