# cozmox-router container image.
#
#   docker build -t cozmox-router .
#   docker build -t cozmox-router --build-arg PJSUA2=source .
#
# PJSUA2 picks where the pjsua2 Python module comes from:
#   wheel   (default) the pjsua2-python wheel from PyPI: pjproject 2.15.1 with
#           its default limits (4 calls, 8 accounts, 4000-byte packets);
#   source  compile pjproject 2.15.1 in a builder stage with the raised limits
#           of deploy/pjproject/config_site.h, epoll and the system OpenSSL.
# BuildKit (the default builder) skips the stage that PJSUA2 does not name.
#
# The daemon reads /etc/cozmox-router/router.yaml: mount your config there.
# deploy/docker-compose.yaml runs it with host networking, so SIP and HTTP
# bind the addresses the config names.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG PJSUA2=wheel

# ----- pjsua2 from PyPI: no wheel of our own ------------------------------------
FROM ${PYTHON_IMAGE} AS pjsua2-wheel
RUN mkdir /wheels

# ----- pjsua2 compiled from pjproject's release -----------------------------------
FROM ${PYTHON_IMAGE} AS pjsua2-source
ARG PJPROJECT_VERSION=2.15.1
# Set to the archive's SHA-256 to pin it; empty skips the check.
ARG PJPROJECT_SHA256=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Package versions are not pinned: bookworm's archive drops a version once a
# security update replaces it, which would break the build. The base image
# tag fixes the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential ca-certificates curl libssl-dev swig uuid-dev \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir setuptools==75.8.0 wheel==0.45.1
WORKDIR /build
RUN curl -fsSL -o pjproject.tar.gz \
        "https://github.com/pjsip/pjproject/archive/refs/tags/${PJPROJECT_VERSION}.tar.gz" \
    && if [ -n "${PJPROJECT_SHA256}" ]; then \
        echo "${PJPROJECT_SHA256}  pjproject.tar.gz" | sha256sum -c -; fi \
    && tar xzf pjproject.tar.gz && mv "pjproject-${PJPROJECT_VERSION}" pjproject
COPY deploy/pjproject/config_site.h pjproject/pjlib/include/pj/config_site.h
WORKDIR /build/pjproject
# Static libraries built with -fPIC are linked into the Python extension, so
# the wheel needs no pjproject shared library at run time.
RUN ./configure --enable-epoll --disable-sound --disable-video \
        --disable-libwebrtc --disable-libyuv --disable-opencore-amr \
        --disable-silk --disable-sdl --disable-ffmpeg --disable-openh264 \
        CFLAGS="-O2 -fPIC" CXXFLAGS="-O2 -fPIC" \
    && make dep && make -j"$(nproc)" \
    && make -C pjsip-apps/src/swig/python wheel \
    && mkdir /wheels && cp pjsip-apps/src/swig/python/dist/*.whl /wheels/

# A stage name, not an image: hadolint cannot tell them apart.
# hadolint ignore=DL3006
FROM pjsua2-${PJSUA2} AS pjsua2

# ----- the router ------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/cozmox-router
COPY pyproject.toml README.md ./
COPY router ./router
COPY --from=pjsua2 /wheels /wheels
# With a compiled wheel, it replaces the PyPI one: both install the `pjsua2`
# module, and the router imports nothing else from either.
RUN pip install --no-cache-dir . \
    && if ls /wheels/*.whl > /dev/null 2>&1; then \
        pip uninstall -y pjsua2-python && pip install --no-cache-dir /wheels/*.whl; \
    fi \
    && rm -rf /wheels
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin router \
    && mkdir -p /etc/cozmox-router
COPY config/router.example.yaml /etc/cozmox-router/router.yaml
USER 10001
# SIP on UDP and TCP, the HTTP port (metrics, health, admin API) and the RTP
# range of the example config. With host networking these are informational.
EXPOSE 5060/udp 5060/tcp 8080/tcp 40000-41999/udp
# /healthz on router.http; set HEALTHCHECK_URL when the config moves it.
ENV HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]
# SIGTERM starts the drain: give `docker stop -t` more than router.drainSeconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cozmox-router"]
CMD ["run", "-c", "/etc/cozmox-router/router.yaml"]
