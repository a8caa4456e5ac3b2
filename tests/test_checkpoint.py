"""Orbax checkpoints of whole states, including the zero-size arrays an MJX Data carries."""
import jax
import jax.numpy as jnp
import numpy as np

from ogpo_jax.training.checkpoint import Checkpointer


def test_round_trip_with_zero_size_leaves(tmp_path):
    tree = {"act": jnp.zeros((32, 0)), "qpos": jnp.arange(12.0).reshape(3, 4),
            "n": jnp.array(7, jnp.int32), "flags": jnp.array([True, False]), "efc": jnp.zeros((0,), jnp.int32)}
    ckpt = Checkpointer(str(tmp_path / "c"), max_to_keep=2)
    ckpt.save(5, tree)
    ckpt.save(9, jax.tree_util.tree_map(lambda x: x + 1 if x.dtype != bool else ~x, tree))
    assert ckpt.latest_step() == 9
    like = jax.tree_util.tree_map(jnp.zeros_like, tree)
    back = ckpt.restore(like, step=5)
    for k in tree:
        assert back[k].shape == tree[k].shape and back[k].dtype == tree[k].dtype, k
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(tree[k]))
    latest = ckpt.restore(jax.eval_shape(lambda: tree))       # abstract template works too
    assert int(latest["n"]) == 8 and latest["act"].shape == (32, 0)
    ckpt.close()


def test_restored_state_is_placed_like_the_template_and_does_not_recompile(tmp_path):
    """Every restored leaf (the empty ones too) is committed to the template's device, so a jitted
    step called with the restored state reuses the program compiled for the template."""
    dev = jax.devices()[0]
    tree = jax.device_put({"act": jnp.zeros((4, 0)), "qpos": jnp.arange(6.0), "n": jnp.array(3, jnp.int32)}, dev)
    step = jax.jit(lambda t: jax.tree_util.tree_map(lambda x: x + 1, t))
    out = step(tree)
    ckpt = Checkpointer(str(tmp_path / "c"))
    ckpt.save(1, out)
    back = ckpt.restore(tree, step=1)
    ckpt.close()
    for k in tree:
        assert back[k].committed and back[k].sharding == tree[k].sharding, k
    step(back)
    assert step._cache_size() == 1
