"""Prometheus metrics. Under gunicorn every worker writes to PROMETHEUS_MULTIPROC_DIR and
/metrics merges all workers, so counts are right whichever worker answers the scrape."""

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Telemetry:
    def __init__(self, multiprocess_dir: Path | None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "linescore_requests_total",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "linescore_request_duration_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stages = Histogram(
            "linescore_stage_duration_seconds",
            "Seconds per scoring pass in each stage"
            " (decode, preprocess, cnn, umap, svm, novelty, encode)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "linescore_batch_size",
            "Detections per scoring request",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.decisions = Counter(
            "linescore_decisions_total",
            "Decisions by outcome and deciding stage",
            ["decision", "stage"],
            registry=registry,
        )
        self.novel = Counter(
            "linescore_novel_detections_total",
            "Scored detections flagged novel: unlike anything the model was trained on",
            registry=registry,
        )
        self.item_errors = Counter(
            "linescore_item_errors_total", "Batch items rejected with an error", registry=registry
        )
        # Labelled children, looked up once: labels() takes a lock and builds a key each call.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._stage_children: dict[str, Histogram] = {}
        self._decision_children: dict[tuple[str, str], Counter] = {}
        self.ready = Gauge(
            "linescore_worker_ready",
            "1 when this worker's model is verified, loaded and warm",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        children = self._request_children.get((endpoint, method, status))
        if children is None:
            children = (
                self.requests.labels(endpoint, method, str(status)),
                self.latency.labels(endpoint),
            )
            self._request_children[(endpoint, method, status)] = children
        count, latency = children
        count.inc()
        latency.observe(seconds)

    def observe_scoring(
        self,
        size: int,
        scored: int,
        timings: dict[str, float],
        decisions: dict[tuple[str, str], int],
        novel: int,
    ) -> None:
        self.batch_size.observe(size)
        if size > scored:
            self.item_errors.inc(size - scored)
        for name, seconds in timings.items():
            stage = self._stage_children.get(name)
            if stage is None:
                stage = self._stage_children[name] = self.stages.labels(name)
            stage.observe(seconds)
        for key, count in decisions.items():
            decided = self._decision_children.get(key)
            if decided is None:
                decided = self._decision_children[key] = self.decisions.labels(*key)
            decided.inc(count)
        if novel:  # adding 0 would write the same value back
            self.novel.inc(novel)

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.multiprocess_dir))
        return generate_latest(merged)
