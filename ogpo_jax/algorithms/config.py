"""Algorithm configs: frozen, validated dataclasses, one per registered algorithm.

`AlgoConfig` holds what every algorithm reads (networks, the generative process, the critic, the
actor's optimizer, batches, acting); `OGPOConfig` adds OGPO's fields, and each baseline module
declares its own subclass (`qc.QCConfig`, `fql.FQLConfig`, ...), registered as
`Algorithm.config`, with its fields and their checks; `BaseFlowConfig`, `SACPolicyConfig` and
`OnPolicyConfig` are the parts several baselines share. A config is hashable, so it rides along as
static data in its algorithm's state (e.g. `ogpo.OGPOState`) and jit caches key on its values.
Build one from an `ml_collections.ConfigDict` (a run config's `algo` section, which holds every
algorithm's fields) with `AlgoConfig.from_dict`, which picks the class by `name` and rejects keys no
algorithm declares, by name. The continuous fields of `SWEEPABLE` can also ride in the state as data (`with_hyperparams`,
read through `swept`), so a vmapped sweep runs them as one program.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from ogpo_jax.algorithms import base
from ogpo_jax.algorithms.advantages import STRATEGIES as ADV_STRATEGIES
from ogpo_jax.gcp import POLICIES, DiffusionSpec, FlowSpec
from ogpo_jax.gcp.flow import NOISE_SCHEDULES

_FLOW = FlowSpec()          # the generative process's defaults are FlowSpec's
_DIFFUSION = DiffusionSpec()
BASELINES = ("group_mean", "value")
TARGET_AGGREGATIONS = ("mean", "min")
EXTRACTIONS = ("ppo", "bptt", "awr_fm", "aw_ogpo", "ofpo")
ACT_WITH = ("ema", "current")
ROLLOUT_MODES = ("ode", "sde", "best_of_n")
Q_VR_REDUCTIONS = ("mean", "median", "trimmed_mean")
BASE_BC_DATA = ("replay", "success", "none")


# Defaults of the fields that several algorithms declare (each class owns its fields, so a field two
# algorithms read is declared by both, with one default).
CLIP_EPSILON = 0.01
BC_COEFF = 1.0
POLICY_HIDDEN_DIMS = (256, 256)


@dataclasses.dataclass(frozen=True)
class AlgoConfig:
    """What every algorithm reads: networks, the generative process, the critic, the actor's
    optimizer, batches and acting. Each registered algorithm has a subclass holding its own fields
    and checks (`Algorithm.config`): `OGPOConfig` here, the baselines' in their modules. Build the
    right one from a mapping with `AlgoConfig.from_dict` (it dispatches on `name`)."""
    # registered algorithm that trains with this config (`algorithms/base.py`): 'ogpo', or a
    # baseline ('sb_bc', 'bc', 'qc', 'fql', 'expo', 'dsrl', 'dppo', 'reinflow')
    name: str = "ogpo"
    # --- networks
    actor_hidden_dims: tuple = (512, 512, 512, 512)
    time_emb_dim: int = 32
    critic_hidden_dims: tuple = (512, 512, 512, 512)
    num_critics: int = 10
    critic_layer_norm: bool = True
    # --- generative process (gcp/): 'flow' (flow matching, gcp/flow.py) or 'diffusion' (DDPM with
    # K-step DDIM/DDPM sampling, gcp/diffusion.py). For diffusion, `flow_steps` is the number of
    # sampling steps K, `noise_std` the floor of the stochastic sampler's step std (DPPO's
    # min_sampling_denoising_std), `clip_intermediate` clips the predicted clean chunk, and
    # `noise_schedule` / `score_correction` do not apply.
    policy: str = "flow"
    flow_steps: int = _FLOW.num_steps
    noise_std: float = _FLOW.noise_std
    noise_schedule: str = _FLOW.noise_schedule
    score_correction: bool = _FLOW.score_correction
    clip_intermediate: bool = _FLOW.clip_intermediate
    diffusion_train_steps: int = _DIFFUSION.train_steps   # T noise levels (a multiple of flow_steps)
    diffusion_eta: float = _DIFFUSION.eta                  # stochastic sampler: 1 = DDPM, 0 = DDIM
    sample_clip_stds: float = _FLOW.sample_clip_stds
    normalize_horizon: bool = _FLOW.normalize_horizon
    normalize_action_dim: bool = _FLOW.normalize_action_dim
    # --- critic (a chunked Q ensemble for the off-policy methods; the on-policy ones' value net
    # takes its widths and learning rate)
    discount: float = 0.99
    critic_tau: float = 0.05
    # The paper's code configures 3e-4 but its online optimizer reset uses the actor lr (4.5e-5)
    # for the critic too. We keep the configured value as the default.
    critic_lr: float = 3e-4
    critic_weight_decay: float = 1e-5
    batch_size: int = 256                 # critic TD batch (sequences of H steps)
    # Critic TD steps per update (OGPO only; 1 for every other algorithm): the loop samples
    # k x batch_size replay rows (and k x success_batch_size success rows) and the critic takes one
    # step on each slice of batch_size; the actor step uses the first slice. The paper takes one
    # critic step per env step, the `:quick` presets 0.25 actor and critic steps.
    critic_updates_per_update: int = 1
    # How the target heads are combined in the TD target: 'mean' (paper) or 'min' (pessimistic
    # ablation; "pessimistic initial Q-learning over-conservatizes").
    target_aggregation: str = "mean"
    # Not in the paper: the first N updates train only the critic (the actor and its EMA are left
    # unchanged), so the actor does not follow the advantages of a fresh critic. 0 = paper behaviour.
    critic_warmup_updates: int = 0
    # --- actor optimizer and its EMA
    actor_tau: float = 0.005
    success_batch_size: int = 256
    actor_lr: float = 4.5e-5
    actor_lr_floor: float = 2e-5
    actor_lr_warmup: int = 2000
    actor_lr_period: int = 50_000
    actor_weight_decay: float = 0.0
    grad_clip: float = 1000.0
    adam_eps: float = 1e-8
    # --- acting
    rollout_mode: str = "best_of_n"       # ode | sde | best_of_n  (data collection)
    best_of_n: int = 8                    # candidates of best-of-N acting (OGPO, QC, EXPO, DSRL)
    act_with: str = "ema"                 # which actor collects data: 'ema' (paper code) or 'current'

    def __post_init__(self):
        _check_types(self)
        _check(self, "name", self.name in base.names(), f"one of {list(base.names())}")
        owner = config_class(self.name)
        _check(self, "name", isinstance(self, owner),
               f"configured by {owner.__name__} (AlgoConfig.from_dict picks it), not by {type(self).__name__}")
        object.__setattr__(self, "actor_hidden_dims", tuple(int(w) for w in self.actor_hidden_dims))
        object.__setattr__(self, "critic_hidden_dims", tuple(int(w) for w in self.critic_hidden_dims))
        _check(self, "actor_hidden_dims", len(self.actor_hidden_dims) >= 1 and min(self.actor_hidden_dims) >= 1,
               "a non-empty sequence of positive widths")
        _check(self, "critic_hidden_dims", len(self.critic_hidden_dims) >= 1 and min(self.critic_hidden_dims) >= 1,
               "a non-empty sequence of positive widths")
        _check(self, "time_emb_dim", self.time_emb_dim >= 2 and self.time_emb_dim % 2 == 0, "an even integer >= 2")
        _check(self, "num_critics", self.num_critics >= 1, ">= 1")
        _check(self, "policy", self.policy in POLICIES, f"one of {POLICIES}")
        _check(self, "flow_steps", self.flow_steps >= 1, ">= 1")
        if self.policy == "diffusion":
            _check(self, "diffusion_train_steps",
                   self.diffusion_train_steps >= self.flow_steps and self.diffusion_train_steps % self.flow_steps == 0,
                   f"a multiple of flow_steps={self.flow_steps} (DDIM sampling uses every T/K-th noise level)")
            _check(self, "diffusion_eta", self.diffusion_eta >= 0, ">= 0")
        _check(self, "noise_std", self.noise_std > 0, "> 0 (chain log-probs need noise)")
        _check(self, "noise_schedule", self.noise_schedule in NOISE_SCHEDULES, f"one of {NOISE_SCHEDULES}")
        _check(self, "sample_clip_stds", self.sample_clip_stds >= 0, ">= 0")
        _check(self, "discount", 0.0 <= self.discount <= 1.0, "in [0, 1]")
        for name in ("critic_tau", "actor_tau"):
            _check(self, name, 0.0 < getattr(self, name) <= 1.0, "in (0, 1]")
        for name in ("critic_lr", "actor_lr", "grad_clip", "adam_eps"):
            _check(self, name, getattr(self, name) > 0 and math.isfinite(getattr(self, name)), "> 0 and finite")
        _check(self, "actor_lr_floor", 0 <= self.actor_lr_floor <= self.actor_lr, "in [0, actor_lr]")
        _check(self, "actor_lr_warmup", self.actor_lr_warmup >= 0, ">= 0")
        _check(self, "actor_lr_period", self.actor_lr_period > self.actor_lr_warmup, "> actor_lr_warmup")
        for name in ("critic_weight_decay", "actor_weight_decay"):
            _check(self, name, getattr(self, name) >= 0, ">= 0")
        for name in ("batch_size", "success_batch_size"):
            _check(self, name, getattr(self, name) >= 1, ">= 1")
        _check(self, "act_with", self.act_with in ACT_WITH, f"one of {ACT_WITH}")
        _check(self, "rollout_mode", self.rollout_mode in ROLLOUT_MODES, f"one of {ROLLOUT_MODES}")
        _check(self, "best_of_n", self.best_of_n >= 1, ">= 1")
        _check(self, "critic_updates_per_update", self.critic_updates_per_update >= 1, ">= 1")
        _check(self, "critic_updates_per_update", self.critic_updates_per_update == 1 or self.name == "ogpo",
               f"1 for algo.name={self.name!r} (only OGPO takes several critic steps per update)")
        _check(self, "critic_warmup_updates", self.critic_warmup_updates >= 0, ">= 0")
        _check(self, "target_aggregation", self.target_aggregation in TARGET_AGGREGATIONS,
               f"one of {TARGET_AGGREGATIONS}")

    @property
    def gcp_spec(self) -> FlowSpec | DiffusionSpec:
        """The generative policy's static spec: `FlowSpec` or `DiffusionSpec` (per `policy`)."""
        if self.policy == "diffusion":
            return DiffusionSpec(
                num_steps=self.flow_steps, train_steps=self.diffusion_train_steps, eta=self.diffusion_eta,
                min_std=self.noise_std, clip_denoised=self.clip_intermediate,
                sample_clip_stds=self.sample_clip_stds, normalize_horizon=self.normalize_horizon,
                normalize_action_dim=self.normalize_action_dim)
        return FlowSpec(
            num_steps=self.flow_steps, noise_std=self.noise_std, noise_schedule=self.noise_schedule,
            score_correction=self.score_correction, clip_intermediate=self.clip_intermediate,
            sample_clip_stds=self.sample_clip_stds, normalize_horizon=self.normalize_horizon,
            normalize_action_dim=self.normalize_action_dim)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, **overrides) -> "AlgoConfig":
        """The config of the algorithm `values['name']` (default 'ogpo') from a mapping such as a run
        config's `algo` section, which holds every algorithm's fields: the keys that algorithm's
        class declares are taken, the other algorithms' keys are ignored, and a key no algorithm
        declares is an error naming it."""
        values = dict(values.items() if values is not None else {})
        values.update(overrides)
        known = all_field_names()
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown algo config key(s) {unknown}; known keys: {sorted(known)}")
        target = config_class(values.get("name", "ogpo"))
        own = {f.name for f in dataclasses.fields(target)}
        return target(**{k: v for k, v in values.items() if k in own})


