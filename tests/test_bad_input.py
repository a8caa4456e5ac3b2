"""Property tests of bad input (hypothesis): random wrong shapes, dtypes, missing keys, NaN / inf
and out-of-range values into `ogpo.init`, `ogpo.update`, `ogpo.act`, the HDF5 reader and the
config loader. Each input either works or raises a named error from this project's own checks
(before anything compiles), never an error from deep inside Flax, JAX or XLA."""
import json
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ogpo_jax import ogpo
from ogpo_jax.algorithms.config import AlgoConfig, OGPOConfig
from ogpo_jax.data import demos as demo_io
from ogpo_jax.training import cli, defaults, rundir
from ogpo_jax.training.config import validate

CFG = OGPOConfig(actor_hidden_dims=(8, 8), critic_hidden_dims=(8, 8), num_critics=2, flow_steps=2,
                 batch_size=4, ppo_batch_size=4, group_size=2, success_batch_size=4, best_of_n=2,
                 best_of_n_heads=2, rollout_mode="ode")
OBS, CHUNK = 3, (2, 2)
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _named(e: BaseException) -> bool:
    """A named error: a ValueError / TypeError / KeyError (or the reader's DatasetError) raised by
    this project's own code, with a message."""
    return isinstance(e, (ValueError, TypeError, KeyError)) and cli.raised_by_own_code(e) and bool(str(e))


def _works_or_named(fn, target):
    try:
        return fn(), None
    except Exception as e:          # noqa: BLE001 - the property is about which errors escape
        assert _named(e), f"{target}: {type(e).__name__} from outside the project's checks: {e}"
        return None, e


@pytest.fixture(scope="module")
def state():
    return ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, CFG)


def _batch(n=4):
    rng = np.random.default_rng(0)
    return {"obs": rng.normal(size=(n, OBS)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, *CHUNK)).astype(np.float32),
            "rewards": -np.ones((n, CHUNK[0]), np.float32), "valid": np.ones((n, CHUNK[0]), bool),
            "next_obs": rng.normal(size=(n, OBS)).astype(np.float32), "terminal": np.zeros((n,), bool)}


# ------------------------------------------------------------------------------------ values

ODD_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 10), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=3))


def _mutated_array(draw, x):
    """A random wrong version of array `x`: another shape, dtype, non-finite values or not an array."""
    kind = draw(st.sampled_from(["shape", "drop_dim", "add_dim", "dtype", "nan", "inf", "scalar", "list"]))
    if kind == "shape":
        shape = list(x.shape)
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw(st.integers(0, 6).filter(lambda v: v != shape[i]))
        return np.zeros(shape, x.dtype)
    if kind == "drop_dim":
        return x.reshape(x.shape[0], -1)[..., 0] if x.ndim > 1 else x[0]
    if kind == "add_dim":
        return x[..., None]
    if kind == "dtype":
        return x.astype(draw(st.sampled_from([np.int32, np.float64, np.float16, np.uint8, np.str_, object])))
    if kind in ("nan", "inf"):
        y = x.astype(np.float32).copy()
        y.flat[draw(st.integers(0, y.size - 1))] = np.nan if kind == "nan" else -np.inf
        return y
    if kind == "scalar":
        return draw(ODD_SCALARS)
    return x.tolist()


@st.composite
def bad_batches(draw):
    batch, succ = _batch(), {k: v for k, v in _batch().items() if k in ("obs", "actions", "valid")}
    target = draw(st.sampled_from(["batch", "success_batch"]))
    b = batch if target == "batch" else succ
    key = draw(st.sampled_from(sorted(b)))
    if draw(st.integers(0, 4)) == 0:
        del b[key]
    else:
        b[key] = _mutated_array(draw, b[key])
    if draw(st.integers(0, 9)) == 0:
        batch = draw(st.sampled_from([None, [], "batch", 3]))
    return batch, succ


def _valid_jax_types(tree) -> bool:
    leaves = jax.tree_util.tree_leaves(tree)
    return all(isinstance(x, (np.ndarray, jax.Array)) and (np.issubdtype(x.dtype, np.number) or x.dtype == bool)
               for x in leaves) and isinstance(tree, tuple)


