"""``cnn train`` / ``cnn test``: the output folder is checked before the work, one run per
folder, finished runs are not replaced silently, ``--resume`` keeps the run's options."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnn
from cnn import cli
from cnn.atomic import folder_lock
from cnn.checkpoint import load_npz_meta, save_npz
from cnn.train_run import Interrupted, TrainConfig, run_training

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    net = cnn.initcnn((12, 12), 0.1, seed=0)
    cnn.add_conv_layer(net, 2, 5, "tanh")
    cnn.add_pool_layer(net, 2)
    cnn.add_fc_layer(net, 10, "sigm")
    save_npz(d / "tiny.npz", net)
    return d / "tiny.npz"


def _unwritable(tmp_path):
    """Folders that cannot be created or written, even by root."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [(blocker / "out", "cannot create"), (blocker, "not a folder")]
    if os.geteuid() != 0:
        ro = tmp_path / "read-only"
        ro.mkdir()
        ro.chmod(0o555)
        cases += [(ro, "cannot write"), (ro / "sub", "cannot create")]
    if Path("/proc/self").is_dir():
        cases.append((Path("/proc/cnn-out"), "cannot create"))
    return cases


def _one_line(err, command):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cnn {command}: error: ") and len(lines[0]) < 300, lines[0]
    return lines[0]


def test_unwritable_out_fails_at_once_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNN_NO_DOWNLOAD", "1")
    for out, words in _unwritable(tmp_path):
        t0 = time.perf_counter()
        # 60,000 synthetic digits for 5 epochs would take minutes: it must not start.
        code = cli.main(
            ["train", "--synthetic", "60000", "--epochs", "5", "--no-progress", "--out", str(out)]
        )
        elapsed = time.perf_counter() - t0
        line = _one_line(capsys.readouterr().err, "train")
        assert code == 2 and elapsed < 10, (out, line)
        assert words in line and str(out) in line and "--out" in line
        assert "training started" not in capsys.readouterr().out


def test_unwritable_compare_out_fails_before_loading_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CNN_NO_DOWNLOAD", "1")
    for out, words in _unwritable(tmp_path):
        t0 = time.perf_counter()
        code = cli.main(["compare", "--quick", "--out", str(out)])
        line = _one_line(capsys.readouterr().err, "compare")
        assert code == 2 and time.perf_counter() - t0 < 10, line
        assert words in line and "--out" in line


def test_unwritable_plots_folder(tmp_path, tiny, capsys):
    for out, words in _unwritable(tmp_path):
        code = cli.main(
            [
                "train",
                "--init",
                str(tiny),
                "--synthetic",
                "20",
                "--batch-size",
                "10",
                "--no-progress",
                "--out",
                str(tmp_path / "run"),
                "--plots",
                str(out),
            ]
        )
        line = _one_line(capsys.readouterr().err, "train")
        assert code == 2 and "--plots" in line and words in line
        assert not (tmp_path / "run" / "checkpoint.npz").exists()
        code = cli.main(["test", str(tiny), "--synthetic", "20", "--plots", str(out)])
        line = _one_line(capsys.readouterr().err, "test")
        assert code == 2 and "--plots" in line and words in line