@dataclasses.dataclass(frozen=True)
class BaseFlowConfig(AlgoConfig):
    """Methods whose base flow policy keeps imitating online (QC, FQL, EXPO)."""
    # What the base flow keeps imitating: 'replay' (the whole buffer, as their codes do with
    # theirs), 'success' (the success buffer) or 'none' (frozen).
    base_bc_data: str = "replay"

    def __post_init__(self):
        super().__post_init__()
        _check(self, "base_bc_data", self.base_bc_data in BASE_BC_DATA, f"one of {BASE_BC_DATA}")


@dataclasses.dataclass(frozen=True)
class SACPolicyConfig(AlgoConfig):
    """Methods with a tanh-Gaussian policy trained by SAC: DSRL's noise policy, EXPO's edit policy."""
    policy_hidden_dims: tuple = POLICY_HIDDEN_DIMS
    policy_lr: float = 3e-4               # their optimizer (and the SAC temperature's)
    sac_init_temperature: float = 1.0
    sac_target_entropy_scale: float = 0.5  # SAC target entropy = -scale * policy action dim

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "policy_hidden_dims", tuple(int(w) for w in self.policy_hidden_dims))
        _check(self, "policy_hidden_dims", len(self.policy_hidden_dims) >= 1 and min(self.policy_hidden_dims) >= 1,
               "a non-empty sequence of positive widths")
        for name in ("policy_lr", "sac_init_temperature"):
            _check(self, name, getattr(self, name) > 0 and math.isfinite(getattr(self, name)), "> 0 and finite")
        _check(self, "sac_target_entropy_scale", math.isfinite(self.sac_target_entropy_scale), "finite")


