"""Method presets for `experiments/compare.py`: each is a set of `algo.*` overrides on top of a task
config (the paper's variants and ablations). Anything not overridden keeps the task's value, in particular the
success-buffer BC weight `bc_coeff` (lambda), so "+" methods use the task's lambda.

    python experiments/compare.py --config=configs/toy.py:quick --methods=ogpo,ogpo_plus,ogpo_ca
    python experiments/compare.py --config=configs/toy.py --methods=all --seeds=3
    python experiments/compare.py --config=configs/toy.py --methods=baselines --seeds=3

Names follow the paper's figures: OGPO = PPO over chains with group-mean advantages, no success
buffer; OGPO+ adds success-buffer BC; OGPO-CA (as in the paper's scripts) = OGPO+ with
conservative sign-consensus advantages.
"""
from __future__ import annotations

# ReinFlow robomimic-config defaults, shared by the reinflow presets below.
_REINFLOW = {"name": "reinflow", "rollout_mode": "sde", "reinflow_min_std": 0.08, "reinflow_max_std": 0.14,
             "entropy_coeff": 0.01, "clip_epsilon": 0.01, "ppo_epochs": 10, "rollout_iterations": 16,
             "ppo_minibatch_size": 128, "gae_lambda": 0.95, "actor_lr": 4.5e-5, "actor_lr_floor": 4.5e-5,
             "actor_lr_warmup": 0, "critic_lr": 5e-4}

METHODS = {
    # --- the OGPO family
    "ogpo": ("OGPO: vanilla group-mean advantages, no success buffer",
             {"adv_strategy": "vanilla", "bc_coeff": 0.0}),
    "ogpo_plus": ("OGPO+: + success-buffer flow-matching BC (task lambda)",
                  {"adv_strategy": "vanilla"}),
    # four critic TD steps per actor step: the critic audit's ranking held under them on the toy
    # task, where one step per update let it decay (RESULTS.md, "Does the critic rank chunks?")
    "ogpo_plus_critic4": ("OGPO+ with 4 critic TD steps per actor step",
                          {"adv_strategy": "vanilla", "critic_updates_per_update": 4}),
    "ogpo_ca_critic4": ("OGPO-CA with 4 critic TD steps per actor step",
                        {"adv_strategy": "conservative", "critic_updates_per_update": 4}),
    "ogpo_ca": ("OGPO-CA: OGPO+ with two-sided conservative (sign-consensus) advantages",
                {"adv_strategy": "conservative"}),
    "ogpo_ca_penultimate": ("OGPO-CA, penultimate variant (2nd-min / 2nd-max head)",
                            {"adv_strategy": "penultimate"}),
    "ogpo_nn": ("OGPO-NN: OGPO+ with advantages clipped at 0", {"adv_strategy": "vanilla", "nonneg_advantage": True}),
    "ogpo_ca_success_td": ("OGPO-CA + extra critic TD step on success batches",
                           {"adv_strategy": "conservative", "success_critic_td": True}),
    "ogpo_chi2": ("OGPO+ with chi-square regularization against a slow EMA reference",
                  {"adv_strategy": "vanilla", "chi2_enabled": True}),
    "ogpo_ca_q_vr": ("OGPO-CA + Q-variance reduction (mean over G'=8 next actions)",
                     {"adv_strategy": "conservative", "q_vr_num_samples": 8, "q_vr_reduction": "mean"}),
    "ogpo_ca_best_of_n": ("OGPO-CA acting with Best-of-8 chunks",
                          {"adv_strategy": "conservative", "rollout_mode": "best_of_n"}),
    # --- ablations
    "grpo_std": ("OGPO+ with GRPO-style std-normalized advantages",
                 {"adv_strategy": "vanilla", "adv_std_normalize": True}),
    "min_targets": ("OGPO-CA with pessimistic min-over-heads TD targets",
                    {"adv_strategy": "conservative", "target_aggregation": "min"}),
    "value_baseline": ("OGPO+ with a learned V(s) baseline instead of the group mean",
                       {"adv_strategy": "vanilla", "baseline": "value"}),
    "bptt": ("BPTT: maximise Q through the ODE sampler (no PPO), + success-buffer BC",
             {"extraction": "bptt"}),
    "awr_fm": ("AWR-FM: replay actions, flow matching weighted by exp(A/beta) (clip 20)",
               {"extraction": "awr_fm", "adv_strategy": "vanilla"}),
    "aw_ogpo": ("AW-OGPO: the G chains' actions, weighted flow matching",
                {"extraction": "aw_ogpo", "adv_strategy": "vanilla"}),
    "aw_ogpo_nn": ("AW-OGPO-NN: positive-advantage chains only",
                   {"extraction": "aw_ogpo", "adv_strategy": "vanilla", "nonneg_advantage": True}),
    "ofpo": ("OFPO: FPO++ ratio from CFM losses (16 MC samples) in the OGPO loop",
             {"extraction": "ofpo", "adv_strategy": "vanilla"}),
    "sb_only": ("success-buffer BC alone (no PPO term, no critic in the actor step)",
                {"ppo_coeff": 0.0}),
    # --- other algorithms (algorithms/base.py registry)
    "sb_bc": ("algorithm sb_bc: success-buffer BC alone, no critic at all (SDE rollouts)",
              {"name": "sb_bc", "rollout_mode": "sde"}),
    # --- baselines, each with its own code's defaults (module docstrings in ogpo_jax/algorithms/);
    # the task's networks, discount, batch sizes and updates per iteration are kept. Their codes
    # start online with a critic pretrained offline; here the critic starts fresh, so the base
    # policy acts alone for the first 1,000 updates while the critic (and FQL's one-step policy)
    # trains: a fresh critic's best-of-N choice took QC on point_gaps from BC's 0.44 to 0.13.
    "bc": ("BC: the initial policy, frozen (SDE rollouts)", {"name": "bc", "rollout_mode": "sde"}),
    "qc": ("QC: best-of-32 flow samples ranked by a 2-head chunked critic (mean), BC on replay",
           {"name": "qc", "critic_warmup_updates": 1000, "best_of_n": 32, "num_critics": 2, "target_aggregation": "mean", "critic_tau": 0.005,
            "rollout_mode": "ode", "base_bc_data": "replay"}),
    "qc_n8": ("QC with best-of-8 (the paper's N), otherwise as qc",
              {"name": "qc", "critic_warmup_updates": 1000, "best_of_n": 8, "num_critics": 2, "target_aggregation": "mean",
               "critic_tau": 0.005, "rollout_mode": "ode", "base_bc_data": "replay"}),
    "fql": ("FQL on chunks (QC-FQL): one-step policy, alpha 100, 2 heads (mean), flow BC on replay; "
            "1,000 distillation-only updates first",
            {"name": "fql", "fql_alpha": 100.0, "num_critics": 2, "target_aggregation": "mean", "critic_tau": 0.005,
             "rollout_mode": "ode", "base_bc_data": "replay", "critic_warmup_updates": 1000}),
    "expo": ("EXPO: 8 SDE base chunks + 8 Gaussian edits (scale 0.05), on-the-fly selection, min of 2 heads",
             {"name": "expo", "critic_warmup_updates": 1000, "best_of_n": 8, "edit_scale": 0.05, "num_critics": 2, "target_aggregation": "min",
              "critic_tau": 0.005, "rollout_mode": "sde", "base_bc_data": "replay"}),
    "dsrl": ("DSRL-NA: SAC over the frozen flow's initial noise (bound 1), min of 2 heads, target entropy 0",
             {"name": "dsrl", "critic_warmup_updates": 1000, "num_critics": 2, "target_aggregation": "min", "critic_tau": 0.005,
              "sac_target_entropy_scale": 0.0, "noise_action_bound": 1.0, "rollout_mode": "sde"}),
    "dsrl_best_of_n": ("DSRL-NA acting with the best of 8 noise-policy samples by Q(s, chunk)",
                       {"name": "dsrl", "critic_warmup_updates": 1000, "num_critics": 2, "target_aggregation": "min", "critic_tau": 0.005,
                        "sac_target_entropy_scale": 0.0, "noise_action_bound": 1.0, "rollout_mode": "best_of_n",
                        "best_of_n": 8}),
    # on-policy: one PPO phase per 16 iterations of every env (rollout), 10 epochs of minibatches
    "dppo": ("DPPO (flow): PPO per denoising step, sampler std 0.1, clip 0.001->0.01, 10 epochs, lr 1e-4",
             {"name": "dppo", "rollout_mode": "sde", "noise_std": 0.1, "noise_schedule": "constant",
              "clip_epsilon": 0.01, "dppo_clip_early": 0.001, "dppo_gamma_denoising": 0.99, "ppo_epochs": 10,
              "rollout_iterations": 16, "ppo_minibatch_size": 128, "gae_lambda": 0.95, "actor_lr": 1e-4,
              "actor_lr_floor": 1e-4, "actor_lr_warmup": 0, "critic_lr": 1e-3}),
    # ReinFlow finetunes few-step flows (its robomimic configs: K = 1-4): the BC velocity field
    # sampled with 4 Euler steps instead of the task's 10.
    "reinflow": ("ReinFlow: PPO over whole 4-step chains with a learned noise std in [0.08, 0.14], entropy 0.01",
                 dict(_REINFLOW, flow_steps=4)),
    "reinflow_k10": ("ReinFlow with the task's K denoising steps (as OGPO samples the same BC actor)",
                     dict(_REINFLOW)),
}

