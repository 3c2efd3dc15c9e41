"""Running a study's trainings: local worker processes (joblib) or a Dask cluster.

:func:`run_specs` takes a list of run specs (see :mod:`cnn.studies.store`),
reuses every finished record of the store, and trains the missing ones:

* locally on ``jobs`` worker processes through joblib's public API
  (``Parallel(..., return_as="generator_unordered")`` on the loky backend),
  the data going to them as memory-mapped ``.npy`` files in a temporary folder;
* or, with ``scheduler="tcp://host:8786"``, on a Dask distributed cluster; the
  workers load the data themselves (MNIST from their data home, or the
  synthetic set) when they hold the same data (same fingerprint), otherwise the
  client sends the arrays (``Client.scatter``).

Each record is written to the store the moment its run finishes. A run that
raises is reported and the others go on; a worker process that dies costs the
runs it held: they are retried once (locally: on a fresh pool; Dask
reschedules them itself) and reported as failed if it happens again. Ctrl-C
(``KeyboardInterrupt``) and SIGTERM (:class:`Terminated`, raised by the
command line's handler) stop every worker and remove the temporary folder; the
finished records stay, and :func:`run_specs` returns what finished with
``stopped`` set, so the caller can write partial outputs.

Every worker runs BLAS on one thread (OpenBLAS's round-off depends on its
thread count); Numba's kernels give the same numbers for any thread count. So
a record does not depend on ``jobs`` nor on where it ran. A local worker also
watches its parent: when the parent dies (even by SIGKILL), the worker removes
the temporary folder and exits within a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass, field

import numpy as np

from .store import RunStore, spec_key

DATA_NAMES = ("train_x", "train_y", "test_x", "test_y")


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM (raised by the command line's signal handler)."""


# --------------------------------------------------------------------------- data