@dataclasses.dataclass(frozen=True)
class OnPolicyConfig(AlgoConfig):
    """On-policy PPO baselines (DPPO, ReinFlow): a value net V(s) (critic widths, critic_lr), GAE
    over chunk steps, `ppo_epochs` passes of minibatches over each rollout of all envs."""
    rollout_iterations: int = 8           # iterations (every env acts one chunk) per rollout
    ppo_epochs: int = 10
    ppo_minibatch_size: int = 256         # chunk samples per minibatch
    gae_lambda: float = 0.95
    clip_epsilon: float = CLIP_EPSILON

    def __post_init__(self):
        super().__post_init__()
        for name in ("rollout_iterations", "ppo_epochs", "ppo_minibatch_size"):
            _check(self, name, getattr(self, name) >= 1, ">= 1")
        _check(self, "gae_lambda", 0.0 <= self.gae_lambda <= 1.0, "in [0, 1]")
        _check(self, "clip_epsilon", self.clip_epsilon > 0 and math.isfinite(self.clip_epsilon), "> 0 and finite")


@dataclasses.dataclass(frozen=True)
class OGPOConfig(AlgoConfig):
    """OGPO's config: the shared fields plus the critic's stabilizers, the advantage, the policy
    extraction over the denoising chain, success-buffer BC, chi-square and best-of-N heads."""
    # --- critic
    success_critic_td: bool = False       # extra TD step on a success-buffer batch
    q_vr_num_samples: int = 1             # G' next-action samples for the TD target (1 = off)
    q_vr_reduction: str = "mean"          # mean | median | trimmed_mean over the G' samples
    # --- actor (PPO over the denoising chain)
    ppo_batch_size: int = 256             # states per actor step (first rows of the TD batch)
    group_size: int = 32                  # G chains per state
    adv_strategy: str = "conservative"    # vanilla | conservative (two-sided CA) | penultimate
    nonneg_advantage: bool = False        # OGPO-NN: clip advantages at 0 (AW-*: positive-only weights)
    adv_std_normalize: bool = False       # GRPO-style ablation: divide by the group std of Q
    # Baseline of the advantage: 'group_mean' (OGPO) or 'value', a learned V(s) regressed onto the
    # group-mean Q of the EMA actor's chains (ablation; same critic lr and widths as the critic).
    baseline: str = "group_mean"
    # Policy-extraction objective (the paper's extraction ablation):
    #   ppo      clipped PPO over the whole denoising chain (OGPO)
    #   bptt     maximise mean_heads Q(s, ODE sample of the current actor), backprop through the chain
    #   awr_fm   flow matching on replay actions weighted by exp(A / awr_beta), A = Q(s, a) - group mean
    #   aw_ogpo  flow matching on the G sampled chains' actions weighted by exp(A / awr_beta)
    #   ofpo     FPO-style ratio exp(L_cfm_old - L_cfm_new) per Monte-Carlo sample, clipped (FPO++)
    extraction: str = "ppo"
    awr_beta: float = 1.0                 # temperature of exp(A / beta); not given by the paper
    awr_max_weight: float = 20.0
    ofpo_mc_samples: int = 16             # (t, x0) samples per action for the CFM-loss ratio
    clip_epsilon: float = CLIP_EPSILON
    # Cheaper PPO steps. ppo_top_k = k > 0: the surrogate runs over only the k chains of each group
    # with the largest |advantage| (the others' terms are kept at zero), exact whenever a group has
    # <= k nonzero advantages (conservative advantages zero most chains). ft_flow_steps = k > 0
    # (flow policies): the ratio uses only the last k denoising steps' log-probs, so backprop runs
    # through k of the K steps and the earlier steps are held fixed (the official code's option).
    ppo_top_k: int = 0
    ft_flow_steps: int = 0
    bc_coeff: float = BC_COEFF            # lambda of success-buffer flow-matching BC (OGPO+)
    # Weight of the PPO term. 0 = ablation "success-buffer BC only" (filtered self-imitation, no
    # chains sampled, no critic in the actor step); the paper always uses 1.
    ppo_coeff: float = 1.0
    best_of_n_heads: int = 2              # critic heads that rank best-of-N candidates
    # --- chi-square regularization against a slow EMA reference actor
    chi2_enabled: bool = False
    chi2_beta_base: float = 0.1
    chi2_tau_slow: float = 5e-4           # Polyak rate of the slow reference (starts at the BC actor)
    chi2_alpha: float = 5.0               # sharpness of the mean/min blend weight sigmoid(alpha (r - 1))
    chi2_r_max: float = 100.0             # PPO upper clip min(1 + eps, 1 + r_max / beta)
    chi2_q_std_target: float = 1.0        # beta = beta_base * ensemble std / q_std_target

    def __new__(cls, *args, **kwargs):
        # Deprecated since 0.2.0: OGPOConfig(name=<baseline>, ...) builds that baseline's config.
        if cls is OGPOConfig and not args and kwargs.get("name", "ogpo") != "ogpo":
            warnings.warn(f"OGPOConfig(name={kwargs['name']!r}, ...) is deprecated since ogpo-jax 0.2.0 and "
                          f"is removed in 0.3.0: each algorithm has its own config class; use "
                          f"AlgoConfig.from_dict({{'name': {kwargs['name']!r}, ...}}) or "
                          f"config_class({kwargs['name']!r})(...)", DeprecationWarning, stacklevel=2)
            return AlgoConfig.from_dict(kwargs)
        return super().__new__(cls)

    def __post_init__(self):
        super().__post_init__()
        if self.policy == "diffusion":
            _check(self, "extraction", self.extraction != "ofpo",
                   "not 'ofpo' with policy='diffusion' (its ratio is of flow-matching losses)")
        _check(self, "chi2_tau_slow", 0.0 < self.chi2_tau_slow <= 1.0, "in (0, 1]")
        _check(self, "clip_epsilon", self.clip_epsilon > 0 and math.isfinite(self.clip_epsilon), "> 0 and finite")
        for name in ("bc_coeff", "ppo_coeff"):
            _check(self, name, getattr(self, name) >= 0, ">= 0")
        _check(self, "ppo_batch_size", self.ppo_batch_size >= 1, ">= 1")
        _check(self, "ppo_batch_size", self.ppo_batch_size <= self.batch_size,
               f"<= batch_size ({self.batch_size}): actor states are the first rows of the TD batch")
        _check(self, "ppo_coeff", self.ppo_coeff > 0 or self.bc_coeff > 0,
               "> 0 when bc_coeff is 0 (the actor would have no loss)")
        _check(self, "group_size", self.group_size >= 2, ">= 2 (the baseline is a group mean)")
        _check(self, "adv_strategy", self.adv_strategy in ADV_STRATEGIES, f"one of {ADV_STRATEGIES}")
        _check(self, "best_of_n_heads", 1 <= self.best_of_n_heads <= self.num_critics,
               f"in [1, num_critics={self.num_critics}]")
        _check(self, "q_vr_num_samples", self.q_vr_num_samples >= 1, ">= 1")
        _check(self, "q_vr_reduction", self.q_vr_reduction in Q_VR_REDUCTIONS, f"one of {Q_VR_REDUCTIONS}")
        _check(self, "baseline", self.baseline in BASELINES, f"one of {BASELINES}")
        _check(self, "extraction", self.extraction in EXTRACTIONS, f"one of {EXTRACTIONS}")
        for name in ("awr_beta", "awr_max_weight", "chi2_beta_base", "chi2_alpha", "chi2_r_max",
                     "chi2_q_std_target"):
            _check(self, name, getattr(self, name) > 0 and math.isfinite(getattr(self, name)), "> 0 and finite")
        _check(self, "ofpo_mc_samples", self.ofpo_mc_samples >= 1, ">= 1")
        _check(self, "ppo_top_k", 0 <= self.ppo_top_k <= self.group_size, f"in [0, group_size={self.group_size}]")
        _check(self, "ft_flow_steps", 0 <= self.ft_flow_steps <= self.flow_steps, f"in [0, flow_steps={self.flow_steps}]")
        if 0 < self.ft_flow_steps < self.flow_steps:
            _check(self, "ft_flow_steps", self.policy == "flow" and self.extraction == "ppo" and not self.chi2_enabled,
                   "0 or flow_steps unless policy='flow', extraction='ppo' and chi2_enabled False")
        if self.adv_strategy == "penultimate":
            _check(self, "num_critics", self.num_critics >= 2, ">= 2 for adv_strategy='penultimate'")
        if self.chi2_enabled:
            # the chi-square advantage replaces the per-head strategy and the baseline
            _check(self, "adv_strategy", self.adv_strategy == "vanilla",
                   "'vanilla' when chi2_enabled (the chi-square advantage blends mean/min heads itself)")
            _check(self, "baseline", self.baseline == "group_mean", "'group_mean' when chi2_enabled")
            _check(self, "extraction", self.extraction == "ppo", "'ppo' when chi2_enabled")

    def __getattr__(self, name):
        # Deprecated since 0.2.0: the baselines' fields were OGPOConfig's; reading one gives its default.
        if name in _baseline_only_defaults():
            warnings.warn(f"OGPOConfig.{name} is deprecated since ogpo-jax 0.2.0 and is removed in 0.3.0: it "
                          f"belongs to a baseline's config ({_baseline_only_defaults()[name][1]}) and does "
                          "nothing for OGPO", DeprecationWarning, stacklevel=2)
            return _baseline_only_defaults()[name][0]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def flow_spec(self) -> FlowSpec | DiffusionSpec:
        """Deprecated alias of `gcp_spec` (renamed in 0.2.0 when diffusion policies arrived; removed
        in 0.3.0)."""
        warnings.warn("OGPOConfig.flow_spec is deprecated since ogpo-jax 0.2.0 and is removed in 0.3.0: "
                      "use OGPOConfig.gcp_spec", DeprecationWarning, stacklevel=2)
        return self.gcp_spec


