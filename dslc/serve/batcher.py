"""Dynamic batching: concurrent requests for one model merged along dim 0, run once off the event loop, split back.

Scheduling (all on the event loop thread, driven by arrivals, timers and completions; no polling task):

* A request joins the pending queue with a deadline = its arrival + max_queue_delay.
* When an execution slot is free, the oldest pending request heads the next batch.  It collects, in arrival
  order, the pending requests whose non-batch shapes and dtypes equal its own (others are never mixed in), up to
  max_batch_size rows.  The batch runs as soon as it is full or the head's deadline has passed -- a fixed
  deadline from the first queued request, not a timeout that restarts with each arrival.  While all slots are
  busy, requests simply queue; the next free slot takes them at once if their deadline has passed.
* Executions run on worker threads (one per model instance) fed by a queue; session.run releases the GIL.  A
  bare thread + SimpleQueue + call_soon_threadsafe is the cheapest hand-off there is (a concurrent.futures pool
  adds a Future, a lock and a callback per execution, measurable at concurrency 1).
* max_batch_size <= 1 (or dynamic batching off) sends each request alone through the same slots.

Inline execution (the idle fast path): when a request arrives while nothing is pending or executing for its
model, the hand-off to a worker thread and back (a queue put, a thread wake-up, a call_soon_threadsafe wake-up
of the loop: ~70 us of latency) costs more than a small model's whole session.run.  So the batcher, instead of
handing the request over at once, schedules one flush with call_soon: request handlers that are already ready to
run on the loop (other connections' requests read in the same I/O pass) still join the queue before it.  The
flush then runs what is pending right there on the loop thread, one batch (formed as above) after another, as
long as nothing executes on a worker.  A batch of more than one row runs inline only when a full batch is cheap
too (model.run_max_ms, measured at warm-up, under INLINE_BATCH_MAX_MS); otherwise it goes to a worker as usual.
When the last inline execution merged requests (so clients are sending concurrently) and fewer than
max_batch_size rows are pending, the flush first lets the loop go round up to DEFER_PASSES more times: a loop
iteration with a callback ready polls the sockets without blocking, so this costs a few µs, and the requests of
connections read in those passes join the batch instead of heading a small one of their own (LeNet-5 under wrk,
32 connections: mean batch 4.4 -> 6.8, 11,900 -> 14,900 inferences/s).  Lone requests never wait.
Under load this keeps a small model's executions off the worker thread altogether: no GIL hand-over and no
thread wake-up per batch.  The inline
execution goes through the same _execute/_finish code (stats, metrics, errors to that batch only).  It is used
only with no queue delay and for models whose batch-1 run measured at warm-up is under INLINE_MAX_MS
(model.run1_ms), since it blocks the loop while it runs.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque

import numpy as np

INLINE_MAX_MS = 1.0     # run a lone request on the loop thread only when a batch-1 run takes less than this
DEFER_PASSES = 2         # passes over the sockets an inline flush may wait for more requests (see the docstring)
INLINE_BATCH_MAX_MS = 2.0   # ... and a merged batch only when a full batch (max_batch_size rows) takes less


class _Pending:
    __slots__ = ("key", "inputs", "rows", "future", "t_enqueue", "deadline")

    def __init__(self, key, inputs, rows, future, t_enqueue, deadline):
        self.key = key
        self.inputs = inputs
        self.rows = rows
        self.future = future
        self.t_enqueue = t_enqueue
        self.deadline = deadline


class ExecutionError(Exception):
    """onnxruntime failed on a batch; `bad_input` when it blamed the inputs (answered 400, else 500)."""

    def __init__(self, message: str, bad_input: bool):
        super().__init__(message)
        self.bad_input = bad_input


class Batcher:
    def __init__(self, model, loop: asyncio.AbstractEventLoop, metrics=None):
        self.model = model
        self.loop = loop
        self.metrics = metrics
        self.max_rows = model.max_batch_size if model.merging else 0
        self.delay = model.queue_delay_ms / 1000.0 if model.merging else 0.0
        self.slots = model.instances
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._worker, name=f"dslc-{model.name}-{i}", daemon=True)
                         for i in range(model.instances)]
        for t in self._threads:
            t.start()
        self.pending: deque[_Pending] = deque()
        self._timer = None
        self._timer_at = None
        self.executions = 0
        run1_ms = getattr(model, "run1_ms", None)
        self.inline = self.delay == 0 and run1_ms is not None and run1_ms < INLINE_MAX_MS
        run_max_ms = getattr(model, "run_max_ms", None)
        # the most rows one inline execution may take: a whole batch when a full one is cheap, else one
        self.inline_rows = (self.max_rows if self.inline and self.max_rows and run_max_ms is not None
                            and run_max_ms < INLINE_BATCH_MAX_MS else 1)
        self.inline_executions = 0
        self._flush_armed = False
        self._deferred = 0       # passes over the sockets the armed flush has waited
        self._last_rows = 0      # rows of the last inline execution

    # ---------------------------------------------------------------------------------------------- requests

    def submit(self, inputs: dict[str, np.ndarray], rows: int, sink=None):
        """Queue one request; the future resolves to its outputs, {name: array}.  `sink`: resolve that instead
        of a new future -- any object with done(), set_result() and set_exception(), called on the loop (the
        HTTP protocol's own infer path writes its response from set_result: no future, no callback hop)."""
        fut = self.loop.create_future() if sink is None else sink
        deadline = self.loop.time() + self.delay if self.delay else 0.0   # read only when there is a delay
        key = tuple((a.shape[1:], a.dtype.str) for a in inputs.values()) if self.max_rows else None
        self.pending.append(_Pending(key, inputs, rows, fut, time.perf_counter(), deadline))
        if self.inline and self.slots == self.model.instances:
            # idle model: decide after the handlers already ready on the loop have queued their requests
            if not self._flush_armed:
                self._flush_armed = True
                self.loop.call_soon(self._flush)
            return fut
        self._dispatch()
        return fut

    def _flush(self) -> None:
        """Run what is pending on the loop thread while each batch is cheap enough (see the module docstring);
        a batch that is not goes to a worker as usual."""
        if self._deferred < DEFER_PASSES and self._last_rows > 1 and self._pending_rows() < self.max_rows:
            # requests have been arriving together: let the loop poll the sockets again before running
            self._deferred += 1
            self.loop.call_soon(self._flush)
            return
        self._flush_armed = False
        self._deferred = 0
        while self.pending and self.slots == self.model.instances:
            batch = self._take(self.pending[0])
            self.slots -= 1
            if sum(p.rows for p in batch) > self.inline_rows:
                self._jobs.put(batch)
                return
            self.inline_executions += 1
            self._last_rows = sum(p.rows for p in batch)
            try:
                result, exc = self._execute(batch), None
            except Exception as e:  # noqa: BLE001 - handed to the requests' futures, as from a worker
                result, exc = None, e
            self._finish(batch, result, exc, dispatch=False)
        self._dispatch()

    def _pending_rows(self) -> int:
        return sum(p.rows for p in self.pending)

    # ------------------------------------------------------------------------------------------- scheduling

    def _dispatch(self) -> None:
        while self.slots > 0 and self.pending:
            head = self.pending[0]
            if self.max_rows and self.delay > 0 and self.loop.time() < head.deadline:
                batch, _, full = self._collect(head)
                if not full:
                    self._arm(head.deadline)
                    return
            self.slots -= 1
            self._jobs.put(self._take(head))

    def _take(self, head: _Pending) -> list[_Pending]:
        """Remove and return the next batch headed by `head`: alone, or merged with the requests of its key."""
        if not self.max_rows:
            return [self.pending.popleft()]
        batch, contiguous, _ = self._collect(head)
        if contiguous:
            for _ in batch:
                self.pending.popleft()
        else:
            taken = {id(p) for p in batch}
            self.pending = deque(p for p in self.pending if id(p) not in taken)
        return batch

    def _collect(self, head: _Pending):
        batch, rows, contiguous, full = [], 0, True, False
        for p in self.pending:
            if p.key != head.key:
                contiguous = False
                continue
            if rows + p.rows > self.max_rows:
                full = True
                break
            batch.append(p)
            rows += p.rows
            if rows == self.max_rows:
                full = True
                break
        return batch, contiguous, full

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            if self._timer_at == when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._dispatch()

    # -------------------------------------------------------------------------------------------- execution

    def _worker(self) -> None:
        while True:
            batch = self._jobs.get()
            if batch is None:
                return
            try:
                result, exc = self._execute(batch), None
            except BaseException as e:  # noqa: BLE001 - handed to the requests' futures
                result, exc = None, e
            try:
                self.loop.call_soon_threadsafe(self._finish, batch, result, exc)
            except RuntimeError:  # pragma: no cover - the loop is gone (forced exit)
                return

    def _execute(self, batch: list[_Pending]):
        """Runs on a worker thread: concatenate, run, split.  Returns (per-request outputs, t_start, t_end)."""
        model = self.model
        t0 = time.perf_counter()
        if len(batch) == 1:
            feed = batch[0].inputs
        else:
            feed = {n: np.concatenate([p.inputs[n] for p in batch]) for n in batch[0].inputs}
        try:
            outs = model.run(feed)
        except Exception as e:  # onnxruntime: InvalidArgument / Fail / RuntimeException
            text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            bad = type(e).__name__ in ("InvalidArgument", "Fail") or "INVALID_ARGUMENT" in str(e)
            raise ExecutionError(f"model '{model.name}' failed to run on the request: {text}", bad) from None
        names = model.output_names
        if len(batch) == 1:
            results = [dict(zip(names, outs))]
        else:
            total = sum(p.rows for p in batch)
            for n, o in zip(names, outs):
                if o.ndim == 0 or o.shape[0] != total:
                    raise ExecutionError(f"model '{model.name}': output '{n}' has {o.shape[0] if o.ndim else 0} "
                                         f"rows for a batch of {total}; it cannot be batched", False)
            results = []
            start = 0
            for p in batch:
                end = start + p.rows
                results.append({n: o[start:end] for n, o in zip(names, outs)})
                start = end
        return results, t0, time.perf_counter()

    def _finish(self, batch: list[_Pending], result, exc, dispatch: bool = True) -> None:
        self.slots += 1
        self.executions += 1
        if exc is not None:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
        else:
            results, t0, t1 = result
            rows = sum(p.rows for p in batch)
            st = self.model.stats
            st.execution_count += 1
            st.inference_count += rows
            dt_ns = int((t1 - t0) * 1e9)
            st.infer_count += len(batch)
            st.infer_ns += dt_ns * len(batch)
            c, ns = st.batches.get(rows, (0, 0))
            st.batches[rows] = (c + 1, ns + dt_ns)
            if self.metrics is not None:
                self.metrics.compute.observe(t1 - t0)
                self.metrics.batch.observe(rows)
            for p, r in zip(batch, results):
                q = t0 - p.t_enqueue
                st.queue_count += 1
                st.queue_ns += int(q * 1e9)
                if self.metrics is not None:
                    self.metrics.queue.observe(q)
                if not p.future.done():
                    p.future.set_result(r)
        if dispatch:
            self._dispatch()

    def close(self) -> None:
        """Stop the workers after the executions already handed to them."""
        if self._timer is not None:
            self._timer.cancel()
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()