def data_fingerprint(data):
    """SHA-256 (20 hex digits) of the four arrays' shapes and float64 values.

    Parameters
    ----------
    data : tuple
        ``(train_x, train_y, test_x, test_y)``: images ``(N, H, W)``, one-hot
        labels ``(N, 10)``.
    """
    h = hashlib.sha256()
    for name, a in zip(DATA_NAMES, data):
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(f"{name}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:20]


@dataclass
class Dataset:
    """The data of a study, its fingerprint and, optionally, how a worker can load it itself.

    ``source``: ``None``, ``{"kind": "mnist", "n_train": N, "n_test": M}`` (the first
    N/M images of MNIST from the data home) or ``{"kind": "synthetic", ...}``.
    """

    arrays: tuple
    fingerprint: str
    source: dict | None = None

    @classmethod
    def from_arrays(cls, arrays, source=None):
        arrays = tuple(arrays)
        return cls(arrays, data_fingerprint(arrays), source)


def load_source(source):
    """The arrays of a data ``source`` (see :class:`Dataset`), loaded here (e.g. on a worker)."""
    n_train, n_test = source["n_train"], source["n_test"]
    if source["kind"] == "mnist":
        from ..mnist import load_mnist

        train_x, train_y, test_x, test_y = load_mnist(
            source.get("data_dir"), download=False, progress=False
        )
    elif source["kind"] == "synthetic":
        from ..synthetic import synthetic_split

        (train_x, train_y), (test_x, test_y) = (
            synthetic_split("train", n_train),
            synthetic_split("test", n_test),
        )
    else:
        raise ValueError(f"unknown data source {source['kind']!r}")
    return train_x[:n_train], train_y[:n_train], test_x[:n_test], test_y[:n_test]


_SOURCE_CACHE = {}


def _source_data(source, fingerprint):
    """Load ``source`` once per process; check that it is the client's data."""
    if fingerprint not in _SOURCE_CACHE:
        data = load_source(source)
        if data_fingerprint(data) != fingerprint:
            raise ValueError("this worker's data differ from the client's (another MNIST copy?)")
        _SOURCE_CACHE[fingerprint] = data
    return _SOURCE_CACHE[fingerprint]


def _has_source(source, fingerprint):
    try:
        _source_data(source, fingerprint)
        return True
    except Exception:
        return False


# --------------------------------------------------------------------------- one run


def execute(spec, data):
    """Run one spec here: ``spec["task"]`` (``"module:function"``) called as ``f(spec, data)``.

    Returns
    -------
    tuple
        ``("ok", record)`` or ``("error", one-line message)``: an exception of
        the run becomes a message, so that one failing run never stops the
        others.
    """
    from ..training import single_threaded_blas

    try:
        module, name = spec["task"].split(":")
        fn = getattr(importlib.import_module(module), name)
        with single_threaded_blas():  # results must not depend on BLAS threads
            record = fn(spec, data)
    except Exception as exc:  # reported with the run, not raised
        return "error", " ".join(f"{type(exc).__name__}: {exc}".split())
    import numba

    record["worker"] = {
        "pid": os.getpid(),
        "numba_threads": int(numba.get_num_threads()),
        "blas_threads": 1,
    }
    return "ok", record


_WATCH = {"tmp": None, "thread": None}


def _watch_parent(parent_pid, tmp):
    """In a worker process: exit (removing ``tmp``) as soon as the parent is gone."""
    _WATCH["tmp"] = tmp
    if _WATCH["thread"] is not None:
        return

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                if _WATCH["tmp"]:
                    shutil.rmtree(_WATCH["tmp"], ignore_errors=True)
                os._exit(1)

    _WATCH["thread"] = threading.Thread(target=watch, name="cnn-watch-parent", daemon=True)
    _WATCH["thread"].start()


def _local_task(index, spec, files, parent_pid, tmp):
    """Worker-process entry: memory-map the data, run one spec."""
    _watch_parent(parent_pid, tmp)
    data = tuple(np.load(f, mmap_mode="r") for f in files)
    return index, *execute(spec, data)


def _dask_task(index, spec, data, fingerprint):
    """Dask-worker entry: ``data`` is the arrays (scattered) or a source to load here."""
    if isinstance(data, dict):
        data = _source_data(data, fingerprint)
    return index, *execute(spec, data)


# --------------------------------------------------------------------------- many runs


@dataclass
class Outcome:
    """What :func:`run_specs` got.

    ``records[i]`` is the record of ``specs[i]`` or ``None`` (not finished);
    ``failed`` maps an index to its one-line error; ``stopped`` is
    ``"interrupted"`` (Ctrl-C), ``"terminated"`` (SIGTERM) or ``None``.
    """

    specs: list
    records: list
    reused: int = 0
    trained: int = 0
    failed: dict = field(default_factory=dict)
    stopped: str | None = None

    @property
    def total(self):
        return len(self.specs)

    @property
    def finished(self):
        """``(spec, record)`` of every finished run, in the order of the specs."""
        return [(s, r) for s, r in zip(self.specs, self.records) if r is not None]

    @property
    def partial(self):
        return any(r is None for r in self.records)


def run_specs(specs, dataset, out, *, jobs=2, scheduler=None, fresh=False, log=None, retries=1):
    """Train every spec that has no record in ``<out>/runs/`` yet; return an :class:`Outcome`.

    Parameters
    ----------
    specs : list of dict
        Run specs (JSON-ready); ``spec["task"]`` names the function that runs one.
    dataset : Dataset
        The data, passed to each run as ``(train_x, train_y, test_x, test_y)``.
    out : str or Path
        The study's output folder (the store is ``out/runs``).
    jobs : int
        Local worker processes (1: in this process).
    scheduler : str, optional
        A Dask scheduler's address; the runs go to its workers instead.
    fresh : bool
        Forget the stored records of these specs first (retrain everything).
    log : callable, optional
        ``log(str)`` for progress lines.
    retries : int
        How often the runs of a worker that died are retried.

    Returns
    -------
    Outcome
        Ctrl-C and SIGTERM do not propagate: they stop the workers and are
        reported in ``Outcome.stopped``.
    """
    log = log or (lambda msg: None)
    store = RunStore(out)
    outcome = Outcome(specs=list(specs), records=[None] * len(specs))
    for i, spec in enumerate(outcome.specs):
        if fresh:
            store.remove(spec)
        else:
            outcome.records[i] = store.load(spec)
    todo = [i for i, r in enumerate(outcome.records) if r is None]
    outcome.reused = outcome.total - len(todo)
    log(f"reused {outcome.reused} of {outcome.total} runs")
    if not todo:
        return outcome
    t0 = time.perf_counter()
    width = len(str(len(todo)))

    def done(i, status, payload):
        if status == "ok":
            store.save(outcome.specs[i], payload)
            outcome.records[i] = payload
            outcome.trained += 1
            what = _describe(payload)
        else:
            outcome.failed[i] = payload
            what = f"FAILED: {payload}"
        n = outcome.trained + len(outcome.failed)
        log(
            f"[{n:>{width}}/{len(todo)}] {_spec_text(outcome.specs[i])}: {what} "
            f"(elapsed {time.perf_counter() - t0:.0f} s)"
        )

    try:
        if scheduler:
            _run_dask(outcome, todo, dataset, scheduler, done, log, retries)
        else:
            _run_local(outcome, todo, dataset, jobs, done, log, retries)
    except Terminated:
        outcome.stopped = "terminated"
    except KeyboardInterrupt:
        outcome.stopped = "interrupted"
    if outcome.stopped:
        # a signal between a record's save and its entry in the outcome: report
        # what the store holds (what a rerun reuses)
        for i in todo:
            if outcome.records[i] is None and i not in outcome.failed:
                rec = store.load(outcome.specs[i])
                if rec is not None:
                    outcome.records[i] = rec
                    outcome.trained += 1
    return outcome


def _spec_text(spec):
    parts = [spec.get("label") or spec.get("setting", "?")]
    if "lr" in spec:
        parts.append(f"lr {spec['lr']:g}")
    parts.append(f"seed {spec.get('seed')}")
    return ", ".join(parts)


def _describe(rec):
    err = rec.get("test_error")
    text = f"test error {err[-1]:.4f}" if err else "done"
    status = rec.get("status", "ok")
    if status != "ok":
        text += f" [{status.split(':')[0]}]"
    return text


def _worker_threads(jobs):
    return max(1, (os.cpu_count() or 1) // jobs)


def _run_local(outcome, todo, dataset, jobs, done, log, retries):
    jobs = max(1, min(int(jobs), len(todo)))
    if jobs == 1:  # in this process: BLAS limited to one thread by execute()
        for i in todo:
            done(i, *execute(outcome.specs[i], dataset.arrays))
        return
    from joblib import Parallel, delayed, parallel_config

    tmp = tempfile.mkdtemp(prefix="cnn-compare-")
    try:
        files = []
        for name, a in zip(DATA_NAMES, dataset.arrays):
            f = os.path.join(tmp, name + ".npy")
            np.save(f, np.ascontiguousarray(a, dtype=np.float64))
            files.append(f)
        pending = list(todo)
        for attempt in range(retries + 1):
            try:
                tasks = [
                    delayed(_local_task)(i, outcome.specs[i], files, os.getpid(), tmp)
                    for i in pending
                ]
                with parallel_config(backend="loky", inner_max_num_threads=_worker_threads(jobs)):
                    gen = Parallel(n_jobs=min(jobs, len(pending)), return_as="generator_unordered")(
                        tasks
                    )
                    with contextlib.closing(gen):  # closing it stops every worker
                        for i, status, payload in gen:
                            pending.remove(i)
                            done(i, status, payload)
                return
            except BrokenExecutor as exc:  # a worker died (TerminatedWorkerError): runs lost
                msg = " ".join(str(exc).split())[:300]
                if attempt < retries:
                    log(
                        f"a worker process died ({type(exc).__name__}); retrying its "
                        f"{len(pending)} unfinished run(s) on fresh workers"
                    )
                else:
                    for i in list(pending):
                        done(i, "error", f"worker died twice: {msg}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_dask(outcome, todo, dataset, scheduler, done, log, retries):
    from distributed import Client, as_completed

    with Client(scheduler, timeout="20s") as client:
        n = len(client.scheduler_info().get("workers", {}))
        data = None
        if dataset.source is not None:
            has = client.run(_has_source, dataset.source, dataset.fingerprint)
            if has and all(has.values()):
                data = dataset.source
                log(f"dask: {n} worker(s) at {scheduler} load the data themselves")
        if data is None:
            data = client.scatter(list(dataset.arrays), broadcast=True)
            log(f"dask: {n} worker(s) at {scheduler}; data sent from here")
        futures = {}
        for i in todo:
            fut = client.submit(
                _dask_task,
                i,
                outcome.specs[i],
                data,
                dataset.fingerprint,
                key=f"cnn-run-{spec_key(outcome.specs[i])}-{os.getpid()}",
                pure=False,
                retries=retries,
            )
            futures[fut] = i
        try:
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    _, status, payload = fut.result()
                except Exception as exc:  # KilledWorker: its worker died too often
                    status, payload = "error", " ".join(f"{type(exc).__name__}: {exc}".split())
                done(i, status, payload)
        finally:
            client.cancel(list(futures))
