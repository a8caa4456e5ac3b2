"""Critic audit: does the critic rank a policy's chunks the way their Monte-Carlo returns do?

OGPO's actor update only uses the critic's *ranking* of the G chunks drawn for one state (the group
advantage), so the audit asks exactly that, against ground truth from the simulator:

1. `record_states`: roll the policy out from fresh episodes and keep the full simulator state at
   every chunk boundary; `pick_states` draws N decision states from them, stratified by phase
   (`phases`: for the arm tasks before the grasp / carrying / at the target, else thirds of the
   episode).
2. `candidate_chunks`: G chunks per decision state from the policy's stochastic (SDE) sampler, the
   distribution the actor's group is drawn from; `critic_q` values them with every critic head.
3. `mc_returns`: branch each decision state N x G x M times (states are pytrees: a copy is an
   index), execute the candidate chunk, then follow the policy (SDE) until the episode ends, and
   sum the discounted rewards: M Monte-Carlo returns per (state, chunk), all in one batch.
4. `audit_metrics` (numpy): per head, for the head mean and for the advantage the algorithm uses
   (e.g. conservative sign consensus): Q-vs-MC calibration (bias, RMSE, Pearson r over all pairs),
   the within-state Spearman correlation of the chunk ranking, the sign agreement of the group
   advantage with the MC advantage (over all chunks, and over those whose MC advantage is more
   than two standard errors from zero), and the MC advantage spread itself: where the chunks of one
   state barely differ in return, no critic can rank them.
5. `score_critics`: the figures for other critics from a finished audit's stored states,
   candidates and returns, without new rollouts, when their actor is the same (`actor_fingerprint`).

The continuation policy is the one the critic's TD target evaluates (the EMA actor's SDE sampler
for OGPO), so a perfect critic's Q equals the MC mean. MC returns stop where the episode ends; on a
task whose time limit is not terminal (the critic bootstraps there) a state close to the limit has
a Q that includes reward beyond it, which shifts calibration but cancels in the within-state
ranking.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ogpo_jax.algorithms import advantages as adv_lib
from ogpo_jax.algorithms import critic as critic_lib
from ogpo_jax.algorithms.actor import sample_actions
from ogpo_jax.envs import core as env_core
from ogpo_jax.envs.core import batch_env

PHASES_ARM = ("reach", "carry", "place")
PHASES_TIME = ("early", "middle", "late")


# ----------------------------------------------------------------------------- decision states

def record_states(env, horizon: int, episode_length: int, policy, params, key, num_envs: int):
    """Roll `policy(params, obs, key) -> chunks` out from `num_envs` fresh episodes (chunked, no
    auto-reset) and keep the state before every chunk. -> dict of arrays with leading (C, E) axes:
    `states` (EnvState pytree), `obs`, `alive` (the episode is still running at that boundary),
    `chunk` (chunk index since the reset). C = ceil(episode_length / horizon)."""
    chunked = batch_env(env, num_envs, horizon, auto_reset=False)     # a camera task observes per chunk
    num_chunks = -(-episode_length // horizon)
    k_reset, k_act = jax.random.split(key)

    def run(params, k_reset, k_act):
        state = chunked.reset(k_reset)

        def body(s, k):
            nxt = chunked.step(s, policy(params, s.obs, k))
            return nxt, (s, ~s.done)

        _, (states, alive) = jax.lax.scan(body, state, jax.random.split(k_act, num_chunks))
        return states, alive

    states, alive = jax.jit(run, compiler_options=env_core.compiler_options(env))(params, k_reset, k_act)
    chunk = np.broadcast_to(np.arange(num_chunks)[:, None], alive.shape)
    # task_obs: the task's state observation (the phases read the object's pose); for a camera
    # task `obs` is what the policy sees
    task_obs = states.info.get("state_obs", states.obs)
    return {"states": states, "obs": np.asarray(states.obs), "task_obs": np.asarray(task_obs), "alive": np.asarray(alive),
            "chunk": chunk}


def arm_goal_xy(env):
    """(x, y) of an arm task's goal (Can: the target bin's centre; Square: the peg), else None."""
    inner = getattr(env, "unwrapped", env)
    params = getattr(inner, "params", None)
    if hasattr(params, "target_center"):
        return np.asarray(params.target_center, np.float32)
    peg = getattr(inner, "peg_pos", None)
    if peg is not None and np.ndim(peg) == 1:
        return np.asarray(peg[:2], np.float32)
    return None


def phases(env, obs, alive, chunk, episode_length: int, horizon: int, lift_dz: float = 0.03, near: float = 0.1):
    """Phase label (int) and names of every recorded state.

    Arm tasks with one object and a goal (Can, Square): 'place' when the object is within `near`
    metres (xy) of the goal, else 'carry' when it is `lift_dz` above where its episode started, else
    'reach' (before the grasp). Other tasks: 'early' / 'middle' / 'late' thirds of the episode."""
    inner = getattr(env, "unwrapped", env)
    goal = arm_goal_xy(env)
    keys = getattr(inner, "obs_keys", None)
    if goal is not None and keys is not None and dict(keys).get("object") == 14:
        from ogpo_jax.data.demos import split_obs
        pos = split_obs(np.asarray(obs), keys)["object"][..., 0:3]          # (C, E, 3)
        lifted = pos[..., 2] > pos[:1, :, 2] + lift_dz
        at_goal = np.linalg.norm(pos[..., :2] - goal, axis=-1) < near
        return np.where(at_goal, 2, np.where(lifted, 1, 0)), PHASES_ARM
    frac = chunk * horizon / max(episode_length, 1)
    return np.minimum((frac * 3).astype(int), 2), PHASES_TIME


def pick_states(alive, phase, num: int, seed: int = 0):
    """`num` (chunk, env) indices of alive recorded states, as equal a share per present phase as
    the recording allows (a phase short of its share leaves the rest to the others), drawn without
    replacement. -> (c, e) int arrays, in phase order."""
    rng = np.random.default_rng(seed)
    cand = [np.flatnonzero(alive.ravel() & (phase.ravel() == p)) for p in range(int(phase.max()) + 1)]
    cand = [rng.permutation(c) for c in cand if c.size]
    total = sum(c.size for c in cand)
    if total < num:
        raise ValueError(f"the recording holds {total} alive decision states, fewer than the {num} asked for; "
                         "record more episodes")
    take = [0] * len(cand)
    left = num
    while left:                                  # round-robin over phases that still have states
        for i, c in enumerate(cand):
            if left and take[i] < c.size:
                take[i] += 1
                left -= 1
    flat = np.concatenate([c[:t] for c, t in zip(cand, take)])
    return np.unravel_index(flat, alive.shape)


def gather(tree, c, e):
    """The recorded states at (c, e) index pairs -> a batch of N states."""
    c, e = jnp.asarray(c), jnp.asarray(e)
    return jax.tree_util.tree_map(lambda x: x[c, e], tree)


# ----------------------------------------------------------------------------- chunks and values

def candidate_chunks(algo_config, chunk_shape, actor_params, obs, key, group: int):
    """G chunks per state from the actor's SDE sampler: obs (N, obs_dim) -> (N, G, H, da)."""
    obs_rep = jnp.repeat(obs, group, axis=0)
    chunks = sample_actions(algo_config, chunk_shape, actor_params, obs_rep, key, "sde")
    return chunks.reshape(obs.shape[0], group, *chunk_shape)


