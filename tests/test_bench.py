"""fastnn.tools.bench: the interleaved measurement, the paired ratios, the targets and the
tables (the timings themselves are for `python -m fastnn bench`, not for tests)."""
import contextlib

import numpy as np
import pytest

from fastnn.tools import bench


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(bench, "PAUSE", 0.0)


def test_compare_runs_every_contender_every_round_in_its_context():
    log, entered = [], []

    @contextlib.contextmanager
    def ctx():
        entered.append(1)
        yield

    res = bench.compare({"a": lambda: log.append("a"), "b": (lambda: log.append("b"), ctx)},
                        budget=0.01, rounds=5)
    assert set(res) == {"a", "b"}
    assert all(len(v) == 5 and all(t >= 0 for t in v) for v in res.values())
    assert log.count("a") >= 3 + 5 and log.count("b") >= 3 + 5   # 3 warm-up calls each
    assert len(entered) == 1 + 5                                # warm-up, then each round


def test_compare_rotates_the_order():
    order = []
    bench.compare({k: (lambda k=k: order.append(k)) for k in "xyz"}, budget=1e-9, rounds=3)
    rounds = order[9:]                                          # after the warm-ups
    # each sample: its untimed calls, then the timed ones
    assert rounds == [k for k in "xyz" + "yzx" + "zxy" for _ in range(2)]


def test_paired_takes_the_median_of_per_round_ratios():
    s = {"fast": [1.0, 2.0, 4.0], "slow": [3.0, 6.0, 100.0], "other": [1.0, 2.0, 4.0]}
    assert bench.paired(s, "slow", "fast") == 3.0                 # not 6.0 / 2.0 of medians
    assert bench.paired(s, "slow", ("fast", "other")) == 1.5
    assert bench.paired(s, "slow", "fast", q=100) == 25.0


def test_targets_report_the_spread_of_the_rounds():
    res = _result()
    res["cases"][0]["samples"]["torch"] = [4.0, 6.0, 8.0]
    t = next(t for t in bench.targets(res) if (t["case"], t["measure"]) == ("S", "vs torch"))
    assert (t["low"], t["value"], t["high"]) == (5.0, 6.0, 7.0)
    res["targets"] = bench.targets(res)
    assert "| S vs torch | >= 5.00 | 6.00 | 5.00 - 7.00 | yes |" in bench.table(res)


def _row(case, floor=None, **times):
    samples = {k: [v] * 3 for k, v in times.items()}
    row = {"case": case, "samples": samples, "gemm_gflop": 1.0, "floor": floor}
    row.update(times)
    return row


def _result():
    return {"fastnn": "0", "cpu": "cpu", "threads": 2, "date": "today",
            "sgemm_rates": {"openblas (scipy)": 1.0}, "copy_gbps": 1.0, "rounds": 3,
            "cases": [
                _row("S", **{"fastnn-cython": 1.0, "fastnn-numpy": 3.0, "torch": 6.0}),
                _row("M", **{"fastnn-cython": 1.0, "fastnn-numpy": 1.5, "torch": 2.0}),
                _row("L", floor=1.0, **{"fastnn-cython": 1.2, "gemm-only": 1.0,
                                        "adam-only": 0.1})],
            "memory": [{"case": "S", "ratio": 1.0, "step_allocations": 0},
                       {"case": "M", "ratio": 1.3, "step_allocations": 2}]}


def test_measures_and_targets():
    res = _result()
    m = bench.measures(res["cases"][2])
    assert m["step / floor"] == pytest.approx(1.2)
    assert m["step / GEMMs"] == pytest.approx(1.2)
    assert m["step / (GEMMs + Adam)"] == pytest.approx(1.2 / 1.1)
    assert m["GEMM GFLOP/s"] == pytest.approx(1.0)
    got = {(t["case"], t["measure"]): t["met"] for t in bench.targets(res)}
    assert got[("S", "vs torch")] is True and got[("S", "vs numpy")] is True
    assert got[("M", "vs torch")] is True and got[("M", "vs numpy")] is False
    assert got[("L", "step / floor")] is False                  # 1.2 > 1.15
    assert got[("L", "vs torch")] is None                       # no torch row: not measured
    assert got[("S", "step allocations")] is True and got[("S", "peak / need")] is True
    assert got[("M", "step allocations")] is False and got[("M", "peak / need")] is False
    assert set(got) >= {(c, w) for c, w, _, _ in bench.TARGETS}


