"""Orbax checkpoints of whole training states (any pytree: LoopState, actor params).

A save writes into a temporary directory and renames it when complete, so the latest checkpoint
is never half-written: a process killed during a save leaves the previous checkpoints intact and
the next run resumes from the newest complete one. Sharded (multi-device, multi-host) states are
written cooperatively, each process writing its own shards.
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


def _empty(x) -> bool:
    return math.prod(x.shape) == 0


def _encode(tree):
    """orbax refuses zero-size arrays (an MJX Data has several, e.g. `act` of a model without
    activations): store a 1-element placeholder; `restore` puts the empty array back."""
    return jax.tree_util.tree_map(lambda x: np.zeros((1,), x.dtype) if _empty(x) else x, tree)


def _encode_abstract(tree):
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct((1,), x.dtype) if _empty(x) else x, tree)


def _zeros_like(x):
    """An empty leaf placed like the template's: a restored state whose empty arrays were left
    uncommitted made the next `jit` call compile its program a second time (4.5 min for Can's
    interval on a 2-core CPU)."""
    if isinstance(x, np.ndarray):
        return np.zeros(x.shape, x.dtype)
    sharding = getattr(x, "sharding", None)
    z = jnp.zeros(x.shape, x.dtype)
    return jax.device_put(z, sharding) if sharding is not None else z


def _layouts() -> dict:
    """State types with an older checkpoint layout that still loads:
    type -> (to_older(node) -> pytree, from_older(restored pytree, node) -> node)."""
    from ogpo_jax.algorithms import ogpo
    return {ogpo.OGPOState: (ogpo.older_layout, ogpo.from_older_layout)}


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read back."""


class Checkpointer:
    """Keeps the last `max_to_keep` checkpoints under `directory`; steps are env steps."""

    def __init__(self, directory: str, max_to_keep: int = 2, process_local: bool = False):
        """`process_local`: in a multi-host run, this process alone reads/writes the checkpoint (e.g.
        the BC actor, which process 0 trains while the others wait); by default every process
        takes part (sharded training states)."""
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        # orbax refuses process-local jax.Arrays in a multi-process job: such checkpoints hold numpy
        self.as_numpy = process_local and jax.process_count() > 1
        if self.as_numpy:
            pid = jax.process_index()
            os.makedirs(self.directory, exist_ok=True)
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=False,
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    primary_host=pid, active_processes={pid}, barrier_sync_key_prefix=f"process{pid}"))
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self):
        return self.manager.latest_step()

    def save(self, step: int, tree) -> None:
        tree = _encode(tree)
        if self.as_numpy:
            tree = jax.tree_util.tree_map(np.asarray, tree)
        self.manager.save(int(step), args=ocp.args.StandardSave(tree))
        self.manager.wait_until_finished()

    def restore(self, like, step=None):
        """Restore into the structure (and dtypes/shapes) of `like`.

        A checkpoint written in an older layout of a state type that `_layouts` knows (e.g. an
        `OGPOState` from before its optional fields existed) is read in that layout and converted.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        try:
            out = self._restore_as(like, step)
        except ValueError as e:
            out = self._restore_older_layout(like, step)
            if out is None:
                raise ValueError(
                    f"checkpoint {self.directory} step {step} has a different state layout than this version "
                    "of ogpo-jax expects (e.g. it was written with other algo/train settings, or on another "
                    f"number of devices); restore it with the version and config that wrote it. Details: {e}"
                ) from None
        return jax.tree_util.tree_map(lambda o, x: _zeros_like(x) if _empty(x) else o, out, like)

    def _restore_as(self, like, step):
        """Raw restore into `like`'s layout; ValueError if the stored layout differs."""
        if self.as_numpy:
            abstract = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), _encode_abstract(like))
        else:
            abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _encode_abstract(like))
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except ValueError as e:
            if "do not match" not in str(e) and "not compatible with the stored shape" not in str(e):
                raise CheckpointError(self._unreadable(step, e)) from None
            raise
        except Exception as e:       # missing / truncated / corrupted files
            raise CheckpointError(self._unreadable(step, e)) from None

    def _restore_older_layout(self, like, step):
        """Restore with every node of a known state type in its older layout, then convert back;
        None if `like` holds no such node or the checkpoint is not in that layout either."""
        layouts = _layouts()
        is_node = lambda x: type(x) in layouts
        if not any(is_node(x) for x in jax.tree_util.tree_leaves(like, is_leaf=is_node)):
            return None
        older = jax.tree_util.tree_map(lambda x: layouts[type(x)][0](x) if is_node(x) else x, like, is_leaf=is_node)
        try:
            out = self._restore_as(older, step)
        except ValueError:
            return None
        return jax.tree_util.tree_map(lambda x, o: layouts[type(x)][1](o, x) if is_node(x) else o, like, out,
                                      is_leaf=is_node)

    def _unreadable(self, step, e) -> str:
        return (f"checkpoint {os.path.join(self.directory, str(step))} cannot be read ({type(e).__name__}: "
                f"{str(e)[:300]}); it is damaged. Move it away to resume from an older one "
                f"(steps here: {sorted(self.manager.all_steps())})")

    def close(self):
        self.manager.close()