_OGPO_INIT = OGPOConfig.__init__


def _ogpo_init(self, *args, **kwargs):
    """OGPOConfig's generated __init__, taking (and ignoring, with a DeprecationWarning) the
    baselines' fields that OGPOConfig held before 0.2.0."""
    moved = sorted(k for k in kwargs if k in _baseline_only_defaults())
    if moved:
        warnings.warn(f"OGPOConfig({', '.join(moved)}=...) is deprecated since ogpo-jax 0.2.0 and is removed in "
                      "0.3.0: those fields belong to the baselines' configs and do nothing for OGPO",
                      DeprecationWarning, stacklevel=2)
        kwargs = {k: v for k, v in kwargs.items() if k not in moved}
    _OGPO_INIT(self, *args, **kwargs)


OGPOConfig.__init__ = _ogpo_init


def config_class(name: str) -> type:
    """The config class of the registered algorithm `name` (`Algorithm.config`)."""
    algo = base.get(name)
    return algo.config or AlgoConfig


def config_classes() -> dict:
    """{algorithm name: its config class} for every registered algorithm."""
    return {n: config_class(n) for n in base.names()}


def all_field_names() -> set:
    return {f.name for c in config_classes().values() for f in dataclasses.fields(c)}


def all_defaults() -> dict:
    """{field: default} over every algorithm's config: the run config's `algo` section. A field
    that several classes declare has one default (checked)."""
    out = {}
    for name, c in config_classes().items():
        for k, v in dataclasses.asdict(c()).items():
            if k == "name":
                continue
            if k in out and out[k] != v:
                raise AssertionError(f"algo.{k} has the default {out[k]!r} in one config class and {v!r} in "
                                     f"{c.__name__}: a shared field needs one default")
            out[k] = v
    return {"name": "ogpo", **out}


