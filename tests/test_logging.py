"""Run logging: metrics.jsonl, TensorBoard and Weights & Biases (offline: no network needed)."""
import glob
import json
import os

import pytest

from ogpo_jax.training import config as config_lib
from ogpo_jax.training import defaults, finetune
from ogpo_jax.training.logging import Logger


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_logger_writes_jsonl_and_an_offline_wandb_run_that_resumes(tmp_path):
    workdir = str(tmp_path / "seed0")
    settings = dict(project="ogpo-jax-test", mode="offline", name="toy/seed0", group="toy", config={"seed": 0})
    log = Logger(workdir, 100, tensorboard=False, progress=False, wandb=settings)
    run_id = log.wandb.id
    log.log(10, {"critic/loss": 1.5, "eval/success_ode": 0.25, "note": "text"})
    log.log(20, {"critic/loss": 1.25})
    # records of one step merge; a step is committed once a later one arrives (or at close)
    assert log.wandb.summary["critic/loss"] == 1.5 and log.wandb.summary["eval/success_ode"] == 0.25
    log.close()
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["env_steps"] for r in rows] == [10, 20] and rows[0]["note"] == "text"
    runs = glob.glob(os.path.join(workdir, "wandb", "offline-run-*"))
    assert runs and glob.glob(os.path.join(runs[0], "*.wandb"))
    again = Logger(workdir, 100, 20, tensorboard=False, progress=False, wandb=settings)   # a resumed run
    assert again.wandb.id == run_id
    again.close()


def test_wandb_settings_group_seeds_of_a_workdir(tmp_path):
    c = defaults.get_config()
    assert finetune._wandb_settings(c, str(tmp_path / "run"), 0) is None
    c.log.wandb, c.log.wandb_mode = True, "offline"
    s = finetune._wandb_settings(c, str(tmp_path / "run"), 3)
    assert s["group"] == "run" and s["name"] == "run/seed3" and s["mode"] == "offline"
    assert s["config"]["log"]["wandb"] is True


def test_bad_wandb_settings_are_named():
    c = defaults.get_config()
    c.log.wandb_mode = "sometimes"
    with pytest.raises(ValueError, match="log.wandb_mode"):
        config_lib.validate(c)
    c.log.wandb_mode, c.log.wandb, c.log.wandb_project = "offline", True, ""
    with pytest.raises(ValueError, match="log.wandb_project"):
        config_lib.validate(c)


def test_rate_line_reports_slow_stages_as_seconds_per_unit():
    from ogpo_jax.training import progress
    assert progress.rate_line(10, 100, 5.0, "steps") == "2 steps/s, ETA 45s"
    # one 50-step demo segment every 95 s: a rate of 0 segments/s would say nothing
    assert progress.rate_line(1, 14, 95.2, "segments") == "95.2 s per segment, ETA 20m38s"
