"""ogpo-jax: Off-policy Generative Policy Optimization for flow control policies, in JAX.

    from ogpo_jax import ogpo
    state = ogpo.init(key, obs_dim, (H, da), config)
    state, metrics = jax.jit(ogpo.update)(state, batch, success_batch)
    chunk = ogpo.act(state, obs, key, mode="ode")
"""
from ogpo_jax.algorithms import ogpo
from ogpo_jax.algorithms.config import OGPOConfig

__all__ = ["ogpo", "OGPOConfig"]
__version__ = "0.2.0"
