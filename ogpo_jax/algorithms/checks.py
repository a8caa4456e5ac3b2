"""Input checks of the public update API, run at trace time (shapes are static under `jit`, so
they cost nothing per call): a wrong actor checkpoint, a missing transition key or a wrongly
shaped array fails at `init` / the first `update` with a message naming the field, instead of a
Flax scope error or a broadcasting error deep inside the update. Values are checked only where
they are concrete (an eager call): NaN or inf in an eager `update` / `act` input is a ValueError;
under `jit` it shows as non-finite metrics, which the training loop's guard discards.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

# The chunk transition `update` reads: key -> shape as a function of (B, obs_dim, H, da).
TRANSITION_SHAPES = {
    "obs": lambda b, o, h, a: (b, o),
    "actions": lambda b, o, h, a: (b, h, a),
    "rewards": lambda b, o, h, a: (b, h),
    "valid": lambda b, o, h, a: (b, h),
    "next_obs": lambda b, o, h, a: (b, o),
    "terminal": lambda b, o, h, a: (b,),
}
# What a success batch (flow-matching BC data) needs.
BC_SHAPES = {key: TRANSITION_SHAPES[key] for key in ("obs", "actions", "valid")}


def unwrap_params(params):
    """Flax variables {'params': p} -> p (the inner params every function here expects)."""
    if isinstance(params, Mapping) and set(params.keys()) == {"params"}:
        return params["params"]
    return params


def check_params_like(params, expected, what: str, fields: str) -> None:
    """`params` must have the tree structure and leaf shapes of `expected` (e.g. from
    `jax.eval_shape` of a fresh init); `fields` names the config fields that set those shapes."""
    got_leaves, got_tree = jax.tree_util.tree_flatten_with_path(params)
    want_leaves, want_tree = jax.tree_util.tree_flatten_with_path(expected)
    if got_tree != want_tree:
        got = sorted(jax.tree_util.keystr(p) for p, _ in got_leaves)
        want = sorted(jax.tree_util.keystr(p) for p, _ in want_leaves)
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise ValueError(
            f"{what} do not match the network the config describes ({fields}): "
            f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}, "
            f"unexpected {extra[:4]}{' ...' if len(extra) > 4 else ''}")
    for (path, got), (_, want) in zip(got_leaves, want_leaves):
        if tuple(np.shape(got)) != tuple(want.shape):
            raise ValueError(
                f"{what}{jax.tree_util.keystr(path)} has shape {tuple(np.shape(got))}, the config's network "
                f"needs {tuple(want.shape)}: check {fields}")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def check_dims(obs_dim, chunk_shape) -> tuple:
    """`obs_dim` a positive int and `chunk_shape` a pair (H, da) of positive ints -> (obs_dim, H, da)."""
    if not _is_int(obs_dim) or obs_dim < 1:
        raise ValueError(f"obs_dim must be a positive int, got {obs_dim!r}")
    if isinstance(chunk_shape, (str, bytes)) or not hasattr(chunk_shape, "__len__") or len(chunk_shape) != 2 \
            or not all(_is_int(c) and c >= 1 for c in chunk_shape):
        raise ValueError(f"chunk_shape must be (H, action_dim), two positive ints, got {chunk_shape!r}")
    return int(obs_dim), int(chunk_shape[0]), int(chunk_shape[1])


def check_key(key, name: str = "key") -> None:
    """A JAX PRNG key: a typed key array of shape () or a raw uint32 key of shape (2,)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and np.shape(key) == ():
        return
    if dtype is None or np.dtype(dtype) != np.uint32 or tuple(np.shape(key)) != (2,):
        raise TypeError(f"{name} must be a PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), got "
                        f"{type(key).__name__} with shape {np.shape(key) if dtype is not None else '?'} and dtype "
                        f"{dtype}")


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_array(x, name: str, shape=None) -> None:
    """A numeric array (numpy / JAX / a nested list of numbers) of `shape` (None entries match any
    size), finite where its values are concrete."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise TypeError(f"{name} must be a numeric array, got {type(x).__name__} ({e})") from None
        dtype = x.dtype
    if not (np.issubdtype(np.dtype(dtype), np.number) or np.dtype(dtype) == np.bool_):
        raise TypeError(f"{name} must be a numeric array, got dtype {dtype}")
    if shape is not None:
        got = tuple(np.shape(x))
        if len(got) != len(shape) or any(w is not None and g != w for g, w in zip(got, shape)):
            want = "(" + ", ".join("B" if w is None else str(w) for w in shape) + ")"
            raise ValueError(f"{name} has shape {got}, expected {want}")
    if _concrete(x) and np.issubdtype(np.dtype(dtype), np.floating):
        bad = int(np.size(x) - np.isfinite(np.asarray(x)).sum())
        if bad:
            raise ValueError(f"{name} holds {bad} NaN or inf value(s)")


def float_array(x) -> jax.Array:
    """`x` (checked by `check_array`) as a JAX array; integer or boolean inputs become float32,
    since the networks run in float."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def check_batch(batch, obs_dim: int, chunk_shape, name: str = "batch", shapes=None, min_rows: int = 1) -> None:
    """`batch` must be a mapping holding every key of `shapes` (default: the chunk transition)
    with shapes (B, ...) consistent with `obs_dim` and `chunk_shape` = (H, da), and B >= min_rows."""
    shapes = TRANSITION_SHAPES if shapes is None else shapes
    if not isinstance(batch, Mapping):
        raise TypeError(f"{name} must be a dict of arrays with keys {sorted(shapes)}, got {type(batch).__name__}")
    missing = sorted(k for k in shapes if k not in batch)
    if missing:
        raise KeyError(f"{name} is missing {missing}; it needs {sorted(shapes)} "
                       f"(README, 'Using the update in your own JAX code')")
    rows = np.shape(batch["obs"])[0] if np.ndim(batch["obs"]) else None
    h, a = (int(c) for c in chunk_shape)
    for key, shape_fn in shapes.items():
        want = shape_fn(rows, obs_dim, h, a)
        got = tuple(np.shape(batch[key]))
        if got != want:
            raise ValueError(f"{name}[{key!r}] has shape {got}, expected {want} "
                             f"(B = {rows} rows, obs_dim = {obs_dim}, chunk (H, da) = ({h}, {a}))")
        check_array(batch[key], f"{name}[{key!r}]")
    if rows < min_rows:
        raise ValueError(f"{name} has {rows} rows, fewer than the {min_rows} the update uses "
                         f"(config.ppo_batch_size / batch_size): sample at least that many")
