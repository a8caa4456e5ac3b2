"""The seed-spread tools: experiments/seed_spread.py (a config's outcome over seeds) and
tests/measure_spread.py (the CI learning checks' bars against their spread)."""
import importlib.util
import json
import math
import os

import pytest

import measure_spread
from ogpo_jax.training.report import parse_seeds, spread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_seed_lists_parse_and_name_bad_values():
    assert parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds("2,5,9") == [2, 5, 9] and parse_seeds("7") == [7]
    for bad in ("3-1", "a-b", "1,x"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(SystemExit, match="--seeds='3-1'"):
        measure_spread.main(["--seeds=3-1", "--out=unused"])


def test_spread_by_hand():
    s = spread([0.6, 0.8, 1.0])
    assert s["mean"] == pytest.approx(0.8) and s["sd"] == pytest.approx(0.2) and s["n"] == 3
    assert s["mean_minus_3sd"] == pytest.approx(0.2) and (s["min"], s["max"]) == (0.6, 1.0)
    assert math.isnan(spread([0.5])["sd"])


def test_seed_spread_collects_the_runs_it_finds(tmp_path):
    """experiments/seed_spread.py's table from two finished runs' summaries and logs."""
    spec = importlib.util.spec_from_file_location("seed_spread", os.path.join(ROOT, "experiments", "seed_spread.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    from configs import toy
    from ogpo_jax.training.rundir import write_json
    config = toy.get_config("quick")
    config.train.eval_every_env_steps = 1000
    for seed, (bc, final, at_1k) in {0: (0.3, 0.8, 0.5), 1: (0.4, 0.6, 0.7)}.items():
        d = tmp_path / f"seed_{seed}"
        d.mkdir()
        write_json(str(d / "summary.json"), {
            "bc_success_ode": bc, "bc_success_sde": bc, "final_success_ode": final, "final_success_sde": final,
            "env_steps": 2000, "wall_seconds": 10.0, "config": config.to_dict()})
        with open(d / "metrics.jsonl", "w") as f:
            f.write(json.dumps({"env_steps": 1040, "eval/success_ode": at_1k}) + "\n")
            f.write(json.dumps({"env_steps": 1500, "critic/loss": 1.0}) + "\n")
    res = tool.collect(str(tmp_path), config, [0, 1, 2], bar=0.7)        # seed 2 has not run
    assert [r["seed"] for r in res["runs"]] == [0, 1]
    assert res["final_success_ode"]["mean"] == pytest.approx(0.7)
    assert res["gain_over_bc"]["min"] == pytest.approx(0.2)
    assert res["curve"]["1000"]["mean"] == pytest.approx(0.6) and res["runs_below_bar"] == 1
    assert "| final - BC | 2 | 0.350 | 0.212 | 0.200 | 0.500 |" in tool.markdown(res, "cmd")


def test_summary_counts_failing_seeds_and_the_margin_in_sds(monkeypatch):
    monkeypatch.setitem(measure_spread.CHECKS, "fake", ("test_critic", "countdown_errors", (),
                                                         {"err": ("<", "test_critic.COUNTDOWN_MAX_ERROR"),
                                                          "share": ("in", "test_diffusion.POS_SHARE")}))
    per_seed = {"0": {"err": 0.02, "share": 0.5}, "1": {"err": 0.04, "share": 0.6},
                "2": {"err": 0.12, "share": 0.4}}
    out = measure_spread.summarize("fake", per_seed)
    err = out["err"]
    assert err["bar"] == 0.1 and err["seeds_failing"] == 1
    assert err["margin_sd"] == pytest.approx((0.1 - 0.06) / 0.052915, rel=1e-4)
    share = out["share"]
    assert share["bar"] == (0.3, 0.7) and share["seeds_failing"] == 0
    assert share["margin_sd"] == pytest.approx(0.2 / 0.1)


def test_every_registered_check_names_a_measurement_and_bars_that_exist():
    """A renamed bar or measurement fails here, not in a 15-minute measuring run."""
    for name, (module, fn, _, bars) in measure_spread.CHECKS.items():
        assert callable(getattr(importlib.import_module(module), fn)), name
        for metric, (relation, ref) in bars.items():
            bar = measure_spread.bar_value(ref)
            assert relation in ("<", ">", "in"), (name, metric)
            assert isinstance(bar, tuple) if relation == "in" else isinstance(bar, float), (name, metric, bar)


def test_recorded_spread_covers_every_check_and_no_seed_fails_a_bar():
    """The committed measurements (docs/results/ci_spread/spread.json) are of the bars as they stand:
    every check measured over >= 10 seeds, none failing, every bar >= 3 sd from the mean."""
    import json
    results = json.load(open(os.path.join(measure_spread.OUT, "spread.json")))
    assert set(results["checks"]) == set(measure_spread.CHECKS)
    for name, entry in results["checks"].items():
        assert len(entry["per_seed"]) >= 10, name
        fresh = measure_spread.summarize(name, entry["per_seed"])      # today's bars on the recorded values
        for metric, s in fresh.items():
            assert s["seeds_failing"] == 0 and s["margin_sd"] >= 3.0, (name, metric, s)
