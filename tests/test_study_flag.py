"""cnn.studies.flag and cnn compare: the flag comparison pipeline on small synthetic data."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cnn
from cnn.cli import compare
from cnn.cli.compare import main as compare_main
from cnn.studies import flag, reproduce
from cnn.studies.flag import SETTINGS
from cnn.studies.plots import flag_figures

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "example3_reference.npz"


def synthetic(n, seed):
    """Digit-like data: a fixed 28x28 template per class plus noise, one-hot labels."""
    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(1234).random((10, 28, 28))
    labels = rng.integers(0, 10, n)
    x = np.clip(0.7 * templates[labels] + 0.3 * rng.random((n, 28, 28)), 0.0, 1.0)
    return x, np.eye(10)[labels]


@pytest.fixture(scope="module")
def data():
    return synthetic(200, 1) + synthetic(100, 2)


@pytest.fixture(scope="module")
def outputs(data, tmp_path_factory):
    """The whole pipeline, once with one worker and once with two."""
    base = tmp_path_factory.mktemp("compare")
    common = ["--seeds", "2", "--probe-every", "2"]
    rc1 = compare_main(common + ["--jobs", "1", "--out", str(base / "j1")], data=data)
    rc2 = compare_main(common + ["--jobs", "2", "--out", str(base / "j2"), "--no-plots"], data=data)
    assert rc1 == 0 and rc2 == 0
    return base / "j1", base / "j2"


def _runs(out):
    return json.loads((out / "results.json").read_text())["runs"]


def test_pipeline_writes_every_file_and_a_sane_table(outputs):
    out = outputs[0]
    for name in (
        "results.json",
        "results.csv",
        "table.md",
        "gradcheck.md",
        "loss_cros.png",
        "loss_quad.png",
        "test_error.png",
        "grad_ratio.png",
        "confusion_off.png",
        "confusion_on.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp"))
    assert not (outputs[1] / "loss_cros.png").exists()  # --no-plots
    doc = json.loads((out / "results.json").read_text())
    assert doc["meta"]["n_train"] == 200 and doc["meta"]["seeds"] == [0, 1]
    runs = doc["runs"]
    assert [(r["setting"], r["seed"]) for r in runs] == [(k, s) for k in SETTINGS for s in (0, 1)]
    for r in runs:
        assert r["status"] == "ok" and len(r["test_error"]) == 1 and 0 <= r["test_error"][0] <= 1
        assert r["misclassified"][0] == round(r["test_error"][0] * 100)
        assert len(r["loss_array"]) == len(r["loss_cros"]) == len(r["grad_norm_all"]) == 4
        assert r["probe"]["step"] == [0, 2, 4]
        assert np.sum(r["confusion"]) == 100
    table = (out / "table.md").read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert len(rows) == 1 + len(SETTINGS)
    for s in SETTINGS.values():
        row = next(ln for ln in rows if ln.startswith(f"| {s.label} |"))
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
        mean, std, lo, hi = (float(c) for c in cells[4:8])
        assert 0 <= lo <= mean <= hi <= 100 and std >= 0
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(runs)
    assert {r["label"] for r in rows} == {s.label for s in SETTINGS.values()}
    assert "flag off (derived) | 0 | cross-entropy" in (out / "gradcheck.md").read_text()


def test_jobs_do_not_change_the_numbers(outputs):
    for a, b in zip(_runs(outputs[0]), _runs(outputs[1])):
        assert a["worker"]["blas_threads"] == b["worker"]["blas_threads"] == 1
        for key in (
            "setting",
            "seed",
            "init_sha256",
            "test_error",
            "misclassified",
            "loss_array",
            "loss_cros",
            "loss_quad",
            "grad_norm_last",
            "grad_norm_all",
            "probe",
            "confusion",
        ):
            assert a[key] == b[key], (a["setting"], a["seed"], key)


def test_settings_of_a_seed_start_from_the_same_weights(outputs, data):
    runs = _runs(outputs[0])
    for seed in (0, 1):
        hashes = {r["init_sha256"] for r in runs if r["seed"] == seed}
        assert len(hashes) == 1
    assert len({r["init_sha256"] for r in runs}) == 2
    assert runs[0]["init_sha256"] == flag.params_sha256(cnn.example_network(3, seed=0))
    net = cnn.example_network(3, seed=0)
    before = flag.params_sha256(net)
    small = (data[0][:50], data[1][:50], data[2][:20], data[3][:20])
    rec = flag.run_one("corrected", 0, small, net=net, probe_every=0)
    assert flag.params_sha256(net) == before and net.mode == "faithful"
    assert rec["init_sha256"] == before and rec["mode"] == "corrected"


def test_what_each_setting_trains(outputs):
    runs = {(r["setting"], r["seed"]): r for r in _runs(outputs[0])}
    for seed in (0, 1):
        off, on, quad = runs["off", seed], runs["on", seed], runs["quad", seed]
        lr4 = runs["on-lr4", seed]
        assert (off["flag"], on["flag"], quad["flag"], lr4["flag"]) == (False, True, True, True)
        assert (off["loss_func"], on["loss_func"], quad["loss_func"]) == ("cros", "cros", "quad")
        assert lr4["learning_rate"] == 0.04 and off["learning_rate"] == 0.01
        # the reported loss is the one recorded alongside (the fused step sums the
        # per-example terms, compute_loss the matrix: the same to round-off)
        assert off["loss_array"] == pytest.approx(off["loss_cros"], rel=1e-13)
        assert on["loss_array"] == pytest.approx(on["loss_cros"], rel=1e-13)
        assert quad["loss_array"] == pytest.approx(quad["loss_quad"], rel=1e-13)
        # flag forced on under cross-entropy = training on the quadratic loss, bit for bit
        assert on["loss_cros"] == quad["loss_cros"] and on["test_error"] == quad["test_error"]
        assert on["grad_norm_all"] == quad["grad_norm_all"]
        # the flag's factor a(1-a) <= 1/4 shrinks each output error; the summed gradient
        # shrinks about as much (it may pass 1/4 slightly where flag-off terms cancel)
        p = off["probe"]
        ratio = np.array(p["last_on"]) / np.array(p["last_off"])
        assert np.all(ratio < 0.3) and np.all(ratio > 0)
        # the same network state: the flag-off probe at step 0 is the first step's gradient
        assert p["last_off"][0] == pytest.approx(off["grad_norm_last"][0], rel=1e-12)
        assert on["probe"]["last_on"][0] == pytest.approx(on["grad_norm_last"][0], rel=1e-12)


def test_run_one_matches_testcnn_and_records_epochs(data):
    small = (data[0][:100], data[1][:100], data[2], data[3])
    rec = flag.run_one("off", 3, small, epochs=2, probe_every=0)
    net = cnn.example_network(3, seed=3)
    cnn.traincnn(net, small[0], small[1], 2, 50, verbose=False)
    assert rec["test_error"][-1] == cnn.testcnn(net, data[2], data[3])
    assert len(rec["test_error"]) == len(rec["train_seconds"]) == 2
    assert len(rec["loss_array"]) == 4 and rec["probe"]["step"] == []
    np.testing.assert_array_equal(rec["loss_array"], net.loss_array)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--seeds", "0"], "--seeds"),
        (["--seeds", "x"], "--seeds"),
        (["--seeds", "2", "--seed-list", "1,2"], "not allowed"),
        (["--seed-list", "1,1"], "repeated"),
        (["--settings", "off,bogus"], "unknown setting 'bogus'"),
        (["--jobs", "0"], "--jobs"),
        (["--epochs", "-1"], "--epochs"),
        (["--train-subset", "120"], "multiple of the batch size"),
        (["--train-subset", "1000"], "more than the 200"),
        (["--test-subset", "1000"], "more than the 100"),
        (["--frobnicate"], "unrecognized"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, needle, data, capsys, tmp_path):
    rc = compare_main(argv + ["--out", str(tmp_path)], data=data, prog="compare")
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("compare: error:") and needle in err, err
    assert not (tmp_path / "results.json").exists()


def test_missing_mnist_is_a_one_line_error(tmp_path, capsys):
    rc = compare_main(
        ["--data-dir", str(tmp_path), "--no-download", "--out", str(tmp_path / "o")], prog="compare"
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("compare: error:"), err


def test_help_returns_0_and_prog_reads_well(capsys):
    assert compare_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--seed-list" in out and "flag on (forced)" in out
    assert compare.build_parser().prog in ("python -m cnn compare", Path(sys.argv[0]).name)
    assert compare.build_parser("x y").prog == "x y"


def test_script_is_a_thin_wrapper():
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compare_flag.py"), "--seeds", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.startswith("compare_flag.py: error:") and r.stderr.count("\n") == 1


def test_gradcheck_table_shows_which_loss_the_gradients_belong_to():
    text, rows = flag.gradcheck_table()
    off, on, quad, quad_off = rows
    assert (off["flag"], off["loss"], off["passed"]) == (False, "cros", True)
    assert (on["flag"], on["loss"], on["passed"]) == (True, "cros", False)
    assert (quad["flag"], quad["loss"], quad["passed"]) == (True, "quad", True)
    assert (quad_off["flag"], quad_off["loss"], quad_off["passed"]) == (False, "quad", False)
    assert off["max_abs"] < 1e-8 and quad["max_abs"] < 1e-8 and on["max_norm_rel"] > 0.1
    assert on["same_as_quad"] == 0.0 and 0 < on["ratio_last"] < 0.3
    assert "| flag on (forced) | 1 | cross-entropy |" in text and "**FAIL**" in text


def test_summary_statistics():
    def rec(setting, seed, err):
        return {
            "setting": setting,
            "label": SETTINGS[setting].label,
            "seed": seed,
            "flag": setting != "off",
            "loss_func": "cros",
            "learning_rate": 0.01,
            "mode": "faithful",
            "status": "ok",
            "test_error": [0.5, err],
            "misclassified": [50, int(err * 100)],
            "n_test": 100,
            "loss_cros": [1.0] * 150 + [float(seed)] * 100,
            "train_seconds": [2.0, 4.0],
            "test_seconds": [0.5, 0.5],
            "probe": {"last_on": [1.0, 2.0, 3.0], "last_off": [10.0, 10.0, 10.0]},
        }

    runs = [rec("off", 0, 0.1), rec("off", 1, 0.2), rec("off", 2, 0.3), rec("on", 0, 0.4)]
    s = flag.summarise(runs)
    assert [x["setting"] for x in s] == ["off", "on"]
    e = s[0]["error"]
    assert e["mean"] == pytest.approx(0.2) and e["std"] == pytest.approx(0.1)
    assert (e["min"], e["max"], e["n"]) == (0.1, 0.3, 3)
    assert s[0]["error_by_epoch"] == pytest.approx([0.5, 0.2])
    assert s[0]["ce_last100"] == pytest.approx(1.0) and s[0]["train_s_per_epoch"] == 3.0
    assert s[0]["grad_ratio_last"] == pytest.approx(0.2)
    assert s[1]["error"]["std"] == 0.0
    table = flag.format_table(s)
    assert "| flag off (derived) | off | cros | 0.01 | **20.00** | 10.00 | 10.00 | 30.00 |" in table
    assert "epoch 2" in table


def test_reference_fixture_is_small_complete_and_pickle_free():
    assert FIXTURE.stat().st_size < 3_000_000
    with np.load(FIXTURE, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    for which, wrong in ((None, 832), (True, 2787)):
        ref = reproduce.load_reference(FIXTURE, which)
        assert round(ref["err"] * 10000) == wrong and ref["flag"] is bool(which)
        assert ref["pred"].shape == (10000,) and ref["pred"].min() == 0 and ref["pred"].max() == 9
        assert ref["loss_array"].shape == (1200,)
        init = ref["init"]
        assert [L.type for L in init.layers] == list("icpcpff")
        assert init.loss_func == "auto" and init.learning_rate == 0.01
        for i, name, a in init.parameters():
            assert ref["params"][f"layer{i + 1}.{name}"].shape == a.shape
    a, b = (reproduce.load_reference(FIXTURE, f)["init"] for f in (None, True))
    assert flag.params_sha256(a) == flag.params_sha256(b)


def test_reproduce_reference_runs_on_injected_data(data):
    small = (data[0][:100], data[1][:100]) + synthetic(10000, 5)
    r = reproduce.reproduce_reference(FIXTURE, None, data=small)
    assert r["flag"] == "off (derived)" and r["ref_misclassified"] == 832
    assert not r["match"] and r["loss_array_max_rel"] == float("inf")
    assert "| flag off (derived) |" in reproduce.format_reproduction([r])
    with pytest.raises(ValueError, match="flag"):
        reproduce.reproduce_reference(FIXTURE, "sideways", data=small)


def test_reproduce_option_prints_the_comparison(data, tmp_path, capsys):
    small = (data[0][:50], data[1][:50]) + synthetic(10000, 6)
    rc = compare_main(
        ["--reproduce", str(FIXTURE), "--out", str(tmp_path)], data=small, prog="compare"
    )
    out = capsys.readouterr().out
    assert rc == 1  # 50 synthetic images do not reproduce the MNIST runs
    assert "| flag off (derived) |" in out and "| flag forced on |" in out and "**NO**" in out
    assert (tmp_path / "reproduction.md").read_text() == out
    assert compare_main(["--reproduce", str(tmp_path / "nothing.npz")], data=small) == 2


def test_a_diverged_run_is_recorded_not_fatal(data, tmp_path, monkeypatch):
    small = (data[0][:100], data[1][:100], data[2][:20], data[3][:20])
    good = flag.run_one("on", 0, small, probe_every=1)

    def diverge(net, *args, **kwargs):
        raise cnn.NonFiniteError("NaN/Inf in epoch 1, minibatch 2: the loss")

    monkeypatch.setattr(flag, "traincnn", diverge)
    bad = flag.run_one("off", 0, small, probe_every=1)
    assert bad["status"].startswith("diverged: NaN/Inf") and bad["test_error"] == []
    meta = {
        "n_train": 100,
        "n_test": 20,
        "epochs": 1,
        "batch_size": 50,
        "seeds": [0],
        "machine": "test",
        "date": "today",
    }
    table = flag.format_table(flag.summarise([bad, good]), meta)
    assert "| flag off (derived) (1 diverged) |" in table and "**n/a**" in table
    flag_figures([bad, good], tmp_path)
    assert (tmp_path / "test_error.png").is_file()