def _baseline_only_defaults() -> dict:
    """{field: (default, owning classes)} of the fields no longer on OGPOConfig (deprecated reads)."""
    global _MOVED
    if _MOVED is None:
        ogpo_fields = {f.name for f in dataclasses.fields(OGPOConfig)}
        moved = {}
        for name, c in config_classes().items():
            for f in dataclasses.fields(c):
                if f.name not in ogpo_fields:
                    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                    owners = moved.get(f.name, (default, ""))[1]
                    moved[f.name] = (default, ", ".join(x for x in (owners, c.__name__) if x))
        _MOVED = moved
    return _MOVED


_MOVED = None


def _check_types(cfg) -> None:
    """Every field holds a value of its default's type (an int where a float is declared becomes a
    float, a sequence of widths a tuple of ints; floats must be finite), or a ValueError names it:
    a wrong type would otherwise fail later as a TypeError deep inside a network or schedule."""
    for f in dataclasses.fields(cfg):
        default = f.default if f.default is not dataclasses.MISSING else None
        value = getattr(cfg, f.name)
        is_bool = isinstance(value, (bool, np.bool_))
        if isinstance(default, bool):
            ok, value = is_bool, bool(value) if is_bool else value
            requirement = "True or False"
        elif isinstance(default, int):
            ok = isinstance(value, (int, np.integer)) and not is_bool
            value, requirement = int(value) if ok else value, "an integer"
        elif isinstance(default, float):
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not is_bool and math.isfinite(value)
            value, requirement = float(value) if ok else value, "a finite number"
        elif isinstance(default, str):
            ok, requirement = isinstance(value, str), "a string"
        elif isinstance(default, tuple):
            ok = (isinstance(value, (tuple, list)) and
                  all(isinstance(w, (int, np.integer)) and not isinstance(w, (bool, np.bool_)) for w in value))
            value, requirement = tuple(int(w) for w in value) if ok else value, "a sequence of integer widths"
        else:
            continue
        _check(cfg, f.name, ok, requirement)
        object.__setattr__(cfg, f.name, value)


