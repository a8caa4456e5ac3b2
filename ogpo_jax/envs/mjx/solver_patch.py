"""A consistent elliptic-cone Hessian for MJX's Newton solver (the NaN behind Can blow-ups).

MJX's `solver._update_constraint` builds the Newton Hessian of an elliptic friction cone as

    mu*n/t^3 * u u^T + (mu^2 - mu*n/t) * I      (tangent block; normal row 1, -mu*u/t)

with `t = max(|u_T|, 1e-15)` but `t^3` clamped to 1e-15 on its own. For a contact whose tangential
constraint residual is tiny (1e-15 < t < 1e-5: a contact that has just become active, e.g. a can
lying against a bin wall) the clamp shrinks the positive rank-one term by up to 1e9 while the
other terms keep their size: the block is indefinite (degree-0 homogeneity in the residual is
lost), the Hessian `M + J^T C J` is no longer positive definite wherever a light body (the can)
takes part, and `cho_factor` returns NaN, which the integrator spreads over the whole state.
mujoco_warp#1657 / #1660 describe and fix the same code in MuJoCo Warp; mujoco-mjx 3.17 has it.

`apply()` rewrites exactly those two lines of the installed `_update_constraint` so that where the
clamp would bind the rank-one term is computed in its scale-free form `mu*n/t * û û^T` with
`û = u / t` (the same matrix in exact arithmetic, bounded because |n/t| < max(mu, 1/mu) in the
cone's middle zone); everywhere else the original expression is kept, so states that never reach
the apex step bit for bit as before. If the installed mujoco-mjx does not contain those lines
(an upstream fix or a refactor), nothing is changed and `status()` says so; the environments'
non-finite guard (`envs.core.NonFiniteWrapper`) still ends any episode that blows up.
"""
from __future__ import annotations

import contextlib
import inspect
import textwrap
import threading

_BUGGY = (
    "ttt = jp.maximum(t * t * t, mujoco.mjMINVAL)\n",
    "h = jax.vmap(lambda x, y: x * jp.outer(y, y.T))(mu * n / ttt, u)\n",
)
_FIXED = (
    "ttt = t * t * t\n"
    "_apex = (ttt <= mujoco.mjMINVAL)[:, None, None]\n",
    "h = jp.where(\n"
    "    _apex,\n"
    "    jax.vmap(lambda x, y: x * jp.outer(y, y.T))(mu * n / t, u / t[:, None]),\n"
    "    jax.vmap(lambda x, y: x * jp.outer(y, y.T))(mu * n / jp.maximum(ttt, mujoco.mjMINVAL), u),\n"
    ")\n",
)

_lock = threading.Lock()
_status = "not applied"
_functions = {}          # 'original' and 'patched' _update_constraint once applied


def _patched_source(source: str):
    """The source of `_update_constraint` with the two lines replaced, or None if absent."""
    lines = source.splitlines(keepends=True)
    for i in range(len(lines) - 1):
        first, second = lines[i].strip() + "\n", lines[i + 1].strip() + "\n"
        if (first, second) == _BUGGY:
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            fixed = [textwrap.indent(block, indent) for block in _FIXED]
            return "".join(lines[:i] + fixed + lines[i + 2:])
    return None


def apply() -> str:
    """Patch mujoco-mjx's elliptic-cone Hessian once per process; returns `status()`.

    Call it before the first MJX step is traced (the MJX tasks do, in their constructors); jitted
    programs traced earlier keep the unpatched solver.
    """
    global _status
    with _lock:
        if _status != "not applied":
            return _status
        try:
            from mujoco.mjx._src import solver
        except ImportError as e:              # no MJX: nothing to patch
            _status = f"not needed: mujoco.mjx is not importable ({e})"
            return _status
        try:
            source = textwrap.dedent(inspect.getsource(solver._update_constraint))
        except (AttributeError, OSError, TypeError) as e:
            _status = f"not applied: mujoco-mjx's solver._update_constraint has no readable source ({e})"
            return _status
        patched = _patched_source(source)
        if patched is None:
            _status = ("not applied: this mujoco-mjx's elliptic-cone Hessian differs from the code the patch "
                       "targets (fixed upstream, or refactored)")
            return _status
        namespace = solver.__dict__
        _functions["original"] = namespace["_update_constraint"]
        exec(compile(patched, solver.__file__, "exec"), namespace)   # redefines _update_constraint
        _functions["patched"] = namespace["_update_constraint"]
        _status = "applied"
        return _status


def status() -> str:
    """'applied', 'not applied' (apply() not called yet) or why it was not applied."""
    return _status


@contextlib.contextmanager
def unpatched():
    """Trace MJX programs with the original solver inside this block (diagnostics and tests: the
    patch is process-wide, and a jitted function keeps the solver it was traced with)."""
    from mujoco.mjx._src import solver
    if "original" not in _functions:
        yield
        return
    solver._update_constraint = _functions["original"]
    try:
        yield
    finally:
        solver._update_constraint = _functions["patched"]
