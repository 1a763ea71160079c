"""Where independent tasks run: this process, a pool of local processes, or a Ray cluster.

One interface for the two kinds of work that scale out:
- `ordered(fn, items)`: results in item order with a bounded number in flight (the init's
  shards, which the caller hashes and writes in file order);
- `as_done(fn, items)`: (item, result) as each finishes, a task that fails or whose worker
  dies giving a `Failed` instead of stopping the others (ablation runs).

Ray is optional (`pip install 'gpt2-verify[ray]'`); asking for it without it installed is an
InputError naming the extra. Without --ray-address a local Ray is started by the command and
shut down when it ends; with one, the tasks go to that cluster, whose nodes need gpt2-verify
installed (the same version).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterable, Iterator

from .errors import InputError, TaskFailed

EXECUTORS = ("local", "ray")
RAY_EXTRA = "--executor ray needs Ray: pip install 'gpt2-verify[ray]'"


@dataclasses.dataclass(frozen=True)
class Failed:
    """A task that raised, or whose worker process died: `error` says which and why."""

    error: str


class Serial:
    """Tasks in this process, one after another."""

    workers = 1

    def ordered(self, fn: Callable, items: Iterable) -> Iterator:
        for item in items:
            yield fn(item)

    def as_done(self, fn: Callable, items: Iterable) -> Iterator[tuple]:
        for item in items:
            try:
                yield item, fn(item)
            except Exception as e:  # noqa: BLE001 - reported per task, as the pools do
                yield item, Failed(f"{type(e).__name__}: {e}")

    def close(self) -> None:
        pass


class Processes:
    """A pool of `workers` local processes (spawned: nothing inherited but the arguments)."""

    local_processes = True  # results may be handed over through local files (verify.sharded)

    def __init__(self, workers: int):
        import multiprocessing

        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def ordered(self, fn: Callable, items: Iterable, *, window: int | None = None) -> Iterator:
        window = window or 2 * self.workers
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(self._pool.submit(fn, item))
            if len(pending) >= window:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())

    def as_done(self, fn: Callable, items: Iterable) -> Iterator[tuple]:
        from concurrent.futures.process import BrokenProcessPool

        futures = {self._pool.submit(fn, item): item for item in items}
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for f in done:
                item = futures.pop(f)
                try:
                    yield item, f.result()
                except BrokenProcessPool:
                    # a dead worker breaks the whole pool: its other tasks are lost too
                    yield item, Failed("a worker process died")
                except Exception as e:  # noqa: BLE001
                    yield item, Failed(f"{type(e).__name__}: {e}")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _result(future):
    """A local task's result, or TaskFailed naming what went wrong in the worker."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool:
        raise TaskFailed("a worker process died (killed, or out of memory)") from None
    except Exception as e:  # noqa: BLE001 - the worker's own error, reported in one line
        raise TaskFailed(f"a worker process failed: {type(e).__name__}: {e}") from None


def require_ray():
    """The ray module, or an InputError naming the extra."""
    try:
        import ray
    except ImportError:
        raise InputError(None, RAY_EXTRA) from None
    return ray


class Ray:
    """Ray tasks: on the cluster at `address`, or on a local Ray this object starts (and stops)."""

    def __init__(self, *, address: str | None = None, workers: int | None = None, cpus_per_task: float = 1,
                 gpus_per_task: float = 0):
        ray = require_ray()
        self._ray = ray
        self._own = not ray.is_initialized()
        if self._own:
            kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address:
                kwargs["address"] = address
            elif workers:
                kwargs["num_cpus"] = max(workers, int(cpus_per_task * workers + 0.999))
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise InputError(None, f"--ray-address {address}: cannot connect to Ray: "
                                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        resources = ray.cluster_resources()
        self.workers = workers or max(1, int(resources.get("CPU", 1) // max(cpus_per_task, 1e-9)))
        self._options = {"num_cpus": cpus_per_task, "num_gpus": gpus_per_task, "max_retries": 0}
        self.threads_per_task = max(1, int(cpus_per_task))  # torch threads in each task

    def _remote(self, fn: Callable):
        return self._ray.remote(fn).options(**self._options)

    def ordered(self, fn: Callable, items: Iterable, *, window: int | None = None) -> Iterator:
        task = self._remote(fn)
        window = window or 2 * self.workers
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(task.remote(item))
            if len(pending) >= window:
                yield self._get(pending.popleft())
        while pending:
            yield self._get(pending.popleft())

    def _get(self, ref):
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as e:
            raise TaskFailed(f"a Ray task failed: {str(e).splitlines()[0]}") from None

    def as_done(self, fn: Callable, items: Iterable) -> Iterator[tuple]:
        task = self._remote(fn)
        refs = {task.remote(item): item for item in items}
        while refs:
            done, _ = self._ray.wait(list(refs), num_returns=1)
            for ref in done:
                item = refs.pop(ref)
                try:
                    yield item, self._ray.get(ref)
                except self._ray.exceptions.RayError as e:  # the task raised, or its worker died
                    lines = [s for s in str(e).splitlines() if s.strip()]
                    yield item, Failed(f"{type(e).__name__}: {lines[-1] if lines else ''}".strip())

    def close(self) -> None:
        if self._own and self._ray.is_initialized():
            self._ray.shutdown()


def make(executor: str = "local", *, workers: int | None = 1, address: str | None = None,
         cpus_per_task: float = 1, gpus_per_task: float = 0):
    """The executor a command's --executor/--workers/--ray-address/--gpus-per-run ask for."""
    if executor not in EXECUTORS:
        raise InputError(None, f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise InputError(None, f"--workers {workers}: give 1 or more")
    if executor == "ray":
        return Ray(address=address, workers=workers, cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
    if address:
        raise InputError(None, "--ray-address goes with --executor ray")
    if gpus_per_task:
        raise InputError(None, "--gpus-per-run goes with --executor ray (the local executor runs "
                               "one run at a time on --device)")
    workers = workers or 1
    return Serial() if workers == 1 else Processes(min(workers, 4 * (os.cpu_count() or 1)))
