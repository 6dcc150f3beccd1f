"""Prometheus metrics for `dslc serve`, per model and version, served at GET /metrics.

    dslc_inference_request_success_total{model,version}
    dslc_inference_request_failure_total{model,version,code}      4xx: the request's fault; 5xx: the server's
    dslc_request_duration_seconds{model,version}                  request received -> response ready
    dslc_queue_duration_seconds{model,version}                    waiting in the batching queue
    dslc_compute_duration_seconds{model,version}                  one execution: batch assembly, run, split
    dslc_batch_size{model,version}                                rows per execution
    dslc_inflight_requests{model,version}                         inference requests accepted, not yet answered
"""
from __future__ import annotations

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ModelMetrics:
    """The children of each metric bound to one (model, version): cheap to observe on the hot path."""

    def __init__(self, m: "Metrics", model: str, version: str):
        lv = (model, version)
        self.success = m.success.labels(*lv)
        self._failure = m.failure
        self._lv = lv
        self.request = m.request.labels(*lv)
        self.queue = m.queue.labels(*lv)
        self.compute = m.compute.labels(*lv)
        self.batch = m.batch.labels(*lv)
        self.inflight = m.inflight.labels(*lv)

    def failure(self, code: int) -> None:
        self._failure.labels(*self._lv, str(code)).inc()


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.process_collector import ProcessCollector
        try:  # the *_created series double the output and nobody scrapes them
            from prometheus_client import disable_created_metrics
            disable_created_metrics()
        except ImportError:  # pragma: no cover - older prometheus_client
            pass
        self.registry = r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        labels = ("model", "version")
        self.success = Counter("dslc_inference_request_success", "Inference requests answered with 200",
                               labels, registry=r)
        self.failure = Counter("dslc_inference_request_failure",
                               "Inference requests answered with an error, by HTTP status", labels + ("code",),
                               registry=r)
        self.request = Histogram("dslc_request_duration_seconds",
                                 "Inference request latency in the server: body received to response ready",
                                 labels, buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("dslc_queue_duration_seconds", "Time a request waited in the batching queue",
                               labels, buckets=LATENCY_BUCKETS, registry=r)
        self.compute = Histogram("dslc_compute_duration_seconds",
                                 "Time of one model execution: batch assembly, session.run, split",
                                 labels, buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("dslc_batch_size", "Rows per model execution", labels, buckets=BATCH_BUCKETS,
                               registry=r)
        self.inflight = Gauge("dslc_inflight_requests", "Inference requests accepted and not yet answered",
                              labels, registry=r)

    def for_model(self, model: str, version: str) -> ModelMetrics:
        return ModelMetrics(self, model, version)

    def render(self) -> bytes:
        from prometheus_client import generate_latest
        return generate_latest(self.registry)
