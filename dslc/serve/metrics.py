"""Prometheus metrics for `dslc serve`, per model and version, served at GET /metrics.

    dslc_inference_request_success_total{model,version}
    dslc_inference_request_failure_total{model,version,code}      4xx: the request's fault; 5xx: the server's
    dslc_request_duration_seconds{model,version}                  request received -> response ready
    dslc_queue_duration_seconds{model,version}                    waiting in the batching queue
    dslc_compute_duration_seconds{model,version}                  one execution: batch assembly, run, split
    dslc_batch_size{model,version}                                rows per execution
    dslc_inflight_requests{model,version}                         inference requests accepted, not yet answered
    process_*                                                     prometheus_client's process collector

Every observation happens on the event loop thread, and so does every scrape; so the values live in plain Python
ints and lists (a bisect per histogram observation) and a custom collector turns them into metric families at
scrape time.  prometheus_client's own Counter/Histogram take a lock and scan the buckets in Python per
observation -- about 7 of those per request was a measurable share of the per-request cost.
"""
from __future__ import annotations

from bisect import bisect_left

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
HISTOGRAMS = ("request", "queue", "compute", "batch")   # the ModelMetrics attributes that are histograms
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Bucket counts (non-cumulative, last one +Inf) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds):
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1   # first bucket whose upper bound is >= value
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for b, c in zip(self.bounds + (float("inf"),), self.counts):
            total += c
            out.append(("+Inf" if b == float("inf") else _fmt(b), total))
        return out


def _fmt(b: float) -> str:
    return str(int(b)) + ".0" if b == int(b) else repr(b)


class Gauge:
    __slots__ = ("value",)

    def __init__(self):
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


class Counter:
    __slots__ = ("value",)

    def __init__(self):
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class ModelMetrics:
    """One (model, version)'s metrics; cheap to update on the hot path."""

    def __init__(self, model: str, version: str):
        self.labels = (model, version)
        self.success = Counter()
        self.failures: dict[int, int] = {}
        self.request = Histogram(LATENCY_BUCKETS)
        self.queue = Histogram(LATENCY_BUCKETS)
        self.compute = Histogram(LATENCY_BUCKETS)
        self.batch = Histogram(BATCH_BUCKETS)
        self.inflight = Gauge()

    def failure(self, code: int) -> None:
        self.failures[code] = self.failures.get(code, 0) + 1


class _Collector:
    def __init__(self, metrics: "Metrics"):
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        models = self.metrics.all_models()
        labels = ["model", "version"]
        ok = CounterMetricFamily("dslc_inference_request_success", "Inference requests answered with 200", labels=labels)
        bad = CounterMetricFamily("dslc_inference_request_failure",
                                  "Inference requests answered with an error, by HTTP status", labels=labels + ["code"])
        inflight = GaugeMetricFamily("dslc_inflight_requests", "Inference requests accepted and not yet answered",
                                     labels=labels)
        hists = {
            "request": HistogramMetricFamily(
                "dslc_request_duration_seconds",
                "Inference request latency in the server: body received to response ready", labels=labels),
            "queue": HistogramMetricFamily("dslc_queue_duration_seconds",
                                           "Time a request waited in the batching queue", labels=labels),
            "compute": HistogramMetricFamily("dslc_compute_duration_seconds",
                                             "Time of one model execution: batch assembly, session.run, split",
                                             labels=labels),
            "batch": HistogramMetricFamily("dslc_batch_size", "Rows per model execution", labels=labels),
        }
        for m in models:
            lv = list(m.labels)
            ok.add_metric(lv, m.success.value)
            for code, n in sorted(m.failures.items()):
                bad.add_metric(lv + [str(code)], n)
            inflight.add_metric(lv, m.inflight.value)
            for attr, fam in hists.items():
                h = getattr(m, attr)
                fam.add_metric(lv, h.cumulative(), sum_value=h.sum)
        yield ok
        yield bad
        yield inflight
        yield from hists.values()


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry
        from prometheus_client.process_collector import ProcessCollector
        self.models: dict[tuple[str, str], ModelMetrics] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.registry.register(_Collector(self))

    def for_model(self, model: str, version: str) -> ModelMetrics:
        key = (model, version)
        if key not in self.models:
            self.models[key] = ModelMetrics(model, version)
        return self.models[key]

    def render(self) -> bytes:
        from prometheus_client import generate_latest
        return generate_latest(self.registry)

    # ------------------------------------------------------------------- --workers: summed across processes

    share_dir: str | None = None
    worker: int = 0

    def share(self, directory: str, worker: int) -> None:
        """Sum, in every scrape, this process's metrics with the snapshots other workers write to `directory`."""
        self.share_dir, self.worker = directory, worker

    def snapshot(self) -> dict:
        hist = HISTOGRAMS
        return {"models": [{"labels": list(m.labels), "success": m.success.value, "inflight": m.inflight.value,
                            "failures": {str(c): n for c, n in m.failures.items()},
                            **{h: [getattr(m, h).counts, getattr(m, h).sum] for h in hist}}
                           for m in self.models.values()]}

    def write_snapshot(self) -> None:
        import json
        import os
        if self.share_dir is None:
            return
        path = os.path.join(self.share_dir, f"worker-{self.worker}.json")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.snapshot(), f)
        os.replace(tmp, path)   # atomic: a scrape never reads half a snapshot

    def all_models(self) -> list[ModelMetrics]:
        if self.share_dir is None:
            return list(self.models.values())
        import json
        import os
        merged: dict[tuple[str, str], ModelMetrics] = {}

        def add(labels, success, inflight, failures, hists):
            key = tuple(labels)
            m = merged.get(key) or merged.setdefault(key, ModelMetrics(*key))
            m.success.value += success
            m.inflight.value += inflight
            for code, n in failures.items():
                m.failures[int(code)] = m.failures.get(int(code), 0) + n
            for name, (counts, total) in hists.items():
                h = getattr(m, name)
                h.counts = [a + b for a, b in zip(h.counts, counts)]
                h.sum += total
        for m in self.models.values():
            add(m.labels, m.success.value, m.inflight.value, m.failures,
                {h: (getattr(m, h).counts, getattr(m, h).sum) for h in HISTOGRAMS})
        mine = f"worker-{self.worker}.json"
        for name in sorted(os.listdir(self.share_dir)):
            if name == mine or not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.share_dir, name)) as f:
                    snap = json.load(f)
            except (OSError, ValueError):   # a worker that has not written yet
                continue
            for e in snap["models"]:
                add(e["labels"], e["success"], e["inflight"], e["failures"],
                    {h: e[h] for h in HISTOGRAMS})
        return list(merged.values())


class MetricsSnapshots:
    """One of ServeApp.services under --workers: writes this worker's metrics snapshot every `every` seconds
    and once more when the server stops."""

    def __init__(self, metrics: Metrics, every: float):
        self.metrics = metrics
        self.every = every
        self._task = None

    async def start(self, app) -> None:
        import asyncio

        async def loop():
            while True:
                self.metrics.write_snapshot()
                await asyncio.sleep(self.every)
        self._task = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.metrics.write_snapshot()