def critic_q(algo_config, critic_params, obs, chunks):
    """Per-head Q of the candidates: obs (N, obs_dim), chunks (N, G, H, da) -> (M, N, G)."""
    n, g = chunks.shape[:2]
    q = critic_lib.values(algo_config, critic_params, jnp.repeat(obs, g, axis=0), chunks.reshape(n * g, -1))
    return q.reshape(q.shape[0], n, g)


def mc_returns(env, horizon: int, episode_length: int, states, chunks, policy, params, key, rollouts: int,
               discount: float):
    """Monte-Carlo returns: from each of the N states execute each of its G chunks, then follow
    `policy` until the episode ends, `rollouts` times. All N * G * rollouts branches run as one
    batch. -> dict of (N, G, rollouts) arrays: `returns` (discounted sum from the decision step),
    `steps` (steps until the end), `success`, `nonfinite`."""
    n, g = chunks.shape[:2]
    batch = n * g * rollouts
    chunked = batch_env(env, batch, horizon, auto_reset=False)
    num_chunks = -(-episode_length // horizon)

    def run(params, states, chunks, key):
        rep = jax.tree_util.tree_map(lambda x: jnp.repeat(x, g * rollouts, axis=0), states)
        first = jnp.repeat(chunks.reshape(n * g, *chunks.shape[2:]), rollouts, axis=0)
        powers = jnp.arange(horizon)

        def accumulate(carry, nxt, alive):
            ret, steps, success, broken = carry
            rewards = nxt.info["rewards"] * nxt.info["valid"]
            ret = ret + (rewards * discount ** (steps[:, None] + powers)).sum(-1)
            steps = steps + nxt.info["valid"].sum(-1).astype(jnp.int32)
            success = success | (nxt.info["success"] & alive)
            broken = broken | (nxt.info.get("nonfinite", jnp.zeros_like(alive)) & alive)
            return ret, steps, success, broken

        zeros = (jnp.zeros(batch), jnp.zeros(batch, jnp.int32), jnp.zeros(batch, bool), jnp.zeros(batch, bool))
        alive = ~rep.done
        nxt = chunked.step(rep, first)
        acc = accumulate(zeros, nxt, alive)
        keys = jax.random.split(key, num_chunks)

        def body(carry):
            i, s, acc = carry
            alive = ~s.done
            nxt = chunked.step(s, policy(params, s.obs, keys[i]))
            return i + 1, nxt, accumulate(acc, nxt, alive)

        def running(carry):
            i, s, _ = carry
            return (i < num_chunks) & ~jnp.all(s.done)

        _, _, (ret, steps, success, broken) = jax.lax.while_loop(running, body, (jnp.zeros((), jnp.int32), nxt, acc))
        shape = (n, g, rollouts)
        return {"returns": ret.reshape(shape), "steps": steps.reshape(shape), "success": success.reshape(shape),
                "nonfinite": broken.reshape(shape)}

    out = jax.jit(run, compiler_options=env_core.compiler_options(env))(params, states, chunks, key)
    return {k: np.asarray(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- metrics

def spearman_rows(a, b):
    """Spearman correlation per row of (N, G) arrays; nan where either row is constant."""
    from scipy.stats import rankdata      # ties share their mean rank
    ra, rb = rankdata(a, axis=-1), rankdata(b, axis=-1)
    ra, rb = ra - ra.mean(-1, keepdims=True), rb - rb.mean(-1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def _pearson(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = math.sqrt(float((a ** 2).sum() * (b ** 2).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _nanmean(x):
    x = np.asarray(x, float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _sign_agreement(adv, mc_adv, significant):
    """Share of chunks whose advantage sign matches the MC advantage's, over the chunks the
    advantage does not abstain on (adv != 0) and whose MC advantage is not exactly 0 (a state whose
    chunks all return the same has no sign to match), and over the `significant` ones among them."""
    abstain = adv == 0
    voted = ~abstain & (mc_adv != 0)
    agree = np.sign(adv) == np.sign(mc_adv)
    sig = voted & significant
    return {"sign_agreement": float(agree[voted].mean()) if voted.any() else float("nan"),
            "sign_agreement_significant": float(agree[sig].mean()) if sig.any() else float("nan"),
            "abstain_frac": float(abstain.mean())}


def audit_metrics(q, returns, strategy: str = "conservative") -> dict:
    """The audit's figures from per-head Q (M, N, G) and MC returns (N, G, R), R >= 2.

    For each head, the head mean ('mean') and the algorithm's advantage `strategy` (when it is not
    'vanilla', whose advantage is the head mean's): calibration of Q against the MC mean (heads and
    mean only: bias, RMSE, Pearson r), within-state Spearman of the chunk ranking (mean over states
    whose MC returns differ; `spearman_rankable` over the states whose MC spread exceeds twice the
    chunk standard error, where a true ranking is resolved), and sign agreement of the group
    advantage with the MC advantage.
    'mc': the MC advantage spread (std over each state's chunks of their MC means), the MC standard
    error of a chunk's mean, and the share of states whose spread exceeds twice that error."""
    returns = np.asarray(returns, float)
    n, g = returns.shape[:2]
    if q is not None and (np.shape(q)[1:] != (n, g)):
        raise ValueError(f"q must be (M, N={n}, G={g}) like the returns, got {np.shape(q)}")
    if returns.ndim != 3 or returns.shape[2] < 2:
        raise ValueError(f"returns must be (N, G, R>=2), got {returns.shape}")
    mc = returns.mean(-1)
    se = returns.std(-1, ddof=1) / math.sqrt(returns.shape[2])
    mc_adv = mc - mc.mean(-1, keepdims=True)
    # the error of a chunk's MC advantage: its own mean's error (the group mean's is ~1/G of it)
    significant = np.abs(mc_adv) > 2.0 * se
    spread = mc.std(-1)
    rankable = spread > 2.0 * se.mean(-1)       # states whose chunks differ by more than MC noise
    out = {"mc": {"adv_spread_mean": float(spread.mean()), "adv_spread_median": float(np.median(spread)),
                  "chunk_se_mean": float(se.mean()),
                  "rankable_state_frac": float(rankable.mean()),
                  "significant_chunk_frac": float(significant.mean()), "return_mean": float(mc.mean())}}
    if q is None:                         # no critic (a BC actor): the MC figures alone
        return out
    q = np.asarray(q, float)
    m = q.shape[0]
    views = {f"head_{i}": q[i] for i in range(m)}
    views["mean"] = q.mean(0)
    for name, values in views.items():
        adv = values - values.mean(-1, keepdims=True)
        rho = spearman_rows(values, mc)
        out[name] = {"bias": float((values - mc).mean()), "rmse": float(np.sqrt(((values - mc) ** 2).mean())),
                     "pearson": _pearson(values, mc), "spearman_within_state": _nanmean(rho),
                     "spearman_rankable": _nanmean(rho[rankable]) if rankable.any() else float("nan"),
                     **_sign_agreement(adv, mc_adv, significant)}
    if strategy != "vanilla":
        adv = np.asarray(adv_lib.compute_advantage(jnp.asarray(q), strategy))
        rho = spearman_rows(adv, mc)
        out[strategy] = {"spearman_within_state": _nanmean(rho),
                         "spearman_rankable": _nanmean(rho[rankable]) if rankable.any() else float("nan"),
                         **_sign_agreement(adv, mc_adv, significant)}
    heads = [out[f"head_{i}"] for i in range(m)]
    out["heads_mean"] = {k: _nanmean([h[k] for h in heads]) for k in heads[0]}
    return out


def by_phase(q, returns, phase, names, strategy: str = "conservative") -> dict:
    """`audit_metrics` of every phase with >= 2 states, keyed by phase name."""
    out = {}
    for p, name in enumerate(names):
        idx = np.flatnonzero(np.asarray(phase) == p)
        if idx.size >= 2:
            sub_q = None if q is None else np.asarray(q)[:, idx]
            out[name] = {"states": int(idx.size), **audit_metrics(sub_q, np.asarray(returns)[idx], strategy)}
    return out


# ----------------------------------------------------------------------------- the whole audit

def run_audit(env, horizon: int, episode_length: int, algo_config, actor_params, critics: dict, key, *,
              num_states: int = 32, group: int = 8, rollouts: int = 8, record_envs: int = 32,
              discount: float | None = None, strategy: str | None = None, states_per_call: int | None = None,
              log=print) -> dict:
    """Record decision states, draw candidates, value them with each critic in `critics`
    ({name: ensemble params}, may be empty), estimate their MC returns, and compute the figures.

    The actor (`actor_params`, SDE sampler) both collects the decision states and continues after
    each candidate. The MC rollouts run `states_per_call` states at a time (default: batches of
    ~256 branches), each call after the first reusing the compiled program, with a progress line.
    -> dict: `metrics` {critic: overall figures, by phase}, `arrays` (q per critic, returns,
    phase, steps, success), `phase_names`, `seconds`."""
    import time
    from ogpo_jax.training import progress
    discount = algo_config.discount if discount is None else float(discount)
    strategy = strategy or algo_config.adv_strategy
    chunk_shape = (horizon, env.action_size)
    policy = lambda p, o, k: sample_actions(algo_config, chunk_shape, p, o, k, "sde")  # noqa: E731
    k_rec, k_cand, k_mc = jax.random.split(key, 3)
    t0 = time.time()
    log(f"[audit] recording {record_envs} episodes of the policy (up to {episode_length} steps) for decision states")
    rec = record_states(env, horizon, episode_length, policy, actor_params, k_rec, record_envs)
    phase_all, names = phases(env, rec["task_obs"], rec["alive"], rec["chunk"], episode_length, horizon)
    c, e = pick_states(rec["alive"], phase_all, num_states, seed=int(jax.random.randint(k_rec, (), 0, 2**30)))
    phase = phase_all[c, e]
    counts = ", ".join(f"{n} {int((phase == i).sum())}" for i, n in enumerate(names))
    log(f"[audit] {num_states} decision states ({counts}) from {int(rec['alive'].sum())} recorded, "
        f"{time.time() - t0:.0f}s")
    states = gather(rec["states"], c, e)
    del rec
    chunks = candidate_chunks(algo_config, chunk_shape, actor_params, states.obs, k_cand, group)
    per_call = states_per_call or max(1, 256 // (group * rollouts))
    parts, t1 = [], time.time()
    for start in range(0, num_states, per_call):
        idx = np.arange(start, min(start + per_call, num_states))
        if idx.size < per_call:                    # the same shapes in every call: pad with the first state
            idx = np.concatenate([idx, np.full(per_call - idx.size, idx[0])])
        sub = jax.tree_util.tree_map(lambda x: x[idx], states)
        out = mc_returns(env, horizon, episode_length, sub, chunks[idx], policy, actor_params,
                         jax.random.fold_in(k_mc, start), rollouts, discount)
        keep = min(per_call, num_states - start)
        parts.append({k: v[:keep] for k, v in out.items()})
        done = start + keep
        log(f"[audit] MC: {done}/{num_states} states x {group} chunks x {rollouts} rollouts; "
            + progress.rate_line(done, num_states, time.time() - t1, "states") + " (the first call compiles)")
    mc = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    arrays = {"returns": mc["returns"], "steps": mc["steps"], "success": mc["success"],
              "nonfinite": mc["nonfinite"], "phase": phase, "chunk_index": np.asarray(c),
              "obs": np.asarray(states.obs), "chunks": np.asarray(chunks),
              "ode_chunks": actor_fingerprint(algo_config, chunk_shape, actor_params, states.obs)}
    result = score_critics(arrays, algo_config, critics, list(names), strategy)
    return {**result, "discount": discount, "seconds": time.time() - t0}


def actor_fingerprint(algo_config, chunk_shape, actor_params, obs):
    """The actor's deterministic (ODE) chunk at the decision states: (N, H, da). Two actors whose
    fingerprints agree drew the same candidates and rollouts in distribution, so MC returns computed
    for one serve the other (`score_critics`)."""
    return np.asarray(sample_actions(algo_config, chunk_shape, actor_params, obs, jax.random.PRNGKey(0), "ode"))


def score_critics(arrays: dict, algo_config, critics: dict, phase_names, strategy: str) -> dict:
    """Value the stored candidates (`arrays['obs']`, `arrays['chunks']`) with every critic in
    `critics` and score them against the stored MC returns: the audit's figures without new
    rollouts. Several critics trained on data from one actor (a critic-only run per recipe) are
    compared on the same states, candidates and returns this way. `arrays` are `run_audit`'s (or
    its saved .npz); -> {'metrics', 'arrays' (with q_<name> added), 'phase_names', 'strategy'}."""
    arrays = {k: v for k, v in arrays.items() if not k.startswith("q_")}
    q = {f"q_{name}": np.asarray(critic_q(algo_config, params, jnp.asarray(arrays["obs"]),
                                          jnp.asarray(arrays["chunks"]))) for name, params in critics.items()}
    arrays = {**arrays, **q}
    return {"metrics": metrics_of(arrays, phase_names, strategy), "phase_names": list(phase_names),
            "strategy": strategy, "arrays": arrays}


def metrics_of(arrays: dict, phase_names, strategy: str) -> dict:
    """{critic: {'overall', 'by_phase'}} from an audit's arrays (returns, phase and q_<critic>
    per audited critic; 'mc_only' when there is none)."""
    returns, phase = arrays["returns"], arrays["phase"]
    q = {k[2:]: v for k, v in arrays.items() if k.startswith("q_")}
    metrics = {"mc_only": {"overall": audit_metrics(None, returns),
                           "by_phase": by_phase(None, returns, phase, phase_names)}} if not q else {}
    for name, values in q.items():
        metrics[name] = {"overall": audit_metrics(values, returns, strategy),
                         "by_phase": by_phase(values, returns, phase, phase_names, strategy)}
    return metrics


def plot_audit(result: dict, path: str, title: str = "") -> str | None:
    """Two panels per audited critic: the head-mean Q against the MC mean of every (state, chunk),
    and the group advantage (head mean) against the MC advantage, coloured by phase. -> the PNG
    path, None without a critic or matplotlib."""
    arrays = result["arrays"]
    critics = [k[2:] for k in arrays if k.startswith("q_")]
    if not critics:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    mc = arrays["returns"].mean(-1)
    mc_adv = mc - mc.mean(-1, keepdims=True)
    phase = np.broadcast_to(arrays["phase"][:, None], mc.shape)
    fig, axes = plt.subplots(len(critics), 2, figsize=(10, 4.5 * len(critics)), squeeze=False)
    for row, name in zip(axes, critics):
        qm = arrays[f"q_{name}"].mean(0)
        adv = qm - qm.mean(-1, keepdims=True)
        m = result["metrics"][name]["overall"]
        for p, label in enumerate(result["phase_names"]):
            sel = phase == p
            row[0].scatter(mc[sel], qm[sel], s=8, alpha=0.6, label=label)
            row[1].scatter(mc_adv[sel], adv[sel], s=8, alpha=0.6, label=label)
        lo, hi = float(min(mc.min(), qm.min())), float(max(mc.max(), qm.max()))
        row[0].plot([lo, hi], [lo, hi], "k--", lw=0.8)
        row[0].set(xlabel="MC return of the chunk (mean)", ylabel=f"Q ({name}, head mean)",
                   title=f"calibration: bias {m['mean']['bias']:.2f}, r {m['mean']['pearson']:.2f}")
        row[1].axhline(0, color="k", lw=0.5)
        row[1].axvline(0, color="k", lw=0.5)
        row[1].set(xlabel="MC advantage (chunk - group mean)", ylabel="critic advantage (head mean)",
                   title=f"ranking: Spearman {m['mean']['spearman_within_state']:.2f}, "
                         f"signs {m['mean']['sign_agreement_significant']:.2f} (signif.)")
        row[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_summary(result: dict) -> str:
    """A few lines per audited critic: the head mean's and the algorithm advantage's ranking figures
    overall and per phase, and the MC spread they are judged against."""
    lines = []
    strategy = result["strategy"]
    for name, m in result["metrics"].items():
        rows = [("all", m["overall"])] + [(p, v) for p, v in m["by_phase"].items()]
        lines.append(f"[audit] critic {name}: phase | states | spearman (rankable) | sign agree (signif.) | "
                     f"{strategy} agree / abstain | MC spread / chunk SE | rankable")
        for label, v in rows:
            states = v.get("states", len(result["arrays"]["phase"]))
            mc = v["mc"]
            if "mean" in v:
                mean = v["mean"]
                adv = v.get(strategy, mean)
                ranking = (f"{mean['spearman_within_state']:.2f} ({mean.get('spearman_rankable', float('nan')):.2f}) | "
                           f"{mean['sign_agreement']:.2f} "
                           f"({mean['sign_agreement_significant']:.2f}) | {adv['sign_agreement']:.2f} / "
                           f"{adv['abstain_frac']:.2f}")
            else:
                ranking = "- | - | -"
            lines.append(f"    {label:>6s} | {states:3d} | {ranking} | {mc['adv_spread_mean']:.3f} / "
                         f"{mc['chunk_se_mean']:.3f} | {mc['rankable_state_frac']:.2f}")
    return "\n".join(lines)
