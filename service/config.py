"""Configuration: read once from the environment when the server or the app starts, nowhere else.

| variable | default | meaning |
|---|---|---|
| LINESCORE_MODEL_DIR | (unset) | serve exactly this model directory |
| LINESCORE_MODELS_ROOT | models/ of this checkout | else serve the newest version under it |
| LINESCORE_MAX_BATCH | 4096 | most detections in one batch request |
| LINESCORE_MAX_BODY_BYTES | 67108864 | largest request body (64 MiB) |
| LINESCORE_THREADS | 1 | threads per worker for ONNX Runtime, faiss, numba, OpenMP and BLAS |
| LINESCORE_WARMUP_BATCH | 64 | cutouts in the warm-up batch that runs before /readyz turns 200 |
| LINESCORE_UMAP_TRANSFORM | fast | "fast" (service.umap_fast) or "reference" (umap-learn's own) |
| LINESCORE_API_TOKEN | (unset) | if set, /v1 and /v2 (not /v2/health) need it as bearer token |
| LINESCORE_WORKERS | 2 | gunicorn worker processes |
| LINESCORE_HTTP_THREADS | 2 | request threads per worker (scoring itself is one at a time) |
| LINESCORE_MAX_CONNECTIONS | 64 | open client connections per worker, kept-alive ones included |
| LINESCORE_KEEPALIVE | 5 | seconds an idle kept-alive connection stays open (0: close each) |
| LINESCORE_DRAIN_SECONDS | 5 | after SIGTERM: /readyz 503, requests still served |
| LINESCORE_GRACEFUL_TIMEOUT | 30 | then in-flight requests have this long to finish |
| LINESCORE_REQUEST_TIMEOUT | 60 | a worker stuck longer on one request is replaced |
| LINESCORE_CLIENT_TIMEOUT | 10 | a client socket idle this long is closed |
| LINESCORE_ACCESS_LOG | true | one JSON access line per request on stdout; false: none |
| PROMETHEUS_MULTIPROC_DIR | (a fresh temporary dir) | where workers share metrics |
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

CHECKOUT_MODELS = Path(__file__).resolve().parents[1] / "models"
"""The packaged models of a source checkout; an installed wheel sets LINESCORE_MODELS_ROOT."""


REFUSE_BLANK = {"api_token"}  # set but empty is a mistake (an empty Secret), not "unset"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_dir: Path | None = None
    models_root: Path = CHECKOUT_MODELS
    max_batch: int = Field(4096, ge=1)
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    threads: int = Field(1, ge=1)
    warmup_batch: int = Field(64, ge=1)
    umap_transform: Literal["fast", "reference"] = "fast"
    api_token: SecretStr | None = Field(None, min_length=1)
    workers: int = Field(2, ge=1)
    http_threads: int = Field(2, ge=1)
    max_connections: int = Field(64, ge=2)
    keepalive: int = Field(5, ge=0)
    drain_seconds: float = Field(5.0, ge=0)
    graceful_timeout: int = Field(30, ge=1)
    request_timeout: int = Field(60, ge=1)
    client_timeout: float = Field(10.0, gt=0)
    access_log: bool = True
    prometheus_multiproc_dir: Path | None = None

    @model_validator(mode="after")
    def room_to_keep_alive(self) -> "Settings":
        """Connections beyond the request threads are the ones kept alive; none would be."""
        if self.max_connections <= self.http_threads:
            raise ValueError("LINESCORE_MAX_CONNECTIONS must exceed LINESCORE_HTTP_THREADS")
        return self

    @field_validator("api_token", mode="before")
    @classmethod
    def bare_token(cls, value: object) -> object:
        """A Secret file's trailing newline is not part of the token; blank is an error."""
        if isinstance(value, str):
            value = value.strip()
            if not value:
                raise ValueError("LINESCORE_API_TOKEN is blank; unset it to turn auth off")
        return value

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        prefix = "LINESCORE_"
        values = {
            name: environ[prefix + name.upper()]
            for name in cls.model_fields
            if environ.get(prefix + name.upper(), "") != ""
            or (name in REFUSE_BLANK and prefix + name.upper() in environ)
        }
        if environ.get("PROMETHEUS_MULTIPROC_DIR"):
            values["prometheus_multiproc_dir"] = environ["PROMETHEUS_MULTIPROC_DIR"]
        return cls.model_validate(values)