def check_field(cfg, name, ok, requirement):
    """A config check: ValueError naming `algo.<name>`, the requirement and the value, unless `ok`."""
    if not ok:
        raise ValueError(f"algo.{name} must be {requirement}, got {getattr(cfg, name)!r}")


_check = check_field


# ----------------------------------------------------------------------------- sweeps

# Continuous hyperparameters a state can carry as data (arrays), so that S members with different
# values run as one vmapped program (`compare.py --sweep`), the way seeds do.
SWEEPABLE = ("actor_tau", "critic_tau", "clip_epsilon", "bc_coeff", "actor_lr", "critic_lr")


class _SweptConfig:
    """`config` with some continuous fields replaced by (traced) arrays; read-only."""

    def __init__(self, config: OGPOConfig, values: dict):
        self._config, self._values = config, values

    def __getattr__(self, name):
        values = self.__dict__["_values"]
        return values[name] if name in values else getattr(self.__dict__["_config"], name)


def swept(state):
    """The hyperparameters an update uses: `state.config`, with the values of a sweep member
    (`state.hparams`, arrays) in place of the config's. Branches on a field (e.g. `bc_coeff > 0`)
    read `state.config`, the static base value shared by every member."""
    values = getattr(state, "hparams", None)
    return state.config if not values else _SweptConfig(state.config, values)


def with_hyperparams(state, values: dict):
    """`state` carrying `values` ({field: float}, fields of SWEEPABLE) as data, read by `swept`."""
    if not hasattr(state, "hparams"):
        raise ValueError(f"{type(state).__name__} has no hparams field: its algorithm cannot be swept")
    own = {f.name for f in dataclasses.fields(state.config)}
    for name, value in values.items():
        if name not in SWEEPABLE:
            raise ValueError(f"algo.{name} cannot be swept as data; sweepable fields: {SWEEPABLE}")
        if name not in own:
            raise ValueError(f"algo.{name} is not a field of algo.name={state.config.name!r} "
                             f"({type(state.config).__name__}): sweeping it would change nothing")
        dataclasses.replace(state.config, **{name: float(value)})      # range checks by field name
    return state.replace(hparams={k: jnp.asarray(v, jnp.float32) for k, v in values.items()})
