"""The dynamic batcher in-process, with a fake model: deadline semantics, size cap, shape grouping, off switch."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from dslc.serve.batcher import Batcher, ExecutionError
from dslc.serve.model import Stats

pytestmark = pytest.mark.timeout(30)


class FakeModel:
    """y = x + 1 row-wise; records the rows of every execution."""

    def __init__(self, max_batch_size=8, delay_ms=0.0, instances=1, sleep=0.0):
        self.name = "fake"
        self.max_batch_size = max_batch_size
        self.queue_delay_ms = delay_ms
        self.dynamic_batching = True
        self.instances = instances
        self.output_names = ["y"]
        self.stats = Stats()
        self.calls: list[int] = []
        self.sleep = sleep
        self.lock = threading.Lock()

    @property
    def merging(self):
        return self.max_batch_size > 1 and self.dynamic_batching

    def run(self, feed):
        x = feed["x"]
        with self.lock:
            self.calls.append(x.shape[0])
        if self.sleep:
            time.sleep(self.sleep)
        if np.isnan(x).any():
            raise RuntimeError("nan!")
        return [x + 1]


def _x(v, rows=1, width=3):
    return {"x": np.full((rows, width), float(v), np.float32)}


def _run(coro):
    return asyncio.run(coro)


def test_deadline_counts_from_first_request_not_from_each_arrival():
    m = FakeModel(max_batch_size=64, delay_ms=100)
    started = []
    run = m.run
    m.run = lambda feed: (started.append(time.perf_counter()), run(feed))[1]

    async def main():
        b = Batcher(m, asyncio.get_running_loop())
        t0 = time.perf_counter()
        futs = [b.submit(_x(0), 1)]
        for v in range(1, 8):            # keep arriving every 30 ms: a restarting timeout would not fire before
            await asyncio.sleep(0.03)    # the arrivals stop (~310 ms); the fixed deadline fires at ~100 ms
            futs.append(b.submit(_x(v), 1))
        res = await asyncio.gather(*futs)
        b.close()
        return res, t0

    res, t0 = _run(main())
    assert 0.095 <= started[0] - t0 < 0.3, started[0] - t0
    assert m.calls[0] >= 2 and sum(m.calls) == 8
    for v, r in enumerate(res):
        np.testing.assert_array_equal(r["y"], _x(v)["x"] + 1)


def test_full_batch_runs_before_deadline():
    m = FakeModel(max_batch_size=4, delay_ms=5000)

    async def main():
        b = Batcher(m, asyncio.get_running_loop())
        t0 = time.perf_counter()
        res = await asyncio.gather(*(b.submit(_x(v), 1) for v in range(4)))
        dt = time.perf_counter() - t0
        b.close()
        return res, dt

    res, dt = _run(main())
    assert m.calls == [4] and dt < 1.0
    assert [float(r["y"][0, 0]) for r in res] == [1.0, 2.0, 3.0, 4.0]


def test_rows_split_back_and_cap_respected():
    m = FakeModel(max_batch_size=5, delay_ms=20)

    async def main():
        b = Batcher(m, asyncio.get_running_loop())
        futs = [b.submit(_x(v, rows=r), r) for v, r in [(1, 2), (2, 2), (3, 2), (4, 1)]]
        res = await asyncio.gather(*futs)
        b.close()
        return res

    res = _run(main())
    assert max(m.calls) <= 5 and sum(m.calls) == 7
    for (v, r), out in zip([(1, 2), (2, 2), (3, 2), (4, 1)], res):
        assert out["y"].shape == (r, 3)
        assert np.all(out["y"] == v + 1)


def test_different_non_batch_shapes_never_mixed():
    m = FakeModel(max_batch_size=16, delay_ms=30)

    async def main():
        b = Batcher(m, asyncio.get_running_loop())
        futs = [b.submit(_x(v, width=3 + v % 2), 1) for v in range(8)]
        res = await asyncio.gather(*futs)
        b.close()
        return res

    res = _run(main())
    assert sorted(m.calls) == [4, 4]
    for v, out in enumerate(res):
        assert out["y"].shape == (1, 3 + v % 2) and np.all(out["y"] == v + 1)


def test_batching_off_runs_each_request_alone():
    m = FakeModel(max_batch_size=1, delay_ms=50)

    async def main():
        b = Batcher(m, asyncio.get_running_loop())
        t0 = time.perf_counter()
        await asyncio.gather(*(b.submit(_x(v), 1) for v in range(6)))
        dt = time.perf_counter() - t0
        b.close()
        return dt

    dt = _run(main())
    assert m.calls == [1] * 6
    assert dt < 0.045 * 6   # the queue delay does not apply when batching is off


def test_busy_slot_accumulates_then_dispatches_without_delay():
    m = FakeModel(max_batch_size=32, delay_ms=0, sleep=0.1)

    async def main():
        b = Batcher(m, asyncio.get_running_loop())
        first = b.submit(_x(0), 1)          # runs at once, occupying the only slot for 100 ms
        await asyncio.sleep(0.005)
        rest = [b.submit(_x(v), 1) for v in range(1, 11)]
        await asyncio.gather(first, *rest)
        b.close()

    _run(main())
    assert m.calls == [1, 10]


def test_execution_error_reaches_every_request_of_the_batch_and_batcher_survives():
    m = FakeModel(max_batch_size=8, delay_ms=20)

    async def main():
        b = Batcher(m, asyncio.get_running_loop())
        bad = [b.submit({"x": np.full((1, 3), np.nan, np.float32)}, 1), b.submit(_x(1), 1)]
        res = await asyncio.gather(*bad, return_exceptions=True)
        ok = await b.submit(_x(5), 1)
        b.close()
        return res, ok

    res, ok = _run(main())
    assert all(isinstance(r, ExecutionError) and "nan!" in str(r) for r in res)
    assert np.all(ok["y"] == 6)


# ------------------------------------------------------------------------------------- inline (idle fast path)

class ThreadRecordingModel(FakeModel):
    """A FakeModel whose warm-up measured a fast batch-1 run (so lone requests may run inline), recording the
    thread of every execution."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.run1_ms = 0.01
        self.threads: list[str] = []

    def run(self, feed):
        self.threads.append(threading.current_thread().name)
        return super().run(feed)


