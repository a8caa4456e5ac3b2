"""Contact slots of the MJX arm tasks: the census (`env.kwargs.record_contacts`) counts the slots
that touch, per geom pair and per condim group, and the cap (`env.kwargs.max_contact_points`)
reaches MJX's collision step: a cap above the peak keeps the physics of a few steps (the solver
sees the same contacts in another order), one below it drops contacts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ogpo_jax import envs

pytestmark = pytest.mark.xdist_group("mjx_contact_caps")

STEPS = 3
# gripper open, arm still: the can rests on the table with its base box flat on it
REST = jnp.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])


def _run(**kwargs):
    env = envs.make("can", record_contacts=True, **kwargs)[0].unwrapped

    def rollout(key):
        def body(s, _):
            s = env.step(s, REST)
            return s, (s.info["contact_groups"], s.info["contact_pairs"])
        return jax.lax.scan(body, env.reset(key), None, length=STEPS)

    state, (groups, pairs) = jax.jit(rollout, compiler_options=env.compiler_options)(jax.random.PRNGKey(3))
    return env, jax.device_get(state), np.asarray(groups), np.asarray(pairs)


@pytest.fixture(scope="module")
def uncapped():
    return _run(max_contact_points=-1)


def test_the_census_counts_touching_slots_per_pair_and_condim_group(uncapped):
    env, state, groups, pairs = uncapped
    # Can's scene: 16 pairs, 36 slots of condim 3 and 4 of condim 4 (the pads' soft-finger contacts)
    assert len(env.contact_pairs) == 16 and sum(env.contact_slots_per_pair) == 40
    assert env.contact_condims == (3, 4) and env.contact_slots_per_condim == (36, 4)
    # a box resting flat on a plane touches it at its 4 corners; nothing touches the open hand
    names = dict(zip(env.contact_pairs, pairs[-1]))
    assert names["table/can_base"] == 4
    assert names["can/left_pad"] == names["can/right_pad"] == names["can/hand"] == 0
    # the counts of the last physics state, recomputed from MJX's contact arrays
    c = state.sim._impl.contact
    touch = np.asarray(c.dist) < np.asarray(c.includemargin)
    g, p = jax.device_get(env._touching(state.sim))
    np.testing.assert_array_equal(g, [touch[np.asarray(c.dim) == d].sum() for d in env.contact_condims])
    assert p.sum() == touch.sum()
    # each step's figure is the peak over its physics steps, so at least the last state's count
    assert (groups[-1] >= g).all() and (pairs[-1] >= p).all()


def test_a_cap_above_the_peak_changes_nothing_and_one_below_it_drops_contacts(uncapped):
    _, ref, ref_groups, _ = uncapped
    peak = int(ref_groups[:, 0].max())
    assert peak >= 4
    _, same, groups, _ = _run(max_contact_points=peak + 2)
    # the cap keeps the least-distance slots, so with room for every touching one the physics is
    # the uncapped physics (the solver sees the same active rows, in another order)
    np.testing.assert_allclose(same.obs, ref.obs, atol=1e-5)
    np.testing.assert_array_equal(groups, ref_groups)
    _, _, dropped, _ = _run(max_contact_points=2)
    assert dropped[:, 0].max() == 2             # two of the base's four corners are left


def test_cap_fields_are_checked():
    with pytest.raises(ValueError, match="max_contact_points must be -1 .* got 0"):
        envs.make("can", max_contact_points=0)
    # Can's default caps its condim-3 group (36 slots) at 12; the pads' 4 condim-4 slots stay
    env = envs.make("can", record_contacts=True)[0].unwrapped
    assert env.params.max_contact_points == 12 and env.contact_slots_per_condim == (12, 4)
    # Warp sizes its own contact buffers: the cap leaves its per-world share at the scene's 40
    pytest.importorskip("warp")
    assert envs.make("can", impl="warp", warp_max_worlds=2)[0].unwrapped.contacts_per_world == 40
