"""Replay ring: wraparound, masked writes, sampling only valid rows, success staging."""
import jax
import jax.numpy as jnp
import numpy as np

from ogpo_jax.data import replay as rb


def _rows(values):
    values = jnp.asarray(values, jnp.float32)
    return {"x": values, "y": jnp.stack([values, -values], -1)}


def test_insert_wraps_around_and_overwrites_oldest():
    buf = rb.init_buffer({"x": jnp.zeros(()), "y": jnp.zeros((2,))}, capacity=5)
    buf = rb.insert(buf, _rows([1, 2, 3]))
    assert int(buf.size) == 3 and int(buf.insert_pos) == 3
    buf = rb.insert(buf, _rows([4, 5, 6, 7]))
    assert int(buf.size) == 5 and int(buf.insert_pos) == 2
    np.testing.assert_array_equal(buf.data["x"], [6, 7, 3, 4, 5])
    np.testing.assert_array_equal(buf.data["y"][:, 1], [-6, -7, -3, -4, -5])
    # More rows than capacity in one call: the last `capacity` rows survive, each slot written once.
    buf = rb.insert(buf, _rows(np.arange(10, 22)))
    assert sorted(np.asarray(buf.data["x"]).tolist()) == [17, 18, 19, 20, 21]


def test_masked_insert_is_contiguous():
    buf = rb.init_buffer({"x": jnp.zeros(()), "y": jnp.zeros((2,))}, capacity=4)
    buf = rb.insert(buf, _rows([1, 2, 3, 4, 5]), mask=jnp.array([True, False, True, False, True]))
    np.testing.assert_array_equal(buf.data["x"][:3], [1, 3, 5])
    assert int(buf.size) == 3 and int(buf.insert_pos) == 3
    buf = rb.insert(buf, _rows([7, 8]), mask=jnp.array([False, True]))
    np.testing.assert_array_equal(buf.data["x"], [1, 3, 5, 8])


def test_sample_only_valid_rows_under_jit():
    buf = rb.init_buffer({"x": jnp.zeros(()), "y": jnp.zeros((2,))}, capacity=100)
    buf = rb.insert(buf, _rows([1, 2, 3]))
    batch = jax.jit(rb.sample, static_argnums=2)(buf, jax.random.PRNGKey(0), 1000)
    vals = np.asarray(batch["x"])
    assert set(vals.tolist()) == {1.0, 2.0, 3.0}          # never an unwritten (zero) row
    np.testing.assert_array_equal(batch["y"][:, 0], vals)  # fields of one row stay together


def test_success_staging_flushes_only_successful_episodes():
    example = {"x": jnp.zeros(())}
    staging = rb.init_staging(example, num_envs=2, max_chunks=3)
    succ = rb.init_buffer(example, capacity=10)
    # Step 1: both envs stage a chunk; nothing ends.
    staging, succ = rb.stage_and_flush(staging, succ, {"x": jnp.array([1.0, 10.0])},
                                       jnp.array([False, False]), jnp.array([False, False]))
    # Step 2: env 0 ends successfully, env 1 ends in failure.
    staging, succ = rb.stage_and_flush(staging, succ, {"x": jnp.array([2.0, 20.0])},
                                       jnp.array([True, True]), jnp.array([True, False]))
    assert int(succ.size) == 2
    np.testing.assert_array_equal(succ.data["x"][:2], [1.0, 2.0])
    np.testing.assert_array_equal(staging.count, [0, 0])
    # Step 3: env 1 succeeds immediately in a new episode: only its new chunk is copied.
    staging, succ = rb.stage_and_flush(staging, succ, {"x": jnp.array([3.0, 30.0])},
                                       jnp.array([False, True]), jnp.array([False, True]))
    assert int(succ.size) == 3
    np.testing.assert_array_equal(succ.data["x"][:3], [1.0, 2.0, 30.0])


def test_buffer_nbytes():
    example = rb.transition_spec(obs_dim=10, chunk_shape=(4, 7))
    per_row = 4 * (10 + 28 + 4 + 10) + 4 + 1 + 1
    assert rb.buffer_nbytes(example, 1000) == 1000 * per_row