def test_lone_request_runs_inline_on_the_loop_thread():
    m = ThreadRecordingModel(max_batch_size=8, delay_ms=0)

    async def main():
        b = Batcher(m, asyncio.get_running_loop())
        assert b.inline
        res = [await b.submit(_x(v), 1) for v in range(3)]     # one at a time: each finds the model idle
        n = b.inline_executions
        b.close()
        return res, n

    res, n = _run(main())
    assert n == 3 and m.calls == [1, 1, 1]
    assert m.threads == [threading.main_thread().name] * 3
    assert m.stats.execution_count == 3 and m.stats.inference_count == 3 and m.stats.queue_count == 3
    for v, r in enumerate(res):
        np.testing.assert_array_equal(r["y"], _x(v)["x"] + 1)


def test_requests_arriving_together_are_still_batched_on_the_worker():
    m = ThreadRecordingModel(max_batch_size=16, delay_ms=0)

    async def main():
        b = Batcher(m, asyncio.get_running_loop())
        res = await asyncio.gather(*(b.submit(_x(v), 1) for v in range(10)))
        n = b.inline_executions
        b.close()
        return res, n

    res, n = _run(main())
    assert n == 0 and m.calls == [10]
    assert m.threads[0].startswith("dslc-fake-")
    assert [float(r["y"][0, 0]) for r in res] == [v + 1.0 for v in range(10)]


