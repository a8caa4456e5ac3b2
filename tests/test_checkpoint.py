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
