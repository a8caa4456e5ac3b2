"""Base configuration: every field with its default, defined in `ogpo_jax/training/defaults.py`
(so that `validate` can check configs without this directory). Task configs start from this.

    python experiments/train.py --config=configs/toy.py --config.algo.group_size=8
"""
from ogpo_jax.training.defaults import get_config  # noqa: F401
