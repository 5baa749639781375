# linescore scoring service: the packaged model behind gunicorn, as a non-root user, on a
# read-only root filesystem (everything it writes goes under /tmp).
# Stage 1 builds the wheel; stage 2 installs it with the pinned dependencies and the models.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md openapi.yaml ./
COPY service ./service
COPY training ./training
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LINESCORE_MODELS_ROOT=/app/models \
    LINESCORE_THREADS=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    NUMBA_NUM_THREADS=1 \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=8388608 \
    MALLOC_TRIM_THRESHOLD_=33554432 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    PROMETHEUS_MULTIPROC_DIR=/tmp/linescore-metrics
RUN groupadd --system --gid 10001 linescore \
    && useradd --system --uid 10001 --gid linescore --no-create-home linescore
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --constraint /tmp/requirements.lock /wheels/*.whl \
    && rm -rf /wheels /tmp/requirements.lock
WORKDIR /app
COPY models ./models
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"]
CMD ["linescore", "serve", "--host", "0.0.0.0", "--port", "8080"]
