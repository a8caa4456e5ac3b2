"""Audit a run's critic against Monte-Carlo returns: does it rank the policy's chunks correctly?

    python experiments/audit_critic.py --workdir=runs/can_quick_s0                  # newest checkpoint
    python experiments/audit_critic.py --workdir=runs/can_quick_s0 --source=51200 --states=64
    python experiments/audit_critic.py --workdir=runs/square_quick_s0 --source=bc   # MC spread only

From N decision states of the policy's own rollouts (--states, stratified by phase: for Can and
Square before the grasp / carrying / at the target, else thirds of the episode), G candidate chunks
each from the policy's SDE sampler (--group), and M Monte-Carlo rollouts of each candidate
(--rollouts) that execute it and then follow the policy to the episode's end: N x G x M rollouts of
up to the episode length, run --states_per_call states at a time.

The figures (JSON: <workdir>/audit/audit_<source>.json; raw arrays .npz; plot .png), for every
critic head, for the head mean and for the algorithm's advantage (`algo.adv_strategy`, e.g.
conservative sign consensus), overall and per phase:

  bias, rmse, pearson      Q against the MC mean of every (state, chunk): calibration. MC stops
                           at the episode's end; where the time limit is not terminal the critic's
                           Q near the limit includes reward beyond it.
  spearman_within_state    rank correlation of the G chunks of one state by Q and by MC mean,
                           averaged over states: the ranking the actor update uses. 1 is perfect,
                           0 is chance. spearman_rankable: over the states whose chunks differ by
                           more than the MC noise (see rankable_state_frac), where a ranking exists.
  sign_agreement           share of chunks whose group advantage has the sign of their MC
                           advantage (chunk minus the state's MC mean), among the chunks the
                           advantage does not abstain on (0 = abstain, e.g. heads disagree under
                           conservative advantages) and whose MC advantage is not exactly 0;
                           _significant: only chunks whose MC advantage is more than 2 standard
                           errors from 0. 0.5 is chance.
  abstain_frac             share of chunks with advantage exactly 0 (no gradient from them).
  mc.adv_spread_mean       std of the MC means over a state's chunks: how much the chunks differ.
  mc.chunk_se_mean         standard error of one chunk's MC mean (M rollouts).
  mc.rankable_state_frac   states whose spread exceeds twice that error: where a ranking exists.

--source: 'latest' (the newest finetune checkpoint), a checkpoint's env step, or 'bc' (the BC
actor: no critic, the MC figures only). --critics: 'target' (what the actor's advantages use),
'online', or both.

--mc_from: compare critics trained with different recipes on data from one frozen actor (critic-only
runs: a huge `algo.critic_warmup_updates`) on exactly the same states, candidates and MC returns:
run the rollouts once (e.g. --source=bc on the BC run), then `--mc_from=<that audit>.npz` per run.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from ogpo_jax.training import cli  # noqa: E402
from ogpo_jax.training import compile_cache, critic_audit, rundir  # noqa: E402
from ogpo_jax.training.config import validate  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by train.py.", required=True)
_SOURCE = flags.DEFINE_string("source", "latest", "'latest', 'bc', or a finetune checkpoint's env step.")
_STATES = flags.DEFINE_integer("states", 32, "Decision states N.")
_GROUP = flags.DEFINE_integer("group", 8, "Candidate chunks per state G.")
_ROLLOUTS = flags.DEFINE_integer("rollouts", 8, "Monte-Carlo rollouts per (state, chunk) M (>= 2).")
_RECORD = flags.DEFINE_integer("record_envs", 32, "Episodes recorded to draw the decision states from.")
_PER_CALL = flags.DEFINE_integer("states_per_call", 0, "States per MC batch (0: ~256 rollouts per call).")
_CRITICS = flags.DEFINE_list("critics", ["target"], "Critics to audit: target, online.")
_SEED = flags.DEFINE_integer("seed", 0, "Audit seed.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default <workdir>/audit).")
_REPLOT = flags.DEFINE_bool("replot", False, "Recompute the figures, plot and summary of a finished audit from its "
                            "stored arrays (no rollouts).")
_MC_FROM = flags.DEFINE_string(
    "mc_from", None, "A finished audit's .npz (or .json) of the same actor: reuse its decision states, candidates "
    "and MC returns, value them with this run's critics, and skip the rollouts (seconds instead of minutes). "
    "Checked: same task, and the actor's ODE chunks at those states agree.")


def _check_flags():
    for name, value, low in (("states", _STATES.value, 2), ("group", _GROUP.value, 2),
                             ("rollouts", _ROLLOUTS.value, 2), ("record_envs", _RECORD.value, 1),
                             ("states_per_call", _PER_CALL.value, 0)):
        if value < low:
            raise app.UsageError(f"--{name} must be >= {low}, got {value}")
    bad = [c for c in _CRITICS.value if c not in ("target", "online")]
    if bad:
        raise app.UsageError(f"--critics: {bad} unknown; choose from target, online")


def _stem(workdir: str) -> str:
    tag = _SOURCE.value if _SOURCE.value in ("bc", "latest") else f"step{_SOURCE.value}"
    return os.path.join(_OUT.value or os.path.join(workdir, "audit"), f"audit_{tag}")


def _replot(workdir: str):
    stem = _stem(workdir)
    if not os.path.exists(stem + ".json"):
        raise SystemExit(f"{stem}.json: no finished audit to redraw")
    summary = json.load(open(stem + ".json"))
    arrays = dict(np.load(stem + ".npz"))
    # the figures are recomputed from the stored arrays, so audits written before a figure existed gain it
    summary["metrics"] = critic_audit.metrics_of(arrays, summary["phase_names"], summary["strategy"])
    with open(stem + ".json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    result = {"metrics": summary["metrics"], "phase_names": summary["phase_names"], "strategy": summary["strategy"],
              "arrays": arrays}
    png = critic_audit.plot_audit(result, stem + ".png", f"{summary['env']}: {summary['source']}")
    print(critic_audit.format_summary(result))
    print(f"[audit] redrawn -> {png}")


def _reuse_mc(path, config, algo_cfg, actor, critics, horizon, env):
    """The figures for this run's critics against a finished audit's states, candidates and MC
    returns; refuses another task or an actor whose ODE chunks there differ."""
    stem = path[:-4] if path.endswith((".npz", ".json")) else path
    for ext in (".npz", ".json"):
        if not os.path.exists(stem + ext):
            raise SystemExit(f"--mc_from={path}: {stem + ext} not found")
    src = json.load(open(stem + ".json"))
    arrays = dict(np.load(stem + ".npz"))
    if "obs" not in arrays or "ode_chunks" not in arrays:
        raise SystemExit(f"--mc_from={path}: written before audits stored their states and candidates; rerun it")
    if src["env"] != config.env.name:
        raise SystemExit(f"--mc_from={path}: audit of env {src['env']!r}, this run is {config.env.name!r}")
    if not critics:
        raise SystemExit("--mc_from: this source has no critic to score")
    t0 = time.time()
    mine = critic_audit.actor_fingerprint(algo_cfg, (horizon, env.action_size), actor, jax.numpy.asarray(arrays["obs"]))
    diff = float(np.abs(mine - arrays["ode_chunks"]).max())
    if diff > 1e-3:
        raise SystemExit(f"--mc_from={path}: this actor is not the one that audit rolled out (its ODE chunks "
                         f"differ by up to {diff:.3g}); MC returns of another policy would not be this critic's targets")
    print(f"[audit] reusing {src['states']} states x {src['group']} chunks x {src['rollouts']} MC rollouts from {stem}"
          f" (actor ODE chunks agree to {diff:.1e})")
    result = critic_audit.score_critics(arrays, algo_cfg, critics, src["phase_names"], algo_cfg.adv_strategy)
    result.update(discount=src["discount"], seconds=time.time() - t0, mc_from=stem)
    return result, src["states"], src["group"], src["rollouts"]


def main(argv):
    del argv
    _check_flags()
    if _REPLOT.value:
        return _replot(_WORKDIR.value)
    compile_cache.enable(print)
    logging.set_verbosity(logging.WARNING)
    workdir = _WORKDIR.value
    config = rundir.load_run_config(workdir)
    algo_cfg = validate(config)
    agent, _, what = rundir.restore_policy(config, workdir, _SOURCE.value)
    if hasattr(agent, "critic_target"):
        actor = agent.actor_ema              # the policy the critic's TD target evaluates
        critics = {name: agent.critic_target if name == "target" else agent.critic for name in _CRITICS.value}
    elif _SOURCE.value == "bc" or not hasattr(agent, "step"):
        actor, critics = agent, {}           # BC actor params: the MC figures alone
    else:
        raise SystemExit(f"{what}: algorithm {algo_cfg.name!r} has no OGPO critic ensemble to audit")
    n, g, m = _STATES.value, _GROUP.value, _ROLLOUTS.value
    # MuJoCo Warp's buffers: room for the largest call (all N x G x M rollouts at most)
    env, episode_length = rundir.run_env(config, workdir, worlds=max(n * g * m, _RECORD.value))
    horizon = config.env.chunk_horizon
    print(f"[audit] {what}; critics: {', '.join(critics) or 'none (MC figures only)'}")
    if _MC_FROM.value:
        result, n, g, m = _reuse_mc(_MC_FROM.value, config, algo_cfg, actor, critics, horizon, env)
    else:
        print(f"[audit] cost: {n} states x {g} chunks x {m} rollouts = {n * g * m} rollouts of up to {episode_length} "
              f"steps (<= {n * g * m * episode_length:,} env steps), plus {_RECORD.value} recorded episodes")
        result = critic_audit.run_audit(env, horizon, episode_length, algo_cfg, actor, critics,
                                        jax.random.PRNGKey(_SEED.value), num_states=n, group=g, rollouts=m,
                                        record_envs=_RECORD.value, states_per_call=_PER_CALL.value or None)
    stem = _stem(workdir)
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    np.savez_compressed(stem + ".npz", **result["arrays"])
    summary = {"source": what, "workdir": workdir, "env": config.env.name, "states": n, "group": g, "rollouts": m,
               "record_envs": _RECORD.value, "seed": _SEED.value, "discount": result["discount"],
               "strategy": result["strategy"], "phase_names": result["phase_names"],
               "phase_counts": np.bincount(result["arrays"]["phase"], minlength=len(result["phase_names"])).tolist(),
               "seconds": result["seconds"], "mc_from": result.get("mc_from"), "metrics": result["metrics"],
               "command": "python experiments/audit_critic.py " + " ".join(sys.argv[1:]),
               "device": str(jax.devices()[0]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with open(stem + ".json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    png = critic_audit.plot_audit(result, stem + ".png", f"{config.env.name}: {what}")
    print(critic_audit.format_summary(result))
    print(f"[audit] {result['seconds']:.0f}s -> {stem}.json" + (f", {png}" if png else ""))


if __name__ == "__main__":
    app.run(cli.main(main))