# Baselines of the paper's comparison, next to OGPO+ and OGPO-CA (`--methods=baselines`).
BASELINES = ("ogpo_plus", "ogpo_ca", "bc", "sb_bc", "qc", "fql", "expo", "dsrl", "dsrl_best_of_n", "dppo", "reinflow")

# The headline comparison on Can: OGPO, OGPO+, OGPO-CA, BPTT, GRPO-std, min targets.
HEADLINE = ("ogpo", "ogpo_plus", "ogpo_ca", "bptt", "grpo_std", "min_targets")


def resolve(names: str | list) -> list:
    """'a,b' | 'all' | 'headline' | list -> validated list of method names."""
    if isinstance(names, str):
        if names == "all":
            return list(METHODS)
        if names == "headline":
            return list(HEADLINE)
        if names == "baselines":
            return list(BASELINES)
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {unknown or names!r}; known: {sorted(METHODS)} (or 'all', 'headline', 'baselines')")
    return list(names)


# OGPO-only fields a task preset sets as part of its OGPO recipe: a method that runs another
# algorithm takes their defaults unless it sets them itself
_OGPO_ONLY = ("critic_updates_per_update",)


def apply(config, name: str):
    """A copy of `config` with method `name`'s algo overrides applied."""
    overrides = METHODS[name][1]
    c = config.copy_and_resolve_references()
    for k, v in overrides.items():
        if k not in c.algo:
            raise ValueError(f"method {name!r} overrides unknown algo key {k!r}")
        c.algo[k] = v
    if c.algo.name != "ogpo":
        from ogpo_jax.algorithms.config import OGPOConfig
        for k in _OGPO_ONLY:
            if k not in overrides:
                c.algo[k] = getattr(OGPOConfig(), k)
    return c
