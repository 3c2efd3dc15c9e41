"""cnn.studies: the run store, joblib and Dask runs, interruptions, the lr and pairings studies.

All on small synthetic data (``--synthetic``, no MNIST).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnn.atomic import folder_lock
from cnn.cli.compare import main as compare_main
from cnn.studies import flag, lr, pairings
from cnn.studies import plots as study_plots
from cnn.studies.store import RunStore, spec_key

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--synthetic", "--train-subset", "200", "--test-subset", "100", "--no-plots"]
LR_ARGS = ["--study", "lr", "--lrs", "0.02,0.08", "--seeds", "2", "--epochs", "2"] + SMALL
TIMING = ("train_seconds", "test_seconds", "worker")


def _records(out):
    """key -> the stored document of every record in ``out/runs``."""
    return {p.stem: json.loads(p.read_text()) for p in (Path(out) / "runs").glob("*.json")}


def _numbers(doc):
    """A record without its timings and worker details (what must be identical)."""
    return {k: v for k, v in doc["record"].items() if k not in TIMING}


def _body(table_path):
    """A table without its first line (machine and date) and without the PARTIAL note."""
    lines = Path(table_path).read_text().splitlines()
    return [ln for ln in lines if not ln.startswith(("Example 3,", "**PARTIAL**"))]


@pytest.fixture(scope="module")
def clean_lr(tmp_path_factory):
    """The lr study on 200 synthetic images, uninterrupted, in this process."""
    out = tmp_path_factory.mktemp("clean") / "lr"
    assert compare_main(LR_ARGS + ["--jobs", "1", "--out", str(out)]) == 0
    return out


# --------------------------------------------------------------------------- the store


def test_store_round_trip_and_key(tmp_path):
    store = RunStore(tmp_path)
    spec = {"study": "lr", "seed": 1, "lr": 0.01, "data": "abc"}
    assert store.load(spec) is None
    store.save(spec, {"test_error": [0.5, float("nan")], "n": np.int64(3)})
    assert store.load(spec) == {"test_error": [0.5, None], "n": 3}
    assert spec_key(spec) == spec_key(dict(reversed(spec.items())))  # canonical
    other = dict(spec, seed=2)
    assert spec_key(other) != spec_key(spec) and store.load(other) is None
    # a record holding another spec (edited, or a collision) counts as missing
    doc = json.loads(store.path(spec_key(spec)).read_text())
    doc["spec"]["lr"] = 0.02
    store.path(spec_key(spec)).write_text(json.dumps(doc))
    assert store.load(spec) is None
    store.path(spec_key(spec)).write_text("{half a rec")
    assert store.load(spec) is None
    assert not list(store.folder.glob(".*.tmp"))


def test_spec_holds_everything_that_decides_the_numbers(clean_lr):
    for doc in _records(clean_lr).values():
        spec = doc["spec"]
        for k in (
            "study",
            "setting",
            "seed",
            "epochs",
            "lr",
            "batch_size",
            "mode",
            "dtype",
            "data",
            "version",
        ):
            assert k in spec, k
        assert doc["key"] == spec_key(spec)


def test_a_failing_run_keeps_the_others_and_the_rerun_trains_only_it(
    clean_lr, tmp_path, monkeypatch, capsys
):
    real = flag.run_one

    def flaky(setting, seed, data, epochs=1, **kw):
        if setting == "on" and seed == 1 and kw["lr"] == 0.08:
            raise RuntimeError("boom")
        return real(setting, seed, data, epochs, **kw)

    monkeypatch.setattr(flag, "run_one", flaky)
    out = tmp_path / "lr"
    capsys.readouterr()
    assert compare_main(LR_ARGS + ["--jobs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: boom" in err
    clean = _records(clean_lr)
    recs = _records(out)
    assert len(clean) == 10 and len(recs) == 9 and set(recs) < set(clean)
    missing = (set(clean) - set(recs)).pop()
    assert (
        clean[missing]["spec"]["setting"],
        clean[missing]["spec"]["seed"],
        clean[missing]["spec"]["lr"],
    ) == ("on", 1, 0.08)
    for key, doc in recs.items():
        assert _numbers(doc) == _numbers(clean[key])
    assert "**PARTIAL**: 9 of 10 runs finished" in (out / "table.md").read_text()

    monkeypatch.setattr(flag, "run_one", real)
    assert compare_main(LR_ARGS + ["--jobs", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "reused 9 of 10 runs" in err and err.count("] flag on (forced), lr 0.08, seed 1") == 1
    assert _body(out / "table.md") == _body(clean_lr / "table.md")
    assert (out / "results.csv").read_text() == (clean_lr / "results.csv").read_text()
    for key, doc in _records(out).items():  # --jobs 2 (worker processes) == in-process
        assert _numbers(doc) == _numbers(clean[key])
    # --fresh retrains everything, with the same numbers
    assert compare_main(LR_ARGS + ["--jobs", "1", "--fresh", "--out", str(out)]) == 0
    assert "reused 0 of 10 runs" in capsys.readouterr().err
    assert _body(out / "table.md") == _body(clean_lr / "table.md")


def test_a_signal_just_after_a_save_still_counts_that_run(tmp_path, monkeypatch, capsys):
    """Ctrl-C between a record's save and its entry in the outcome: the PARTIAL note
    counts what the store holds (the race behind a once-flaky signal test)."""
    real_save = RunStore.save
    saved = []

    def save_then_interrupt(self, spec, record):
        real_save(self, spec, record)
        saved.append(spec_key(spec))
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "save", save_then_interrupt)
    out = tmp_path / "lr"
    assert compare_main(LR_ARGS + ["--jobs", "1", "--out", str(out)]) == 130
    assert "cnn compare: interrupted" in capsys.readouterr().err
    assert sorted(_records(out)) == sorted(saved)
    assert "**PARTIAL**: 2 of 10 runs finished (interrupted)" in (out / "table.md").read_text()


def test_output_folder_checked_and_locked(tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    with folder_lock(busy, "study"):
        t0 = time.perf_counter()
        assert compare_main(LR_ARGS + ["--out", str(busy)], prog="compare") == 2
        assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use by another study" in err
    assert not (busy / "runs").exists()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        target = ro / "x"
        if os.access(ro, os.W_OK):  # root writes anywhere; /proc refuses a new folder
            target = Path("/proc/cnn-no-such-folder/x")
        assert compare_main(LR_ARGS + ["--out", str(target)], prog="compare") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot create the --out folder" in err
    finally:
        ro.chmod(0o700)


# --------------------------------------------------------------------------- signals


def _children(pid):
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _default_sigint():
    # a test run in the background inherits SIGINT ignored (and Python keeps it so):
    # give the child the usual Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
@pytest.mark.parametrize(
    "sig, rc, word",
    [
        (signal.SIGINT, 130, "interrupted"),
        (signal.SIGTERM, 143, "terminated"),
        (signal.SIGKILL, -9, None),
    ],
)
def test_a_signal_stops_every_worker_and_keeps_the_finished_records(sig, rc, word, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp), NUMBA_NUM_THREADS="1")
    args = [
        sys.executable,
        "-m",
        "cnn",
        "compare",
        "--study",
        "lr",
        "--synthetic",
        "--train-subset",
        "2000",
        "--test-subset",
        "200",
        "--lrs",
        "0.005,0.01,0.02,0.04,0.08",
        "--seeds",
        "3",
        "--epochs",
        "2",
        "--jobs",
        "2",
        "--out",
        str(out),
    ]
    p = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.time() + 300
        while not list((out / "runs").glob("*.json")) and p.poll() is None:
            assert time.time() < deadline, "no record within 300 s"
            time.sleep(0.1)
        assert p.poll() is None, "the study finished before the signal"
        kids = _children(p.pid)
        assert kids and list(tmp.glob("cnn-compare-*"))
        os.kill(p.pid, sig)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == rc, stderr
    deadline = time.time() + 5
    while any(_alive(k) for k in kids) and time.time() < deadline:
        time.sleep(0.1)
    assert not [k for k in kids if _alive(k)], "worker processes left"
    assert not list(tmp.glob("cnn-compare-*")), "temporary data left"
    recs = _records(out)
    assert 1 <= len(recs) < 35
    if word is not None:
        assert "Traceback" not in stderr and "Error" not in stderr
        assert stderr.splitlines()[-1] == f"cnn compare: {word}"
        table = (out / "table.md").read_text()
        assert f"**PARTIAL**: {len(recs)} of 35 runs finished ({word})" in table
        assert (out / "lr_test_error.png").is_file()


@pytest.mark.slow  # about 30 s
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_a_killed_local_worker_costs_only_its_runs(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="1")
    args = [
        sys.executable,
        "-m",
        "cnn",
        "compare",
        "--study",
        "lr",
        "--synthetic",
        "--train-subset",
        "2000",
        "--test-subset",
        "100",
        "--lrs",
        "0.01,0.02,0.04",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--jobs",
        "2",
        "--no-plots",
        "--out",
        str(out),
    ]
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not _records(out) and p.poll() is None:
            assert time.time() < deadline, "no record within 300 s"
            time.sleep(0.1)
        workers = [
            k
            for k in _children(p.pid)
            if b"loky" in Path(f"/proc/{k}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{k}/cmdline").read_bytes()
        ]
        assert workers and p.poll() is None
        os.kill(workers[0], signal.SIGKILL)
        stdout, stderr = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, stderr
    assert "a worker process died" in stderr
    recs = _records(out)
    assert len(recs) == 3 * (2 + 2 + 1)
    assert all(d["record"]["status"] == "ok" for d in recs.values())
    assert "PARTIAL" not in (out / "table.md").read_text()


# --------------------------------------------------------------------------- Dask

DASK_ARGS = [
    "--quick",
    "--synthetic",
    "--train-subset",
    "500",
    "--test-subset",
    "100",
    "--settings",
    "off,on",
    "--no-plots",
]


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + old if old else "")
    try:
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as c:
            yield c
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def test_dask_cluster_gives_the_local_records(cluster, tmp_path, capsys):
    local, remote = tmp_path / "local", tmp_path / "dask"
    assert compare_main(DASK_ARGS + ["--jobs", "1", "--out", str(local)]) == 0
    assert (
        compare_main(DASK_ARGS + ["--scheduler", cluster.scheduler_address, "--out", str(remote)])
        == 0
    )
    err = capsys.readouterr().err
    assert "load the data themselves" in err  # the synthetic set is made on the workers
    a, b = _records(local), _records(remote)
    assert len(a) == 4 and set(a) == set(b)
    for key in a:
        assert _numbers(a[key]) == _numbers(b[key])
    assert {d["record"]["worker"]["pid"] for d in b.values()} != {os.getpid()}


@pytest.mark.slow  # about 30 s
def test_a_killed_dask_worker_costs_only_its_run(cluster, tmp_path):
    from distributed import Client

    out = tmp_path / "out"
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    args = [
        sys.executable,
        "-m",
        "cnn",
        "compare",
        "--study",
        "lr",
        "--synthetic",
        "--train-subset",
        "2000",
        "--test-subset",
        "100",
        "--lrs",
        "0.01,0.02,0.04",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--no-plots",
        "--scheduler",
        cluster.scheduler_address,
        "--out",
        str(out),
    ]
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        with Client(cluster.scheduler_address) as client:
            deadline = time.time() + 300
            while killed is None and p.poll() is None and time.time() < deadline:
                busy = [
                    w
                    for w, tasks in client.processing().items()
                    if any(str(t).startswith("cnn-run-") for t in tasks)
                ]
                if busy and _records(out):
                    pids = client.run(os.getpid, workers=busy[:1])
                    killed = next(iter(pids.values()))
                    os.kill(killed, signal.SIGKILL)
                time.sleep(0.1)
        stdout, stderr = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
    assert killed is not None, "no worker was busy while the study ran"
    assert p.returncode == 0, stderr
    recs = _records(out)
    assert len(recs) == 3 * (2 + 2 + 1)
    assert all(d["record"]["status"] == "ok" for d in recs.values())


# --------------------------------------------------------------------------- study "lr"


def _capture_figures(monkeypatch):
    figs = []

    def save(fig, path):
        figs.append(fig)
        Path(path).write_bytes(b"png")
        return Path(path)

    monkeypatch.setattr(study_plots, "_save", save)
    return figs


def test_lr_study_end_to_end(tmp_path, monkeypatch, capsys):
    figs = _capture_figures(monkeypatch)
    out = tmp_path / "lr"
    args = [
        "--study",
        "lr",
        "--quick",
        "--synthetic",
        "--train-subset",
        "300",
        "--test-subset",
        "200",
        "--jobs",
        "1",
        "--out",
        str(out),
    ]
    assert compare_main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    summary = doc["summary"]
    assert [c["lr"] for c in summary if c["setting"] == "off"] == list(lr.QUICK["lrs"])
    assert {c["setting"] for c in summary} == {"off", "on", "quad"}
    # every table cell is the mean +- std of the records' test errors
    table = (out / "table.md").read_text()
    recs = [d for d in _records(out).values()]
    for c in summary:
        for e in range(2):
            errs = [
                d["record"]["test_error"][e]
                for d in recs
                if d["spec"]["setting"] == c["setting"] and d["spec"]["lr"] == c["lr"]
            ]
            assert c["epochs"][e]["mean"] == pytest.approx(np.mean(errs), abs=1e-15)
            if len(errs) > 1:
                cell = f"{100 * np.mean(errs):.2f} +- {100 * np.std(errs, ddof=1):.2f}"
                row = next(
                    ln
                    for ln in table.splitlines()
                    if ln.startswith(f"| {c['label']} | {c['lr']:g} |")
                )
                assert cell in row
    # the best lr and the verdict follow from the numbers
    for v in doc["verdicts"]:
        e = v["epoch"]
        offs = [c for c in summary if c["setting"] == "off"]
        best = min(offs, key=lambda c: c["epochs"][e - 1]["mean"])
        assert v["off_lr"] == best["lr"]
        assert v["within"] == (v["gap"] <= v["spread"])
        assert ("**within**" if v["within"] else "**outside**") in v["text"]
    assert "quad loss and flag on (forced) gave identical test errors" in table
    # the figure: one line per setting and panel, its points the table's means
    assert (out / "lr_test_error.png").is_file() and len(figs) == 1
    axes = [ax for ax in figs[0].axes if ax.lines]
    assert len(axes) == 2
    for e, ax in enumerate(axes):
        drawn = {ln.get_gid(): ln for ln in ax.lines if ln.get_gid()}
        assert set(drawn) == {"off", "on", "quad"}
        for key, line in drawn.items():
            cells = sorted((c for c in summary if c["setting"] == key), key=lambda c: c["lr"])
            np.testing.assert_allclose(
                np.asarray(line.get_xdata(), float), [c["lr"] for c in cells]
            )
            np.testing.assert_allclose(
                np.asarray(line.get_ydata(), float), [100 * c["epochs"][e]["mean"] for c in cells]
            )
        assert ax.get_xscale() == "log"


def test_lr_summary_counts_diverged_runs_apart():
    def run(setting, lr_, seed, errs, status="ok"):
        return (
            {"setting": setting, "label": setting, "lr": lr_, "seed": seed, "epochs": 2},
            {"test_error": errs, "status": status},
        )

    finished = [
        run("off", 0.01, 0, [0.3, 0.2]),
        run("off", 0.01, 1, [0.5, 0.4]),
        run("off", 0.1, 0, [0.1, 0.05]),
        run("off", 0.1, 1, [0.2], "diverged: NaN"),
        run("on", 0.01, 0, [0.6, 0.5]),
        run("on", 0.01, 1, [0.4, 0.3]),
        run("on", 0.1, 0, [0.35, 0.3]),
        run("on", 0.1, 1, [0.25, 0.2]),
    ]
    s = lr.summarise(finished)
    off01 = next(c for c in s if c["setting"] == "off" and c["lr"] == 0.1)
    assert off01["diverged"] == [1] and off01["epochs"][1]["n"] == 1
    b = lr.best(s, 2)
    assert b["off"]["lr"] == 0.01 and b["on"]["lr"] == 0.1  # a diverged cell never wins
    v = lr.verdict(s, 2)
    assert v["gap"] == pytest.approx(0.25 - 0.3) and v["within"]
    # both best lrs at an end of the grid: the verdict says the optimum is not bracketed
    assert v["edges"] == [
        "flag off's best lr is the smallest of the grid",
        "flag on's best lr is the largest of the grid",
    ]
    assert "Not bracketed" in v["text"]
    assert "diverged" in lr.format_table(s) and "1 (seed 1)" in lr.format_table(s)


# --------------------------------------------------------------------------- study "pairings"


@pytest.fixture(scope="module")
def rows():
    return pairings.gradient_rows(quick=True)


def test_pairings_gradient_checks(rows):
    f = pairings.findings(rows)
    assert f["canonical_pass_flag_off"] == {"none+quad": True, "sigm+cros": True, "soft+cros": True}
    assert f["others_need_flag_on"] == {
        k: True for k in ("sigm+quad", "soft+quad", "tanh+quad", "rect+quad", "plus+quad")
    }
    assert f["flag_on_sigm_cros_is_quad"] and f["rect_cros_fails"]
    assert set(f["undefined"]) == {"none+cros", "tanh+cros", "plus+cros"}
    on = pairings._row(rows, "sigm", "cros", "on")
    assert not on["passed"] and on["passed_quad"] and on["norm_rel"] > 0.1
    assert on["norm_rel_quad"] < 1e-6
    # the study's numerical gradient is the package's gradient checker's for a port loss
    import cnn

    net = pairings.check_net("sigm")
    rng = np.random.default_rng(1)
    x, y = rng.random((10, 10, 10)), np.eye(4)[rng.integers(0, 4, 10)]
    net.loss_func = "cros"
    rep = cnn.gradient_checker(net, x, y)
    mine = pairings._compare(
        pairings._analytic(net, x, y, False), pairings._numerical(net, x, y, "sigm", "cros")
    )
    assert rep.passed and mine[0] <= pairings.TOL
    assert max(c.max_abs for c in rep.checks) == pytest.approx(mine[0], abs=1e-9)
    # faithful differs only for the linear output with the flag on (D2: a * err)
    faithful = [r for r in rows if r["mode"] == "faithful" and r["defined"]]
    assert {(r["act"], r["loss"], r["flag_value"]) for r in faithful} == {("none", "quad", True)}
    assert not faithful[0]["passed"]
    # ReLU + BCE computed with the clipping learners use
    a = np.array([[-0.5, 0.3, 2.0]])
    y1 = np.array([[0.0, 1.0, 1.0]])
    clipped = np.clip(a, pairings.EPS_CLIP, 1 - pairings.EPS_CLIP)
    want = -(y1 * np.log(clipped) + (1 - y1) * np.log(1 - clipped)).sum()
    assert pairings.loss_value(a, y1, "rect", "cros") == pytest.approx(want)


def test_pairings_study_end_to_end(rows, tmp_path, monkeypatch):
    figs = _capture_figures(monkeypatch)
    monkeypatch.setattr(pairings, "gradient_rows", lambda **kw: rows)
    out = tmp_path / "p"
    args = [
        "--study",
        "pairings",
        "--quick",
        "--synthetic",
        "--train-subset",
        "200",
        "--test-subset",
        "100",
        "--jobs",
        "1",
        "--out",
        str(out),
    ]
    assert compare_main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["findings"]["flag_on_sigm_cros_is_quad"] is True
    mnist = {(c["act"], c["loss"], c["flag"]): c for c in doc["mnist"]}
    assert len(mnist) == len(pairings.MNIST_PAIRS)
    # flag on under cross-entropy trains on the quadratic loss: identical test errors
    assert mnist["sigm", "cros", "on"]["errors"] == mnist["sigm", "quad", "derived"]["errors"]
    assert mnist["soft", "cros", "on"]["errors"] == mnist["soft", "quad", "derived"]["errors"]
    assert mnist["sigm", "cros", "derived"]["flag_value"] is False
    text = (out / "table.md").read_text()
    assert (
        "| sigm | binary cross-entropy | off | 0 | a - y | corrected | **pass** (canonical)" in text
    )
    assert (
        "| rect | binary cross-entropy (clipped) | off | 0 | a - y | corrected | **FAIL**" in text
    )
    assert "| tanh | binary cross-entropy | any |" in text and "undefined: tanh" in text
    # the figure: one cell per pairing and flag, pass/FAIL as in the rows
    ax = figs[0].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    cells = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts
    }
    i = labels.index("sigm + cross-entropy")
    assert cells[i, 1].startswith("pass") and cells[i, 2].startswith("FAIL")  # off, on
    j = labels.index("rect + cross-entropy (clipped)")
    assert all(cells[j, k].startswith("FAIL") for k in range(3))
    assert cells[labels.index("none + cross-entropy"), 0] == "undefined"