@settings(max_examples=60, **SETTINGS)
@given(bad_batches())
def test_update_works_or_names_the_bad_input(state, batches):
    batch, succ = batches

    def run():
        # a structurally valid input is traced (not run: it would compile), the rest goes through
        # the eager call, whose checks run before any computation (values are concrete there)
        if isinstance(batch, dict) and _valid_jax_types((batch, succ)) and all(
                np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves((batch, succ))
                if np.issubdtype(v.dtype, np.floating)):
            return jax.eval_shape(ogpo.update, state, batch, succ)
        return ogpo.update(state, batch, succ)

    out, err = _works_or_named(run, "ogpo.update")
    if err is None:
        new, metrics = out
        assert new.step.shape == () and "critic/loss" in metrics


@settings(max_examples=40, **SETTINGS)
@given(st.data())
def test_act_works_or_names_the_bad_input(state, data):
    obs = np.random.default_rng(1).normal(size=(5, OBS)).astype(np.float32)
    what = data.draw(st.sampled_from(["obs", "key", "mode", "actor", "state"]))
    args = {"obs": obs, "key": jax.random.PRNGKey(0), "mode": None, "actor": None, "state": state}
    if what == "obs":
        args["obs"] = _mutated_array(data.draw, obs)
    elif what == "key":
        args["key"] = data.draw(st.one_of(ODD_SCALARS, st.sampled_from(
            [np.zeros(3, np.uint32), np.zeros(2, np.int32), np.zeros((2, 2), np.uint32), jax.random.key(0)])))
    elif what in ("mode", "actor"):
        args[what] = data.draw(st.one_of(st.sampled_from(["ode", "sde", "best_of_n", "ema", "current", "ODE", ""]),
                                         ODD_SCALARS))
    else:
        args["state"] = data.draw(st.sampled_from([None, {}, CFG, (1, 2)]))

    def run():
        key_ok = isinstance(args["key"], (np.ndarray, jax.Array))
        if key_ok and isinstance(args["obs"], np.ndarray) and np.issubdtype(args["obs"].dtype, np.number) and \
                np.all(np.isfinite(args["obs"])):
            return jax.eval_shape(lambda o, k: ogpo.act(args["state"], o, k, args["mode"], args["actor"]),
                                  args["obs"], args["key"])
        return ogpo.act(args["state"], args["obs"], args["key"], args["mode"], args["actor"])

    out, err = _works_or_named(run, "ogpo.act")
    if err is None:
        lead = np.shape(args["obs"])[:-1]
        assert out.shape == (*lead, *CHUNK)


@settings(max_examples=40, **SETTINGS)
@given(st.data())
def test_init_works_or_names_the_bad_input(data):
    params = ogpo.init_actor(jax.random.PRNGKey(0), OBS, CHUNK, CFG)
    args = {"key": jax.random.PRNGKey(1), "obs_dim": OBS, "chunk_shape": CHUNK, "config": CFG, "actor_params": params}
    what = data.draw(st.sampled_from(sorted(args)))
    if what == "obs_dim":
        args[what] = data.draw(st.one_of(ODD_SCALARS, st.just(np.int64(3)), st.just(3.0)))
    elif what == "chunk_shape":
        args[what] = data.draw(st.one_of(ODD_SCALARS, st.lists(st.one_of(st.integers(-2, 4), st.floats(0, 3)),
                                                               max_size=3).map(tuple)))
    elif what == "key":
        args[what] = data.draw(st.one_of(ODD_SCALARS, st.just(np.zeros(3, np.uint32))))
    elif what == "config":
        args[what] = data.draw(st.sampled_from([None, {}, {"group_size": 1}, {"name": "qc"}, {"nope": 1},
                                                {"flow_steps": "3"}, 7, "ogpo"]))
    else:
        leaves, tree = jax.tree_util.tree_flatten(params)
        i = data.draw(st.integers(0, len(leaves) - 1))
        choice = data.draw(st.sampled_from(["reshape", "drop", "wrap", "nan", "none"]))
        if choice == "reshape":
            leaves[i] = np.zeros((*np.shape(leaves[i]), 2), np.float32)
            args[what] = jax.tree_util.tree_unflatten(tree, leaves)
        elif choice == "drop":
            args[what] = {k: v for j, (k, v) in enumerate(params.items()) if j != i % len(params)}
        elif choice == "wrap":
            args[what] = {"params": params}
        elif choice == "nan":
            leaves[i] = np.full(np.shape(leaves[i]), np.nan, np.float32)
            args[what] = jax.tree_util.tree_unflatten(tree, leaves)
        else:
            args[what] = data.draw(st.sampled_from([None, {}, [1, 2]]))
    out, err = _works_or_named(lambda: ogpo.init(**args), "ogpo.init")
    if err is None:
        assert isinstance(out, ogpo.OGPOState)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(out.actor)), \
            "init accepted non-finite actor params"