def test_table_shows_times_ratios_and_targets():
    res = _result()
    res["targets"] = bench.targets(res)
    text = bench.table(res)
    assert "| S | 1.000 s | 3.000 s | 6.000 s |" in text
    assert "| S vs torch | >= 5.00 | 6.00 | - | yes |" in text
    assert "| M vs numpy | >= 2.00 | 1.50 | - | **no** |" in text
    assert "(peer not installed)" in text


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    bench.plot(_result(), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reference_callables_run():
    """The GEMM/GEMV/Adam references and the contenders build and run (tiny widths)."""
    widths = (8, 16, 4)
    for fn in (bench.gemm_only_fn(widths, 4), bench.gemv_only_fn(widths),
               bench.fastnn_step_fn(widths, 4, "numpy"), bench.fastnn_infer_fn(widths),
               bench.fastnn_epoch_fn(widths, 4, 2)):
        fn()
    assert bench.gemm_flops(widths, 4) == 2 * 4 * 8 * 16 * 2 + 2 * 4 * 16 * 4 * 3
    assert bench.param_count(widths) == 8 * 16 + 16 + 16 * 4 + 4 + 2 * 16
    assert np.isfinite(bench.median_time(lambda: None, 0.001))


def test_cli_rejects_bad_rounds(capsys):
    from fastnn.tools.cli import main
    with pytest.raises(SystemExit):
        main(["bench", "--rounds", "0"])
    assert "--rounds: must be an int >= 1" in capsys.readouterr().err


def test_remote_contenders_run_in_a_child_process_without_fastnn():
    """Remote contenders are built and timed in one child process that never imports
    fastnn (PyTorch runs there exactly as in a plain script)."""
    pytest.importorskip("torch")
    with bench.Remote() as remote:
        fn = remote.contender("torch_infer_fn", [8, 16, 4], 1)
        other = remote.contender("torch_step_fn", [8, 16, 4], 4, 1)
        assert remote.proc.pid != __import__("os").getpid()
        assert fn.timed(3) >= 0 and other.timed(1) >= 0
        info = remote.info()
        assert info["fastnn_loaded"] is False and info["threads"] == 1
        res = bench.compare({"remote": fn, "local": lambda: None}, budget=0.02, rounds=3)
        assert len(res["remote"]) == 3 and len(res["local"]) == 3
        assert bench.standalone(fn, sample=0.001, reps=2) > 0
        with pytest.raises(RuntimeError, match="child process failed"):
            remote.contender("torch_infer_fn", "not widths", 1)
        assert fn.timed(1) >= 0                          # the child survived the error
        with pytest.raises(ValueError, match="not a contender factory"):
            remote.contender("serve")
    assert remote.proc.poll() is not None


def test_standalone_is_the_minimum_of_back_to_back_repetitions(monkeypatch):
    totals = iter([0.0, 0.001, 0.04, 0.02, 0.03])   # warm-up, one call, 3 reps of 10 calls
    calls = []

    def timed(k):
        calls.append(k)
        return next(totals)
    monkeypatch.setattr(bench, "_timer", lambda fn: timed)
    assert bench.standalone(lambda: None, sample=0.01, reps=3) == pytest.approx(0.002)
    assert calls == [2, 1, 10, 10, 10]


def test_agreement_flags_a_contender_whose_loop_disagrees():
    row = _row("M", **{"fastnn-cython": 1.0, "torch": 12.7})
    row["standalone"] = {"fastnn-cython": 0.95, "torch": 1.07}
    row["load"] = [0.1, 3.2]
    got = {a["contender"]: a for a in bench.agreement(row)}
    assert got["fastnn-cython"]["ok"] and not got["torch"]["ok"]
    assert got["torch"]["ratio"] == pytest.approx(12.7 / 1.07)
    res = _result()
    res["cases"] = [row]
    text = bench.table(res)
    assert "| M torch | 12.700 s | 1.070 s | 11.87 | 0.10 -> 3.20 | **WARNING" in text
    assert "| M fastnn-cython | 1.000 s | 950.00 ms | 1.05 | 0.10 -> 3.20 | yes |" in text
    assert "Rerun on a quiet machine" in text


def test_step_floor_adds_the_gemms_at_the_best_rate_and_adams_bytes():
    widths, batch = (8, 16, 4), 4
    t = bench.step_floor(widths, batch, sgemm_gflops=2.0, threads=2, copy_gbps=3.0)
    assert t == pytest.approx(bench.gemm_flops(widths, batch) / 4e9
                              + 28 * bench.param_count(widths) / 3e9)


def test_header_names_the_cpu_the_blas_core_and_the_torch_runtime():
    res = _result()
    res.update(blas_core="SkylakeX", load=[0.5, 0.7], torch_runtime={
        "torch": "2.0", "threads": 2, "interop_threads": 2,
        "openmp": ["/x/torch/lib/libgomp.so.1"], "fastnn_loaded": False})
    text = "\n".join(bench.header(res))
    assert "cpu, OpenBLAS core SkylakeX, 2 threads" in text
    assert "load average 0.50 -> 0.70" in text
    assert "torch 2.0 in a child process, 2 threads, 2 inter-op threads, OpenMP libgomp.so.1" \
        in text and "not a plain torch" not in text


def test_plot_uses_a_log_axis_the_whiskers_do_not_stretch(tmp_path):
    pytest.importorskip("matplotlib")
    res = _result()
    res["cases"][0]["samples"]["torch"] = [6.0, 33.0, 287.0]   # a huge spread of rounds
    fig_holder = {}
    from fastnn.tools import plots
    orig = plots.save_figure

    def keep(fig, path, dpi=100):
        fig_holder["fig"] = fig
        return orig(fig, path, dpi)
    plots.save_figure = keep
    try:
        bench.plot(res, str(tmp_path / "b.png"))
    finally:
        plots.save_figure = orig
    ax = fig_holder["fig"].axes[0]
    assert ax.get_yscale() == "log"
    lo, hi = ax.get_ylim()
    assert hi <= 2 * 33.0 + 1e-9 and lo >= 1.0 / 2 - 1e-9     # medians and targets only
