"""The Can presets: the quantities their docstring states follow from the config, and a GPU preset
started on a CPU says so."""
import jax
import pytest

from configs import can
from ogpo_jax.training import memory, pipeline
from ogpo_jax.training.config import validate


@pytest.mark.parametrize("preset", ["", "quick"])
def test_can_presets_share_the_recipe_and_state_their_utd(preset):
    c = can.get_config(preset)
    validate(c)
    # the recipe that learned on Can: 0.25 grad steps per env step at either scale
    assert can.grad_steps_per_env_step(c) == pytest.approx(0.25)
    assert c.algo.bc_coeff == 0.1 and c.algo.critic_warmup_updates == 1500 and c.algo.actor_tau == 0.005
    assert c.algo.actor_lr == 1e-4 and c.algo.flow_steps == 5 and c.algo.rollout_mode == "sde"
    # OGPO+ with four critic steps per actor step (the weak-BC table in RESULTS.md)
    assert c.algo.adv_strategy == "vanilla" and c.algo.critic_updates_per_update == 4
    # BC's early stop and the finetune evaluations use one evaluator program
    assert c.bc.eval_episodes == c.train.eval_episodes
    assert c.env.kwargs.impl == "jax"


def test_gpu_preset_figures_match_its_docstring():
    c = can.get_config("")
    doc = can.__doc__
    updates = int(c.train.total_env_steps * can.grad_steps_per_env_step(c))
    assert updates == 75_000 and "75k updates" in doc
    assert c.train.num_envs * c.env.chunk_horizon == 1024 and "1,024 env steps per iteration" in doc
    assert c.train.total_env_steps == 300_000 and "300k env steps" in doc
    assert c.train.eval_episodes >= 128 and "128 episodes every 50k" in doc
    assert c.train.total_env_steps // c.train.eval_every_env_steps == 6
    assert f"{c.algo.ppo_batch_size} states x {c.algo.group_size} chains" in doc
    assert c.train.sized_for == "gpu" and can.get_config("quick").train.sized_for == "cpu"
    # the state fits a GPU with room to spare (replay sized to the run, not the paper's 2M)
    est = memory.estimate(c, 23, 7, c.env.kwargs.max_steps)
    assert est["total"] < 1.0 * 2**30
    assert c.train.replay_capacity >= c.train.total_env_steps


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the note is for CPU starts")
def test_gpu_preset_on_a_cpu_points_to_quick():
    lines = []
    msg = pipeline.warn_if_oversized(can.get_config(""), lines.append)
    assert msg is not None and lines == [msg]
    assert ":quick" in msg and "sized for one GPU" in msg and "75,000 updates" in msg
    assert pipeline.warn_if_oversized(can.get_config("quick"), lines.append) is None


def test_top_k_with_dense_advantages_gets_a_note_and_the_exact_setting_none():
    c = can.get_config("quick")
    assert pipeline.warn_if_top_k_inexact(c) is None              # top-k off
    c.algo.ppo_top_k, c.algo.adv_strategy = 4, "vanilla"
    lines = []
    msg = pipeline.warn_if_top_k_inexact(c, lines.append)
    assert lines == [msg] and "drops 4 of 8 chains" in msg and "'conservative'" in msg
    c.algo.adv_strategy = "conservative"
    assert pipeline.warn_if_top_k_inexact(c) is None


def test_every_method_runs_from_the_can_recipe():
    """The preset's OGPO-only settings (four critic steps per update) do not reach the baselines."""
    from configs import methods
    c = can.get_config("quick")
    c.algo.critic_updates_per_update = 4
    for name in methods.METHODS:
        m = methods.apply(c, name)
        validate(m)
        if m.algo.name != "ogpo":
            assert m.algo.critic_updates_per_update == 1, name
    assert methods.apply(c, "ogpo_plus").algo.critic_updates_per_update == 4
