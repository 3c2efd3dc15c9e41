"""The training runner (``python -m cnn train``): outputs, checkpoints, resume, Ctrl-C, NaN.

Everything runs on the synthetic digits (``cnn.synthetic``) with a tiny network
given by ``--init`` (12x12 inputs), so no MNIST is needed and each run takes
well under a second; one test runs Example 3 in a subprocess and stops it with
a real SIGINT.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cnn
from cnn import cli, synthetic, train_run
from cnn.checkpoint import load_npz, load_npz_meta, save_npz
from cnn.matlab import load_cnn
from cnn.train_run import Interrupted, TrainConfig, TrainingError, UsageError, run_training

REPO = Path(__file__).resolve().parent.parent


def _tiny(last_act="sigm"):
    """i(12x12) - c(tanh 2, 5x5) - p2 - f(last_act 10)."""
    net = cnn.initcnn((12, 12), 0.1, seed=0)
    cnn.add_conv_layer(net, 2, 5, "tanh")
    cnn.add_pool_layer(net, 2)
    cnn.add_fc_layer(net, 10, last_act)
    return net


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    save_npz(d / "tiny.npz", _tiny())
    save_npz(d / "tiny_none.npz", _tiny("none"))
    return d


def _cfg(tiny, out, **kw):
    base = dict(
        init=str(tiny / "tiny.npz"),
        synthetic=60,
        batch_size=10,
        epochs=2,
        checkpoint_every=4,
        out=str(out),
        progress=False,
        verbose=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def _same_network(a, b):
    pa, pb = list(a.parameters()), list(b.parameters())
    assert len(pa) == len(pb)
    for (i, n, x), (j, m, y) in zip(pa, pb):
        assert (i, n) == (j, m)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)  # bit for bit
    assert a.loss_array == b.loss_array


def _sigint_at(done_target, n_batches):
    """A traincnn callback that sends this process SIGINT after minibatch ``done_target``."""

    def callback(net, epoch, batch):
        if epoch * n_batches + batch + 1 == done_target:
            os.kill(os.getpid(), signal.SIGINT)

    return callback


def test_writes_network_files_plot_and_checkpoints(tiny, tmp_path):
    out = tmp_path / "run"
    res = run_training(_cfg(tiny, out))
    for name in ("net.mat", "net.npz", "loss.png", "checkpoint.npz", "checkpoint.mat", "run.json"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp"))
    assert res.batches_done == 12 and len(res.net.loss_array) == 12
    assert res.n_test == 12 and 0 <= res.test_error <= 1
    assert res.misclassified == round(res.test_error * res.n_test)
    _same_network(load_npz(out / "net.npz"), res.net)
    _same_network(load_cnn(out / "net.mat"), res.net)
    _same_network(load_npz(out / "checkpoint.npz"), res.net)
    meta = load_npz_meta(out / "checkpoint.npz")
    assert meta["batches_done"] == 12 and meta["finished"] is True
    assert meta["epochs"] == 2 and meta["batch_size"] == 10
    assert meta["settings"]["synthetic"] == 60 and meta["settings"]["batch_size"] == 10
    # the test error is testcnn's on the synthetic test set
    tx, ty = synthetic.synthetic_split("test", 12, (12, 12))
    assert res.test_error == cnn.testcnn(res.net, tx, ty)


def test_prints_time_and_test_error(tiny, tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "--init",
            str(tiny / "tiny.npz"),
            "--synthetic",
            "40",
            "--batch-size",
            "10",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "training time:" in out
    assert "test error is" in out and "misclassified" in out
    assert "net.mat" in out and "net.npz" in out


def test_periodic_checkpoints_hold_the_position(tiny, tmp_path):
    """Each periodic checkpoint, read while training goes on, is complete and consistent."""
    out = tmp_path / "run"
    seen = []

    def callback(net, epoch, batch):
        p = out / "checkpoint.npz"
        if p.exists():
            meta = load_npz_meta(p)
            seen.append(meta["batches_done"])
            assert len(load_npz(p).loss_array) == meta["batches_done"]

    run_training(_cfg(tiny, out, checkpoint_every=3, epochs=2), callback=callback)
    assert sorted(set(seen)) == [3, 6, 9]


def test_resume_from_mid_run_checkpoint_is_bit_identical(tiny, tmp_path):
    full = run_training(_cfg(tiny, tmp_path / "full", epochs=3))
    kept = tmp_path / "kept.npz"

    def keep(net, epoch, batch):  # copy the checkpoint written after minibatch 8
        if epoch * 6 + batch + 1 == 9:
            shutil.copy(tmp_path / "part" / "checkpoint.npz", kept)

    run_training(_cfg(tiny, tmp_path / "part", epochs=3), callback=keep)
    assert load_npz_meta(kept)["batches_done"] == 8
    resumed = run_training(
        TrainConfig(resume=str(kept), out=str(tmp_path / "resumed"), progress=False, verbose=False)
    )
    assert resumed.batches_done == 18
    _same_network(resumed.net, full.net)
    assert resumed.test_error == full.test_error


def test_more_epochs_continue_a_finished_run(tiny, tmp_path):
    two = run_training(_cfg(tiny, tmp_path / "two", epochs=2))
    one = run_training(_cfg(tiny, tmp_path / "one", epochs=1))
    more = run_training(
        TrainConfig(
            resume=str(tmp_path / "one" / "checkpoint.npz"), epochs=2, progress=False, verbose=False
        )
    )
    assert more.out == tmp_path / "one"
    assert len(one.net.loss_array) == 6
    _same_network(more.net, two.net)


def test_ctrl_c_in_process_writes_checkpoint_and_resumes_identically(tiny, tmp_path):
    full = run_training(_cfg(tiny, tmp_path / "full"))
    out = tmp_path / "cut"
    with pytest.raises(Interrupted) as info:
        run_training(_cfg(tiny, out, checkpoint_every=100), callback=_sigint_at(5, 6))
    exc = info.value
    assert exc.batches_done == 5
    assert exc.checkpoint == out / "checkpoint.npz"
    assert "--resume" in exc.resume_command and "Resume with" in str(exc)
    assert load_npz_meta(exc.checkpoint)["batches_done"] == 5
    assert len(load_npz(exc.checkpoint).loss_array) == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    resumed = run_training(TrainConfig(resume=str(exc.checkpoint), progress=False, verbose=False))
    _same_network(resumed.net, full.net)


def test_ctrl_c_exit_code_and_message(tiny, tmp_path, capsys, monkeypatch):
    real = train_run.run_training

    def interrupted(cfg, callback=None):
        return real(cfg, callback=_sigint_at(2, 6))

    monkeypatch.setattr(train_run, "run_training", interrupted)
    code = cli.main(
        [
            "train",
            "--init",
            str(tiny / "tiny.npz"),
            "--synthetic",
            "60",
            "--batch-size",
            "10",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 130
    assert "interrupted after minibatch 2 of 6" in err
    assert f"--resume {tmp_path / 'checkpoint.npz'}" in err
    assert "Traceback" not in err


def test_sigint_to_a_real_training_process(tmp_path):
    """Example 3 in a subprocess: SIGINT after the first checkpoint -> exit 130, a valid
    checkpoint, and resuming gives the weights of an uninterrupted run bit for bit."""
    out = tmp_path / "run"
    args = [
        "--synthetic",
        "100",
        "--batch-size",
        "10",
        "--epochs",
        "3",
        "--seed",
        "5",
        "--checkpoint-every",
        "2",
        "--no-progress",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnn", "train", *args, "--out", str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.npz").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Resume with: python -m cnn train --resume" in stderr
    assert "Traceback" not in stderr
    meta = load_npz_meta(out / "checkpoint.npz")
    done = meta["batches_done"]
    assert f"interrupted after minibatch {done} of 30; checkpoint written" in stderr
    assert 2 <= done < 30 and not meta["finished"]
    assert len(load_npz(out / "checkpoint.npz").loss_array) == done
    assert not list(out.glob("*.tmp"))

    resumed = run_training(
        TrainConfig(resume=str(out / "checkpoint.npz"), progress=False, verbose=False)
    )
    full = run_training(
        TrainConfig(
            synthetic=100,
            batch_size=10,
            epochs=3,
            seed=5,
            checkpoint_every=0,
            out=str(tmp_path / "full"),
            progress=False,
            verbose=False,
        )
    )
    _same_network(resumed.net, full.net)


def _no_divergence_guard(monkeypatch):
    """Only NaN/Inf stop a run (lr 1e100 would otherwise be stopped earlier, as diverging)."""
    import cnn.guard

    monkeypatch.setattr(cnn.guard, "LOSS_GROWTH", float("inf"))
    monkeypatch.setattr(cnn.guard, "WEIGHT_LIMIT", float("inf"))


def test_nonfinite_stops_naming_layer_and_minibatch(tiny, tmp_path, monkeypatch):
    _no_divergence_guard(monkeypatch)
    out = tmp_path / "nan"
    cfg = _cfg(
        tiny,
        out,
        init=str(tiny / "tiny_none.npz"),
        learning_rate=1e100,
        checkpoint_every=1,
        epochs=1,
    )
    with pytest.raises(cnn.NonFiniteError) as info:
        run_training(cfg)
    msg = str(info.value)
    assert "minibatch 3" in msg and "layer 2" in msg
    assert "last good checkpoint, minibatch 2" in msg
    meta = load_npz_meta(out / "checkpoint.npz")
    assert meta["batches_done"] == 2
    net = load_npz(out / "checkpoint.npz")  # the good one: finite, loadable
    assert all(np.isfinite(a).all() for _, _, a in net.parameters())


def test_nonfinite_exit_code_one_line(tiny, tmp_path, capsys, monkeypatch):
    _no_divergence_guard(monkeypatch)
    code = cli.main(
        [
            "train",
            "--init",
            str(tiny / "tiny_none.npz"),
            "--synthetic",
            "60",
            "--batch-size",
            "10",
            "--lr",
            "1e100",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("cnn train: error: training stopped: NaN/Inf")
    assert "minibatch 3" in lines[0]


def test_nan_weights_after_an_update_are_never_checkpointed(tiny, tmp_path):
    out = tmp_path / "nan"

    def poison(net, epoch, batch):
        if batch == 2:
            net.layers[3].W[0, 0] = np.inf

    with pytest.raises(cnn.NonFiniteError, match="layer 4"):
        run_training(_cfg(tiny, out, checkpoint_every=3), callback=poison)
    assert not (out / "checkpoint.npz").exists()  # minibatch 3 was bad: nothing written


def test_failed_checkpoint_write_keeps_the_previous_one(tiny, tmp_path, monkeypatch):
    """A .mat write that fails half-way (disk full) is reported as the .mat; the .npz of the
    same checkpoint is whole and no .mat of another checkpoint is left beside it."""
    import scipy.io

    from cnn.checkpoint import verify_checkpoint

    out = tmp_path / "run"
    real = scipy.io.savemat
    calls = {"n": 0}

    def savemat(file, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint's .mat: write some bytes, then fail
            file.write(b"MATLAB 5.0 half")
            raise OSError(28, "No space left on device")
        return real(file, *a, **kw)

    monkeypatch.setattr(scipy.io, "savemat", savemat)
    with pytest.raises(TrainingError, match=r"checkpoint\.mat: No space left"):
        run_training(_cfg(tiny, out, checkpoint_every=2))
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    meta = load_npz_meta(out / "checkpoint.npz")
    assert meta["batches_done"] == 4
    assert len(load_npz(out / "checkpoint.npz").loss_array) == meta["batches_done"]
    assert verify_checkpoint(out / "checkpoint") == (out / "checkpoint.npz", None)


def test_second_ctrl_c_during_a_write_keeps_the_last_checkpoint(tiny, tmp_path, monkeypatch):
    import cnn.checkpoint as ck

    out = tmp_path / "run"
    real = ck.save_npz
    calls = {"n": 0}

    def save_npz_(path, net, meta=None):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(str(path) + ".tmp").write_bytes(b"PK\x03\x04 half")
            raise KeyboardInterrupt
        return real(path, net, meta)

    monkeypatch.setattr(ck, "save_npz", save_npz_)
    with pytest.raises(Interrupted) as info:
        run_training(_cfg(tiny, out, checkpoint_every=2))
    assert info.value.batches_done == 2
    assert "Resume with" in str(info.value)
    assert load_npz_meta(out / "checkpoint.npz")["batches_done"] == 2


def test_a_new_run_never_replaces_an_unfinished_checkpoint(tiny, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        run_training(_cfg(tiny, out), callback=_sigint_at(3, 6))
    before = (out / "checkpoint.npz").read_bytes()
    with pytest.raises(UsageError, match="unfinished run .*--resume"):
        run_training(_cfg(tiny, out))
    assert (out / "checkpoint.npz").read_bytes() == before
    res = run_training(_cfg(tiny, out, overwrite=True))  # explicit: start again
    assert res.batches_done == 12
    with pytest.raises(UsageError, match="holds a finished run .*--overwrite"):
        run_training(_cfg(tiny, out))  # a finished run is not replaced silently either
    assert run_training(_cfg(tiny, out, overwrite=True)).batches_done == 12


def test_resume_refuses_other_settings_or_data(tiny, tmp_path):
    run_training(_cfg(tiny, tmp_path / "a", epochs=1))
    ck = str(tmp_path / "a" / "checkpoint.npz")
    with pytest.raises(UsageError, match="--batch-size"):
        run_training(TrainConfig(resume=ck, batch_size=20, progress=False, verbose=False))
    with pytest.raises(UsageError, match="--synthetic"):
        run_training(TrainConfig(resume=ck, synthetic=80, progress=False, verbose=False))
    with pytest.raises(UsageError, match="not a training checkpoint"):
        run_training(
            TrainConfig(resume=str(tmp_path / "a" / "net.npz"), progress=False, verbose=False)
        )
    with pytest.raises(UsageError, match="past the end"):
        run_training(TrainConfig(resume=ck, epochs=0, progress=False, verbose=False))


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda m: m.pop("settings"), "settings"),
        (lambda m: m.update(batches_done="3"), "batches_done"),
        (lambda m: m["settings"].update(batch_size=0), "settings.batch_size"),
        (lambda m: m.update(data_sha256=None), "data_sha256"),
    ],
)
def test_resume_refuses_a_checkpoint_with_a_damaged_meta(tiny, tmp_path, change, field):
    run_training(_cfg(tiny, tmp_path / "a", epochs=1))
    ck = tmp_path / "a" / "checkpoint.npz"
    meta = load_npz_meta(ck)
    change(meta)
    save_npz(ck, load_npz(ck), meta)
    with pytest.raises(UsageError, match=f"no valid {field}"):
        run_training(TrainConfig(resume=str(ck), progress=False, verbose=False))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--synthetic", "55", "--batch-size", "10"], "does not divide"),
        (["--resume", "/nonexistent/checkpoint.npz"], "no such checkpoint"),
        (["--init", "/nonexistent/net.npz"], "no such network file"),
        (["--init-var", "cnn1"], "--init-var needs --init"),
    ],
)
def test_usage_errors_exit_2(tmp_path, capsys, argv, message):
    code = cli.main(["train", *argv, "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("cnn train: error: ") and message in err and "Traceback" not in err


def test_missing_mnist_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNN_MNIST_DIR", str(tmp_path / "empty"))
    code = cli.main(["train", "--no-download", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("cnn train: error: MNIST files not found in ") and err.count("\n") == 1
    assert "--data-dir" in err and "CNN_MNIST_DIR" in err
    assert "--synthetic" in err


def test_synthetic_digits_are_deterministic_and_balanced():
    x1, y1 = synthetic.synthetic_digits(50, seed=1)
    x2, y2 = synthetic.synthetic_digits(50, seed=1)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.shape == (50, 28, 28) and y1.shape == (50, 10)
    assert x1.min() >= 0 and x1.max() <= 1
    np.testing.assert_array_equal(y1.sum(axis=0), np.full(10, 5))
    # classes differ: the mean images of two digits are not alike
    m = [x1[y1[:, d] == 1].mean(axis=0) for d in range(10)]
    assert min(np.abs(m[a] - m[b]).sum() for a in range(10) for b in range(a)) > 1
    xt, _ = synthetic.synthetic_split("test", 50)
    assert not np.array_equal(xt, x1)


def test_example_script_is_the_runner(tiny, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "scripts/example_mnist.py",
            "--init",
            str(tiny / "tiny.npz"),
            "--synthetic",
            "20",
            "--batch-size",
            "10",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "test error is" in r.stdout and (tmp_path / "net.npz").is_file()
