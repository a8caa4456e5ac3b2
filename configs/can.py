"""robomimic-style Can pick-and-place in MJX (ogpo_jax.envs.mjx.can.Can).

    python experiments/train.py --config=configs/can.py          # one GPU (H100 / H200 class)
    python experiments/train.py --config=configs/can.py:quick    # 2-core CPU

Pipeline: scripted demos -> clipped BC (stop at SDE success >= 0.45) -> OGPO finetune.

Both presets share one learning recipe, the settings with which OGPO improved on clipped BC on Can
(RESULTS.md: the weak-BC table that opens "Can (MJX)"): OGPO+ (group-mean
advantages plus a weak success-buffer BC term, lambda 0.1) with four critic TD steps per actor
step, 0.25 actor updates per env step, the critic alone for the first 1,500 updates, actor lr 1e-4
(floor 3e-5) after a 500-update warm-up, actor EMA tau 0.005, SDE rollouts, K = 5 denoising steps.
They differ in scale only. From the BC-10 actor (ODE 0.516), the quick preset's policy alone
reached 0.969 ODE success at 100k env steps (0.910 at 50k; 2 seeds x 128 episodes), 0.996 with
best-of-8 selection by its critics; with one critic step per actor step it had reached 0.914 at
100k env steps.

Departures from the paper's recipe, with their evidence (RESULTS.md):
  - four critic TD steps per actor step (`algo.critic_updates_per_update`; the paper: one per
    update): with one, the critic's ranking of chunks within a state decays while the policy
    improves (toy task: Spearman 0.62 -> -0.21 over 150k env steps); with four it holds
    (0.54-0.71) and the final rose on each of 4 toy seeds; on Can it is the difference above;
  - group-mean advantages (OGPO+), not conservative ones (OGPO-CA): from BC-10, OGPO+ ended at
    0.914 and OGPO-CA at 0.844 (100k env steps, one critic step, 2 seeds);
  - UTD 0.25, not 1: on Can 0.25 learned (32 updates per 128 env steps) and UTD 1 costs ~4x the
    update time; `grad_steps_per_env_step` is logged;
  - K = 5 instead of 10, lambda 0.1 instead of 1.0 (success-buffer BC at 1.0 lowered Can success),
    actor lr 1e-4 instead of 4.5e-5, 1,500 critic-only updates first;
  - SDE rollouts instead of Best-of-8 (Best-of-8 acting was slower and noisier on the toy task and
    is untested on Can);
  - GPU preset: 3x512 networks and 64 states x 16 chains instead of 4x512 and 256 x 32, for the
    per-update cost of one GPU at 75k updates; the toy study saw no sample-efficiency change from
    width or group size in that range.

GPU preset (the default): 300k env steps from 256 envs (1,024 env steps per iteration, 256
updates per iteration, so 0.25 grad steps per env step: 75k updates), 3x512 actor and 10 x 3x512
critics, 256-transition critic batches, 64 states x 16 chains per actor step, evaluation of both
samplers over 128 episodes every 50k env steps (the BC early stop uses the same 128 episodes, so
BC and finetuning share one evaluator program). It is derived from CPU-scale runs; its GPU wall
time and success are measured by `benchmarks/device_suite.py` (README, "On a GPU").

Its wall-clock arithmetic on one H200, from the one GPU table (benchmarks/results/
device_suite_h200.md, before the contact cap) and what it has not measured yet:
  demos 80 s + BC 99 s (measured)
  + updates: 75,000 x 3.75-8.2 ms = 281-615 s (fused update 3.75 ms with one critic step; this
    recipe's four cost up to 2.18 ms actor + 4 x 1.50 ms critic = 8.2 ms; not measured)
  + stepping: 300k env steps / 5,756 control steps/s (Can, 256 envs, 44.5 ms per control step:
    launch-bound) = 52 s
  + evaluations: 7 points x 2 samplers x at most 400 control steps x ~44.5 ms = up to 249 s
  + compiles: reset and step 26-28 s each, the finetune interval over 120 s (cut short there)
  = about 14-21 minutes, over the 10-minute target. The levers, in order of size: fewer env steps
  (the quick preset reached 0.969 at 100k), fewer evaluation points, the compilation cache on a
  rerun, more envs per step while it stays launch-bound. The next GPU call measures the missing
  terms (README, "On a GPU") before the preset changes.

`quick`: the same recipe at 2-core CPU scale: 32 envs, 32 updates per iteration (128 env steps),
2x256 networks, 32 states x 8 chains, 150k env steps, 64 evaluation episodes every 25k.
"""
from ml_collections import ConfigDict

from configs import base


def _recipe(c: ConfigDict) -> None:
    """The learning settings both presets share (see the module docstring)."""
    a = c.algo
    a.flow_steps = 5
    a.rollout_mode = "sde"
    a.bc_coeff = 0.1
    a.critic_warmup_updates = 1500
    a.actor_lr = 1e-4
    a.actor_lr_floor = 3e-5
    a.actor_lr_warmup = 500
    a.actor_tau = 0.005
    a.adv_strategy = "vanilla"
    a.critic_updates_per_update = 4
    c.bc.max_steps = 200_000
    c.bc.eval_every = 2_000
    c.bc.stop_success = 0.45


def get_config(preset: str = "") -> ConfigDict:
    c = base.get_config()
    c.env.name = "can"
    c.env.kwargs = base.mjx_arm_kwargs(max_steps=400)
    c.env.chunk_horizon = 4
    c.demos.num_demos = 200
    _recipe(c)
    a, t = c.algo, c.train

    if preset == "":
        a.actor_hidden_dims = (512, 512, 512)
        a.critic_hidden_dims = (512, 512, 512)
        a.batch_size = 256
        a.ppo_batch_size = 64
        a.group_size = 16
        a.success_batch_size = 256
        c.bc.eval_episodes = 128
        t.num_envs = 256
        t.updates_per_iteration = 256
        t.total_env_steps = 300_000
        t.start_training = 10_000
        t.log_every_iterations = 5
        t.replay_capacity = 1_000_000
        t.success_capacity = 200_000
        t.eval_every_env_steps = 50_000
        t.eval_episodes = 128
        t.checkpoint_every_env_steps = 100_000
        t.sized_for = "gpu"
    elif preset == "quick":
        a.actor_hidden_dims = (256, 256)
        a.critic_hidden_dims = (256, 256)
        a.batch_size = 64
        a.ppo_batch_size = 32
        a.group_size = 8
        a.success_batch_size = 64
        c.bc.eval_episodes = 64
        t.num_envs = 32
        t.updates_per_iteration = 32
        t.total_env_steps = 150_000
        t.start_training = 5_000
        t.log_every_iterations = 10
        t.replay_capacity = 200_000
        t.success_capacity = 100_000
        t.eval_every_env_steps = 25_000
        t.eval_episodes = 64
        t.checkpoint_every_env_steps = 25_000
        t.sized_for = "cpu"
    else:
        raise ValueError(f"unknown preset {preset!r} for configs/can.py; known: '' (one GPU), 'quick' (2-core CPU)")
    return c


def grad_steps_per_env_step(c: ConfigDict) -> float:
    """Updates per env step once training has started (every env acts one chunk per iteration)."""
    return c.train.updates_per_iteration / (c.train.num_envs * c.env.chunk_horizon)
