# Expert success over 200 demos of configs/can.py:quick (seed 0 demo key) for a variant of the Can physics:
# env vars CONE (pyramidal|elliptic), IMPRATIO, SOLVER (cg), ITER, PADFRIC (can-pad pair friction).
# Written to choose how to remove the MJX blow-ups (RESULTS.md, Can, "Physics: NaN states, their cause, the fix and the rates"); not part of the package.
import os, sys, time
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..')))
import jax, numpy as np, mujoco
from mujoco import mjx
from ogpo_jax import envs
from ogpo_jax.training.collect import collect_demos
from ogpo_jax.training import pipeline
import configs.can as cc
config = cc.get_config('quick')
kw = config.env.kwargs.to_dict(); kw['cone'] = os.environ.get('CONE', 'pyramidal')
env, expert, T = envs.make('can', **kw)
raw = env.unwrapped
mm = raw.mj_model
if 'IMPRATIO' in os.environ: mm.opt.impratio = float(os.environ['IMPRATIO'])
if os.environ.get('SOLVER') == 'cg': mm.opt.solver = mujoco.mjtSolver.mjSOL_CG
if 'ITER' in os.environ: mm.opt.iterations = int(os.environ['ITER'])
if 'PADFRIC' in os.environ:
    for i in (2, 3):
        mm.pair_friction[i, :2] = float(os.environ['PADFRIC'])
    print('pad pairs', mm.pair_friction[2:4])
raw.mjx_model = mjx.put_model(mm, impl='jax')
n = int(os.environ.get('N', '200'))
t0 = time.time()
out = jax.device_get(collect_demos(env, expert, n, T, pipeline.stage_keys(config)[0] if n == 200 else jax.random.PRNGKey(1)))
print(dict(os.environ.get(k, '') and (k, os.environ[k]) or (k, '-') for k in ('CONE', 'IMPRATIO', 'SOLVER', 'ITER', 'PADFRIC')),
      'success', out['success'].mean(), 'mean length', out['length'].mean(), 'failures', np.flatnonzero(~out['success']), f'{time.time() - t0:.0f}s', flush=True)
from ogpo_jax.envs.mjx import can_diagnostics
rep = can_diagnostics.failure_report(out['obs'].transpose(1, 0, 2), out['valid'].T, out['success'])
print({k: v for k, v in rep.items() if k != 'per_episode'} if isinstance(rep, dict) else rep)