# ------------------------------------------------------------------------------------ files

def _good_file(path, num_demos=3, length=4):
    rng = np.random.default_rng(0)
    demo_io.write_hdf5(path, [{"obs": rng.normal(size=(length, OBS)), "actions": rng.uniform(-1, 1, (length, 2)),
                               "rewards": -np.ones(length), "dones": np.r_[np.zeros(length - 1), 1]}
                              for _ in range(num_demos)], {"env_name": "toy"})


@settings(max_examples=60, **SETTINGS)
@given(st.data())
def test_hdf5_reader_reads_or_raises_dataset_error(tmp_path_factory, data):
    path = str(tmp_path_factory.mktemp("h5") / "demos.hdf5")
    _good_file(path)
    kind = data.draw(st.sampled_from(["truncate", "flip", "drop", "reshape", "nan", "dtype", "attrs", "empty"]))
    if kind in ("truncate", "flip"):
        raw = bytearray(open(path, "rb").read())
        if kind == "truncate":
            raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
        else:
            for _ in range(data.draw(st.integers(1, 8))):
                raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        open(path, "wb").write(bytes(raw))
    else:
        with h5py.File(path, "r+") as f:
            demo = f[f"data/demo_{data.draw(st.integers(0, 2))}"]
            key = data.draw(st.sampled_from(["obs/state", "actions", "rewards", "dones"]))
            if kind == "drop":
                del demo[key]
            elif kind == "attrs":
                f["data"].attrs["env_args"] = data.draw(st.sampled_from(["not json", "[1, 2]", "3"]))
            elif kind == "empty":
                for name in list(f["data"].keys()):
                    del f["data"][name]
            else:
                old = demo[key][()]
                del demo[key]
                new = {"reshape": lambda: old.reshape(-1)[:max(old.size - 1, 1)],
                       "nan": lambda: np.where(np.arange(old.size).reshape(old.shape) == 0, np.nan, old),
                       "dtype": lambda: np.array([b"x"] * len(old))}[kind]()
                demo.create_dataset(key, data=new)
    try:
        episodes, _ = demo_io.read_hdf5(path)
    except demo_io.DatasetError as e:
        assert path in str(e)
        return
    assert episodes and all(np.all(np.isfinite(e["obs"])) and np.all(np.isfinite(e["actions"])) for e in episodes)


def _paths(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict) and k not in ("kwargs",):
            yield from _paths(v, prefix + (k,))
        else:
            yield prefix + (k,)


DEFAULTS = defaults.get_config().to_dict()
FIELDS = sorted(p for p in _paths(DEFAULTS) if p[0] != "env")


@settings(max_examples=80, **SETTINGS)
@given(st.sampled_from(FIELDS), st.one_of(ODD_SCALARS, st.lists(st.integers(-1, 64), max_size=3),
                                          st.integers(-10**6, 10**13), st.floats(-1e9, 1e9)))
def test_config_loader_works_or_names_the_field(tmp_path_factory, field, value):
    """A run's config.json with one field set to a random value: `load_run_config` + `validate`
    (what evaluate.py and a resumed compare.py do) either accept it or name the field."""
    workdir = str(tmp_path_factory.mktemp("cfg"))
    cfg = json.loads(json.dumps(DEFAULTS))
    node = cfg
    for k in field[:-1]:
        node = node[k]
    node[field[-1]] = value
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(cfg, f, allow_nan=True)
    out, err = _works_or_named(lambda: validate(rundir.load_run_config(workdir)), "config loader")
    if err is not None:
        assert field[-1] in str(err) or ".".join(field) in str(err), (field, value, str(err))


@settings(max_examples=60, **SETTINGS)
@given(st.sampled_from(sorted(OGPOConfig.__dataclass_fields__)), st.one_of(ODD_SCALARS, st.lists(st.integers(-1, 8),
                                                                                                  max_size=3)))
def test_algo_config_works_or_names_the_field(field, value):
    out, err = _works_or_named(lambda: AlgoConfig.from_dict({"name": "ogpo", field: value}), "AlgoConfig.from_dict")
    if err is not None and field != "name":
        assert field in str(err), (field, value, str(err))
