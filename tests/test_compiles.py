"""A run compiles each of its programs once: no recompiles between intervals, and the stages that
share shapes (BC's early stop, BC's final evaluation) share one evaluator program."""
from collections import Counter

from configs import toy
from ogpo_jax.training import pipeline


def _tiny(**train):
    c = toy.get_config("quick")
    c.demos.num_demos = 32
    c.bc.update(max_steps=500, eval_every=250, eval_episodes=16, stop_success=1.0)   # two early-stop evals
    c.train.update(num_envs=8, total_env_steps=1_500, start_training=128, eval_every_env_steps=500,
                   eval_episodes=16, log_every_iterations=4, checkpoint_every_env_steps=1_000,
                   updates_per_iteration=2, replay_capacity=2_048, success_capacity=1_024, **train)
    c.algo.update(actor_hidden_dims=(32, 32), critic_hidden_dims=(32, 32), num_critics=2, flow_steps=3,
                  batch_size=16, ppo_batch_size=8, group_size=4, success_batch_size=16)
    c.log.update(progress=False, tensorboard=False)
    return c


def test_each_program_compiles_once_per_run(tmp_path):
    lines = []
    summary = pipeline.run(_tiny(), str(tmp_path / "run"), log=lines.append)
    # >= 3 log intervals and >= 3 evaluations (two samplers each, three at the end) ran
    assert summary["env_steps"] >= 1_500
    assert sum(line.startswith("[eval]") for line in lines) >= 3
    assert summary["compiled_programs"] == {"training_interval": 1, "evaluator": 2}
    announced = Counter(c["what"] for c in summary["compiles"])
    assert all(n == 1 for n in announced.values()), announced
    kinds = Counter(w.split(" (")[0] for w in announced)
    assert kinds == {"demo reset": 1, "demo rollout": 1, "BC training block": 1, "evaluator": 2,
                     "training interval": 1}, kinds
    assert "evaluator (16 episodes; ode, sde)" in announced                      # BC: stop + final
    assert "evaluator (16 episodes; ode, sde, ode_current)" in announced         # finetune
    assert not any("compiled again" in line for line in lines)


def test_bc_with_its_own_episode_count_gets_its_own_evaluator(tmp_path):
    c = _tiny()
    c.bc.eval_episodes = 8
    summary = pipeline.run(c, str(tmp_path / "run"), log=lambda *_: None)
    # the finetune evaluator (16 episodes) compiled BC's final evaluation and the agent's samplers
    assert summary["compiled_programs"] == {"training_interval": 1, "evaluator": 2}
    whats = [c["what"] for c in summary["compiles"]]
    assert whats.count("evaluator (8 episodes; ode, sde)") == 1                  # BC's early stop
    assert whats.count("evaluator (16 episodes; ode, sde)") == 1                 # BC's final evaluation
    assert whats.count("evaluator (16 episodes; ode, sde, ode_current)") == 1
