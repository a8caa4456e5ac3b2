"""ogpo-jax: Off-policy Generative Policy Optimization (OGPO) in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="ogpo-jax",
    version="0.2.0",
    description="Full-finetuning of flow/diffusion robot control policies with OGPO, in JAX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ogpo_jax", "ogpo_jax.*"]),
    package_data={"ogpo_jax.envs.mjx": ["assets/*.xml"]},
    include_package_data=True,
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.5",
        "chex>=0.1.90",
        "orbax-checkpoint>=0.11",
        "ml-collections>=1.0",
        "absl-py>=2.0",
        "tensorboardX>=2.6",
        "h5py>=3.10",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "numpy>=1.26",
        # MJX tasks; mujoco 4.0.0 is an empty meta-package, so stay on 3.x and keep
        # mujoco and mujoco-mjx on the same release
        "mujoco>=3.3.7,<4",
        "mujoco-mjx>=3.3.7,<4",
    ],
    extras_require={
        # the test suite also runs a MuJoCo Playground environment through the brax adapter
        # pytest 9.2 with pytest-xdist <= 3.8 ignores xdist_group marks (pytest-xdist issue 1386):
        # `--dist loadgroup` then splits the MJX modules over both workers, which compile and
        # collect their expert episodes twice (tests/conftest.py refuses that combination)
        # hypothesis: the property tests of bad input (tests/test_bad_input.py)
        "test": ["pytest>=8,<9.2", "pytest-xdist>=3.5", "hypothesis>=6.100", "wandb>=0.19", "playground>=0.2.0"],
        "wandb": ["wandb>=0.19"],
        # brax / MuJoCo Playground environments through ogpo_jax.envs.brax_adapter; the mujoco<4
        # pin above keeps Playground on the same mujoco release as mujoco-mjx
        "playground": ["playground>=0.2.0"],
    },
)