def test_a_finished_run_is_not_replaced_without_overwrite(tiny, tmp_path, capsys):
    argv = [
        "train",
        "--init",
        str(tiny),
        "--synthetic",
        "20",
        "--batch-size",
        "10",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    capsys.readouterr()
    before = (tmp_path / "net.npz").read_bytes()
    assert cli.main(argv + ["--lr", "0.5"]) == 2
    line = _one_line(capsys.readouterr().err, "train")
    assert "finished run" in line and "--overwrite" in line and "--resume" not in line
    assert (tmp_path / "net.npz").read_bytes() == before
    assert cli.main(argv + ["--lr", "0.5", "--overwrite"]) == 0
    assert (tmp_path / "net.npz").read_bytes() != before


def test_a_busy_folder_is_refused_at_once(tiny, tmp_path, capsys):
    """While another process holds the folder, a run is refused; never 'resume it'."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from cnn.atomic import folder_lock\n"
            f"with folder_lock({str(tmp_path)!r}, 'train run'):\n"
            "    print('locked', flush=True); time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        code = cli.main(
            [
                "train",
                "--init",
                str(tiny),
                "--synthetic",
                "20",
                "--batch-size",
                "10",
                "--no-progress",
                "--out",
                str(tmp_path),
            ]
        )
        line = _one_line(capsys.readouterr().err, "train")
        assert code == 2 and time.perf_counter() - t0 < 10
        assert "in use by another train run" in line and f"process {holder.pid}" in line
        assert "--resume" not in line
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path):  # released by the kernel when the holder died
        pass


def test_two_concurrent_train_runs_exactly_one_runs(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "cnn",
        "train",
        "--synthetic",
        "2000",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[2] == 2)
    line = _one_line(loser[1], "train")
    assert "in use by another train run" in line or "finished run" in line
    assert "--resume" not in line
    winner = next(r for r in results if r[2] == 0)
    assert "epoch 2/2: " in winner[0] and "Elapsed time" not in winner[0]
    meta = load_npz_meta(out / "checkpoint.npz")
    assert meta["finished"] and meta["settings"]["seed"] == 1
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_resume_keeps_the_options_of_the_run(tiny, tmp_path, capsys):
    import signal

    out = tmp_path / "run"

    def stop_after_3(net, epoch, batch):
        if epoch * 6 + batch + 1 == 3:
            os.kill(os.getpid(), signal.SIGINT)

    cfg = TrainConfig(
        init=str(tiny),
        synthetic=60,
        batch_size=10,
        epochs=2,
        checkpoint_every=2,
        out=str(out),
        progress=False,
        verbose=False,
    )
    with pytest.raises(Interrupted):
        run_training(cfg, callback=stop_after_3)
    seen = []

    def watch(net, epoch, batch):
        seen.append(load_npz_meta(out / "checkpoint.npz")["batches_done"])

    res = run_training(
        TrainConfig(resume=str(out / "checkpoint.npz"), progress=False), callback=watch
    )
    printed = capsys.readouterr().out
    assert "resuming with the options of the run: --checkpoint-every 2" in printed
    assert res.batches_done == 12
    # checkpoints every 2 minibatches, as the run was started (the default is 200)
    assert sorted(set(seen)) == [3, 4, 6, 8, 10]
    assert load_npz_meta(out / "checkpoint.npz")["options"]["checkpoint_every"] == 2
    # an option given again wins
    res = run_training(
        TrainConfig(
            resume=str(out / "checkpoint.npz"),
            epochs=3,
            checkpoint_every=5,
            progress=False,
            verbose=False,
        )
    )
    assert load_npz_meta(out / "checkpoint.npz")["options"]["checkpoint_every"] == 5


def test_resume_keeps_no_verify_of_a_run_on_custom_data(tmp_path, capsys):
    from test_mnist import make_mnist_dir

    d = tmp_path / "custom"
    make_mnist_dir(d, n_train=20, n_test=10)
    out = tmp_path / "run"
    argv = [
        "train",
        "--data-dir",
        str(d),
        "--no-download",
        "--batch-size",
        "10",
        "--example",
        "1",
        "--seed",
        "0",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 2  # custom data are not the published MNIST
    assert "--no-verify" in capsys.readouterr().err
    assert cli.main(argv + ["--no-verify", "--overwrite"]) == 0
    capsys.readouterr()
    assert (
        cli.main(
            ["train", "--resume", str(out / "checkpoint.npz"), "--epochs", "2", "--no-progress"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "--no-verify" in printed and f"--data-dir {d}" in printed


def test_epoch_times_are_labelled(tiny, tmp_path, capsys):
    assert (
        cli.main(
            [
                "train",
                "--init",
                str(tiny),
                "--synthetic",
                "20",
                "--batch-size",
                "10",
                "--epochs",
                "2",
                "--no-progress",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "epoch 1/2: " in out and "epoch 2/2: " in out and "Elapsed time" not in out
