"""The device suite's CPU mode: every figure its GPU run reports, every row written as measured,
hard per-section deadlines, sections that run alone, the compilation cache's hits reported."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "benchmarks", "device_suite.py")
# one worker runs the module: the later tests load the first one's programs from the cache
pytestmark = pytest.mark.xdist_group("device_suite")


def _load_suite():
    spec = importlib.util.spec_from_file_location("device_suite", SUITE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ds = _load_suite()


def run_suite(out, *flags, timeout=1200):
    """Run the CPU mode into `out` -> (result json, markdown, rows, wall seconds, stdout)."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, SUITE, "--cpu", f"--out={out}", "--tag=test", *flags],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    wall = time.time() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.load(open(out / "device_suite_test.json"))
    md = open(out / "device_suite_test.md").read()
    with open(out / "device_suite_test.rows.jsonl") as f:
        rows = [json.loads(line) for line in f]
    return res, md, rows, wall, proc.stdout


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # the session's cache (tests/conftest.py) when there is one, so other tests' programs may hit
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(tmp_path_factory.mktemp("xla-cache"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("suite")
    return run_suite(out, f"--workdir={out / 'e2e'}", f"--cache_dir={cache_dir}")


@pytest.mark.heavy
def test_cpu_mode_produces_every_figure(full_run):
    res, md, rows, wall, _ = full_run
    for key in ("jax", "jaxlib", "mujoco", "mujoco-mjx"):
        assert key in res["versions"] and res["versions"][key] in md
    assert res["machine"]["device"] and res["command"].startswith("python benchmarks/device_suite.py")

    # every row is in the JSONL, in section order, each tagged with its section
    sections = [r["section"] for r in rows if "kind" not in r]
    assert sections == sorted(sections, key=ds.SECTIONS.index) and set(sections) == set(ds.SECTIONS)

    (env_row,) = res["env"]
    assert env_row["task"] == "can" and env_row["impl"] == "jax" and env_row["batch"] == 4
    assert env_row["scan_steps"] == 25 and env_row["control_steps_per_s"] > 0
    assert env_row["physics_steps_per_s"] == pytest.approx(10 * env_row["control_steps_per_s"])
    assert env_row["ms_per_control_step"] == pytest.approx(4e3 / env_row["control_steps_per_s"])
    assert env_row["compile_reset_s"] > 0 and env_row["compile_scan_s"] > 0
    # the can rests on the table, the fingers may touch it: some of Can's 16 slots (its default
    # cap: 12 of condim 3, the pads' 4 of condim 4) are in use
    assert env_row["contact_slots_per_env"] == 16
    assert 1 <= env_row["mean_active_contacts_per_env"] <= env_row["peak_active_contacts_per_env"] < 16

    precisions = {r["precision"] for r in res["update"]}
    assert precisions == {"highest", "default"}
    for r in res["update"]:
        for part in ("actor", "critic", "update"):
            assert r[part]["ms_median"] > 0 and r[part]["compile_s"] > 0

    e = res["e2e"]
    assert e["command"].startswith("python experiments/train.py --config=configs/toy.py:quick --config.")
    assert "--time_budget_s=" in e["command"] and e["exit_code"] == 0 and "killed" not in e
    assert e["demos"]["seconds"] > 0 and 0 <= e["demos"]["expert_success"] <= 1
    assert e["bc"]["bc_steps"] > 0 and e["bc"]["bc_seconds"] > 0
    ft = e["finetune"]
    assert ft["env_steps"] >= 2_000 and ft["grad_steps"] > 0
    assert ft["median_env_steps_per_s"] > 0 and ft["median_updates_per_s"] > 0
    assert ft["compile_s"] > 0
    whats = [c["what"] for c in e["compiles"]]
    assert sum(w.startswith("training interval") for w in whats) == 1
    assert any(w.startswith("demo rollout") for w in whats) and any(w.startswith("BC training block") for w in whats)
    assert len(e["curve"]) >= 2 and all("ode" in p and "sde" in p for p in e["curve"])
    assert "final_success_ode" in e["summary"] and not e["summary"]["stopped_at_budget"]
    assert os.path.exists(e["log"]) and "[train] XLA compilation cache:" in open(e["log"]).read()

    # each section stayed within its time and reports its cache lookups
    for s in ("env", "update", "e2e"):
        run = res["section_runs"][s]
        assert run["ended"] == "done" and run["wall_s"] <= run["available_s"]
        assert res["cache"][s]["lookups"] > 0 and res["cache"][s]["children_reporting"] == 1
    assert wall < sum(res["budgets_s"].values()) + 30
    for heading in ("Env throughput (MJX", "OGPO update step", "End to end", "XLA cache lookups / hits",
                    "active contacts per env: peak (mean)"):
        assert heading in md


def test_a_section_past_its_deadline_leaves_a_row_and_the_next_runs_on_time(tmp_path, full_run, cache_dir):
    """The env section gets 1 s: its child is killed (it cannot even import JAX in that time) and
    the row says so; the e2e section starts at once, and with a reserve larger than its budget
    train.py's time budget cuts finetuning before its first interval, then evaluates."""
    e2e_s = 120
    res, md, rows, wall, out = run_suite(tmp_path, "--sections=env,e2e", "--env_s=1", f"--e2e_s={e2e_s}",
                                         "--e2e_reserve_s=10000", f"--workdir={tmp_path / 'e2e'}",
                                         f"--cache_dir={cache_dir}")
    (env_row,) = res["env"]
    assert env_row["batch"] == 4 and "killed at the section deadline (1 s) while starting" in env_row["killed"]
    assert "killed at the section deadline" in md
    assert res["section_runs"]["env"]["wall_s"] < 1 + ds.KILL_GRACE_S + 2
    assert "update" not in res

    e = res["e2e"]
    assert e["exit_code"] == 0 and "--time_budget_s=1.0" in e["command"]
    s = e["summary"]
    assert s["stopped_at_budget"] and s["env_steps"] < 2_000 and "final_success_ode" in s
    assert "cut by the time budget" in md
    # the e2e programs were compiled by the first run: loaded from the cache
    assert res["cache"]["e2e"]["hits"] > 0
    assert res["machine"]["device"]       # from the device probe: the env child never got that far
    assert wall < 1 + e2e_s + ds.KILL_GRACE_S + 30


def test_the_env_section_runs_alone_and_loads_its_programs_from_the_cache(tmp_path, full_run, cache_dir):
    res, md, rows, wall, out = run_suite(tmp_path, "--sections=env", f"--cache_dir={cache_dir}")
    (env_row,) = res["env"]
    assert env_row["control_steps_per_s"] > 0 and env_row["peak_active_contacts_per_env"] >= 1
    assert {r["section"] for r in rows} == {"env"} and "update" not in res and "e2e" not in res
    assert res["cache"]["env"]["hits"] >= 2            # the reset and scan programs of the first run
    assert "End to end" not in md and "OGPO update step" not in md


def test_rows_are_skipped_with_their_reason_when_the_prediction_exceeds_the_time_left():
    last = {"batch": 1024, "compile_s": 30.0, "run_s": 5.0, "seconds": 36.0}
    assert ds.predicted_cost(last, 4096) == pytest.approx(50.0)            # 30 + 5 x 4
    assert ds.predicted_cost(last, 1024) == pytest.approx(36.0)            # at least the last row's time
    assert ds.skip_reason(last, 4096, 60.0) is None
    why = ds.skip_reason(last, 4096, 40.0)
    assert "predicted 50 s" in why and "x batch ratio 4" in why and "40 s left" in why
    assert ds.skip_reason(None, 4096, 1.0) is None                         # nothing to predict from: try
    assert "deadline had passed" in ds.skip_reason(None, 4096, 0.0)


@pytest.mark.parametrize("flags, message", [
    (["--sections=env,gpu"], "--sections='env,gpu': unknown ['gpu']"),
    (["--sections="], "--sections=''"),
    (["--env_s=-5"], "--env_s=-5.0: must be > 0"),
    (["--e2e_s=0"], "--e2e_s=0.0: must be > 0"),
    (["--budget_s=-1"], "--budget_s=-1.0: must be > 0"),
    (["--batches=4,x"], "--batches='4,x'"),
    (["--env_tasks=lift"], "--env_tasks='lift'"),
    (["--impls=cuda"], "--impls='cuda'"),
    (["--env_repeats=0"], "--env_repeats=0: must be >= 1"),
])
def test_bad_flags_fail_naming_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        ds.main(["--cpu", *flags])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_budget_s_shares_a_total_in_proportion_to_the_defaults(tmp_path):
    _, plan = ds.parse_args(["--budget_s=240", "--update_s=40", f"--cache_dir={tmp_path}"])
    budgets = plan[1]
    assert budgets["update"] == 40
    assert budgets["env"] == pytest.approx(200 * 200 / 420) and budgets["e2e"] == pytest.approx(200 * 220 / 420)


def test_train_py_refuses_a_negative_time_budget(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "train.py"),
                           "--config=configs/toy.py:quick", f"--workdir={tmp_path}", "--time_budget_s=-1"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 1
    assert "ValueError: --time_budget_s=-1.0: must be >= 0 seconds" in proc.stderr
    assert not os.listdir(tmp_path)