def test_cheap_full_batches_run_inline_and_dear_ones_on_the_worker():
    """A model whose full batch measured cheap at warm-up: concurrent requests are merged and run on the loop
    thread, max_batch_size rows at a time, in arrival order.  Measured dear (or not measured): the worker runs them."""
    async def main(run_max_ms):
        m = ThreadRecordingModel(max_batch_size=4, delay_ms=0)
        m.run_max_ms = run_max_ms
        b = Batcher(m, asyncio.get_running_loop())
        res = await asyncio.gather(*(b.submit(_x(v), 1) for v in range(10)))
        n = b.inline_executions
        b.close()
        return m, res, n

    m, res, n = _run(main(0.05))
    assert n == 3 and m.calls == [4, 4, 2]
    assert m.threads == [threading.main_thread().name] * 3
    assert [float(r["y"][0, 0]) for r in res] == [v + 1.0 for v in range(10)]
    assert m.stats.execution_count == 3 and m.stats.inference_count == 10

    m, res, n = _run(main(5.0))
    assert n == 0 and m.calls == [4, 4, 2]
    assert all(t.startswith("dslc-fake-") for t in m.threads)
    assert [float(r["y"][0, 0]) for r in res] == [v + 1.0 for v in range(10)]


def test_inline_flush_waits_a_pass_for_more_once_requests_come_together():
    """After an inline execution that merged requests, a flush with room left lets the loop go round before
    running, so requests submitted in the next iteration join the batch.  Lone traffic never waits."""
    async def main(warm):
        m = ThreadRecordingModel(max_batch_size=8, delay_ms=0)
        m.run_max_ms = 0.05
        b = Batcher(m, asyncio.get_running_loop())
        if warm:
            await asyncio.gather(*(b.submit(_x(v), 1) for v in range(2)))   # one execution of 2 rows
        first = [b.submit(_x(v), 1) for v in range(3)]
        await asyncio.sleep(0)                      # one loop iteration later: three more
        later = [b.submit(_x(v), 1) for v in range(3, 6)]
        res = await asyncio.gather(*first, *later)
        b.close()
        return m, res

    m, res = _run(main(warm=True))
    assert m.calls == [2, 6]
    assert [float(r["y"][0, 0]) for r in res] == [v + 1.0 for v in range(6)]
    m, res = _run(main(warm=False))                 # nothing merged yet: the first flush does not wait
    assert m.calls == [3, 3]


def test_inline_error_reaches_only_its_request():
    m = ThreadRecordingModel(max_batch_size=8, delay_ms=0)

    async def main():
        b = Batcher(m, asyncio.get_running_loop())
        with pytest.raises(ExecutionError, match="nan!"):
            await b.submit({"x": np.full((1, 3), np.nan, np.float32)}, 1)
        ok = await b.submit(_x(5), 1)
        n = b.inline_executions
        b.close()
        return ok, n

    ok, n = _run(main())
    assert n == 2 and np.all(ok["y"] == 6)


def test_no_inline_with_queue_delay_or_slow_or_unmeasured_model():
    async def main():
        loop = asyncio.get_running_loop()
        slow = ThreadRecordingModel(max_batch_size=8, delay_ms=0)
        slow.run1_ms = 5.0
        flags = []
        for m in (ThreadRecordingModel(max_batch_size=8, delay_ms=1), slow, FakeModel(max_batch_size=8)):
            b = Batcher(m, loop)
            flags.append(b.inline)
            b.close()
        return flags

    assert _run(main()) == [False, False, False]


def test_inline_and_batched_answers_are_identical_on_a_real_model():
    from dslc.serve.model import ServedModel
    from serve_helpers import lenet_input, serve_models
    m = ServedModel("lenet", "1", serve_models.lenet().SerializeToString(), max_batch_size=16)
    m.load()
    assert m.run1_ms is not None and m.run1_ms < 1.0
    xs = [lenet_input(s) for s in range(6)]

    async def main():
        b = Batcher(m, asyncio.get_running_loop())
        alone = [await b.submit({"x": x}, 1) for x in xs]                    # each inline
        n_inline = b.inline_executions
        together = await asyncio.gather(*(b.submit({"x": x}, 1) for x in xs))   # one batch of 6
        b.close()
        return alone, together, n_inline, b.inline_executions

    alone, together, n1, n2 = _run(main())
    assert m.run_max_ms is not None and m.run_max_ms < 2.0   # a full batch of LeNet is cheap: batches run inline
    assert n1 == 6 and n2 == 7
    assert m.stats.batches[6][0] == 1
    for a, t in zip(alone, together):
        assert set(a) == set(t)
        for k in a:
            np.testing.assert_allclose(a[k], t[k], rtol=1e-5, atol=1e-6)
