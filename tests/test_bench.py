"""cnn.bench (the speed benchmark in the package): arguments, machine header, table, burners."""

import os

import pytest

from cnn import bench, threads


def test_bad_arguments_exit_2(capsys):
    for argv in (["--images", "70"], ["--busy-images", "0"], ["--burners", "0"]):
        with pytest.raises(SystemExit) as e:
            bench.main(argv)
        assert e.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_machine_header_names_cpu_simd_blas_threading():
    r = {"machine": bench.machine_info()}
    text = bench.machine_header(r)
    assert "SIMD" in text and "BLAS:" in text and "Numba threading layer:" in text
    assert r["machine"]["simd"] in (
        "AVX-512 (+FMA)",
        "AVX-512",
        "AVX2+FMA",
        "AVX2",
        "AVX",
        "SSE",
        "none",
        "unknown",
    )


def _results():
    """A results dict of cnn.bench without PyTorch (the keys make_table reads)."""
    return {
        "train_float64": {"seconds_per_60k": 3.0},
        "train_float32": {"seconds_per_60k": 2.0},
        "train_float64_layers": {"seconds_per_60k": 6.0},
        "busy": {"burners": 2, "ours": {"seconds_per_60k": 12.0}},
        "testcnn": {"seconds_per_10k": 0.25},
        "first_call": {"warm_seconds": 0.5, "cold_seconds": 10.0},
        "peak_rss": {"bytes": 5e8, "vmhwm_bytes": 5e8, "images": 60000},
    }


def test_table_rows_with_and_without_torch():
    r = _results()
    rows = {row[0]: row for row in bench.make_table(r)}
    assert rows["train float64, s/epoch (ours, layer-by-layer path)"][4] == "fused is 2.00x faster"
    busy = rows["busy machine: train float64 with 2 CPU burners (ours)"]
    assert busy[4] == "4.00x idle NO"  # no idle run beside it: against the idle row
    # against the run without burners just before it, when there is one
    r["busy"]["ours_idle"] = {"seconds_per_60k": 4.5}
    busy = {row[0]: row for row in bench.make_table(r)}[busy[0]]
    assert busy[4] == "2.67x idle yes"
    r["torch"] = {
        "train_float64": {"seconds_per_60k": 13.5},
        "train_float32": {"seconds_per_60k": 5.0},
        "test_float64": {"seconds_per_10k": 0.5},
        "test_float32": {"seconds_per_10k": 0.4},
    }
    rows = {row[0]: row for row in bench.make_table(r)}
    assert rows["train float64, s/epoch (ours, fused step)"][2] == "4.50"
    assert "4x yes (4.50x)" in rows["train float64, s/epoch (ours, fused step)"][4]
    assert rows["train float32, s/epoch (ours, fused step)"][4] == "NO (2.50x)"


def test_cold_first_call_row_is_the_median_of_its_runs():
    r = _results()
    r["first_call"] = {"warm_seconds": 0.5, "cold_seconds": 14.0, "cold_runs": [16.0, 12.5, 14.0]}
    row = {row[0]: row for row in bench.make_table(r)}["first minibatch, fresh process, cold cache"]
    assert row[1] == "14.0 s (median of 3, 12.5-16.0 s)" and row[4] == "yes"
    r["first_call"].update(cold_seconds=16.0, cold_runs=[16.0])
    row = {row[0]: row for row in bench.make_table(r)}[row[0]]
    assert row[1] == "16.0 s" and row[4] == "NO"


def test_first_call_times_runs_each_cold_process_on_its_own_empty_cache(monkeypatch):
    seen = []

    def fake_python(code, env=None, args=()):
        seen.append((env or {}).get("NUMBA_CACHE_DIR"))
        return str(10.0 + len(seen))

    monkeypatch.setattr(bench, "_python", fake_python)
    fc = bench.first_call_times(3)
    cold = seen[3:]  # after the fill and the two warm runs (no cache directory given)
    assert seen[:3] == [None] * 3 and len(cold) == 3 and len(set(cold)) == 3 and None not in cold
    assert fc["cold_runs"] == [14.0, 15.0, 16.0] and fc["cold_seconds"] == 15.0
    assert fc["warm_seconds"] == 12.0


def test_burners_start_and_stop():
    with bench.burners(2) as b:
        pids = [p.pid for p in b.procs]
        assert all(p.poll() is None for p in b.procs)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_torch_gets_its_own_openmp_defaults(monkeypatch):
    assert "GOMP_SPINCOUNT" in threads.SET_BY_CNN or "GOMP_SPINCOUNT" in os.environ
    monkeypatch.setitem(threads.SET_BY_CNN, "CNN_TEST_VAR", "1")
    monkeypatch.setenv("CNN_TEST_VAR", "1")
    with threads.defaults_for_others():
        assert "CNN_TEST_VAR" not in os.environ
    assert os.environ["CNN_TEST_VAR"] == "1"


def test_interleaved_rows_min_median_max_and_per_round_ratio():
    il = {
        "rounds": 3,
        "images": 500,
        "seconds_per_60k": {"ours_float64": [3.0, 4.0, 3.5], "torch_float64": [12.0, 12.0, 21.0]},
        "torch_over_ours": {"float64": [4.0, 3.0, 6.0]},
    }
    rows = {row[0]: row[1:] for row in bench.interleaved_rows(il)}
    assert rows["ours float64, s/epoch"] == ("3.000 s", "3.500 s", "4.000 s")
    assert rows["torch / ours float64, per round"] == ("3.00x", "4.00x", "6.00x")


def test_busy_run_in_a_fresh_process_with_cnns_openmp_settings():
    """The busy-machine row runs ours in a process of its own (not under the OpenMP
    runtime another library loaded first): here 50 images beside one burner."""
    out = bench.busy_times(50, 1, use_torch=False)
    ours = out["ours"]
    assert ours["images"] == 50 and ours["dtype"] == "float64" and ours["step"] == "fused"
    assert 0 < ours["seconds"] < 60 and ours["loss"] > 0
    idle = out["ours_idle"]  # the same run without the burner, just before
    assert idle["images"] == 50 and idle["loss"] == ours["loss"]
    assert "torch" not in out and "torch_idle" not in out


def test_pytorch_row_is_the_best_of_as_many_runs_as_ours(monkeypatch):
    times = iter([9.0, 7.0, 8.0])
    calls = []

    def fake(xs, ys, dtype, threads, n_images):
        calls.append((dtype, threads, n_images))
        return {"seconds": next(times), "dtype": dtype}

    monkeypatch.setattr(bench.bench_peers, "torch_epoch_time", fake)
    best = bench.best_torch_epoch(None, None, "float32", 600, 3)
    assert best == {"seconds": 7.0, "dtype": "float32"}
    assert calls == [("float32", 2, 600)] * 3


def test_machine_header_says_when_a_run_is_held_to_another_target(monkeypatch):
    for k in bench.HELD_BY:
        monkeypatch.delenv(k, raising=False)
    r = {"machine": bench.machine_info()}
    assert "Held to another target" not in bench.machine_header(r)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    r = {"machine": bench.machine_info()}
    line = next(t for t in bench.machine_header(r).splitlines() if t.startswith("Held"))
    assert "OPENBLAS_CORETYPE=Haswell" in line and "ATEN_CPU_CAPABILITY=avx2" in line
    assert f"Numba compiles for {r['machine']['numba_cpu']}" in line
