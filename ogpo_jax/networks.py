"""Network definitions (Flax Linen): MLP, time embedding, velocity field, critic ensemble.

Params are plain pytrees; modules are stateless descriptions, so everything composes with
`jit`, `vmap` and sharding. Action chunks enter the networks flattened to `H * da`.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    """Plain MLP: Dense -> [LayerNorm] -> activation for every hidden layer."""

    hidden_dims: Sequence[int]
    activation: Callable = nn.gelu
    layer_norm: bool = False
    activate_final: bool = False

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.hidden_dims):
            x = nn.Dense(width, kernel_init=nn.initializers.xavier_uniform())(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
                x = self.activation(x)
        return x


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar time t in [0, 1]: (...,) -> (..., dim)."""

    dim: int = 32
    max_period: float = 10_000.0

    @nn.compact
    def __call__(self, t):
        half = self.dim // 2
        freqs = jnp.exp(-math.log(self.max_period) * jnp.arange(half) / max(half - 1, 1))
        # Scale t from [0, 1] to [0, 1000] as in diffusion time embeddings so low frequencies matter.
        angles = (1000.0 * t)[..., None] * freqs
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class VelocityField(nn.Module):
    """Flow velocity v(obs, x_t, t) over a whole flattened action chunk.

    Shapes: obs (..., obs_dim), x (..., D), t (...,) -> (..., D) with D = H * da.
    """

    action_dim: int
    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    time_emb_dim: int = 32

    @nn.compact
    def __call__(self, obs, x, t):
        t = jnp.broadcast_to(t, x.shape[:-1])
        h = jnp.concatenate([obs, x, SinusoidalEmbedding(self.time_emb_dim)(t)], axis=-1)
        h = MLP(self.hidden_dims, activate_final=True)(h)
        return nn.Dense(self.action_dim, kernel_init=nn.initializers.xavier_uniform())(h)


class Critic(nn.Module):
    """One Q head on concat(obs, flat chunk): (..., obs_dim), (..., D) -> (...,)."""

    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs, chunk):
        h = jnp.concatenate([obs, chunk], axis=-1)
        h = MLP(self.hidden_dims, layer_norm=self.layer_norm, activate_final=True)(h)
        return nn.Dense(1)(h)[..., 0]


class CriticEnsemble(nn.Module):
    """M independent critic heads (params stacked on a leading axis): -> (M, ...)."""

    num_heads: int = 10
    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs, chunk):
        ensemble = nn.vmap(
            Critic,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_heads,
        )
        return ensemble(self.hidden_dims, self.layer_norm)(obs, chunk)


class ValueNet(nn.Module):
    """State value V(obs): (..., obs_dim) -> (...,). Used by the V(s)-baseline ablation."""

    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs):
        h = MLP(self.hidden_dims, layer_norm=self.layer_norm, activate_final=True)(obs)
        return nn.Dense(1)(h)[..., 0]


class OneStepPolicy(nn.Module):
    """Deterministic map (obs, noise z) -> flat chunk (FQL's one-step policy): (..., obs_dim),
    (..., D) -> (..., D), unbounded (callers clip to the action box)."""

    action_dim: int
    hidden_dims: Sequence[int] = (512, 512, 512, 512)

    @nn.compact
    def __call__(self, obs, z):
        h = MLP(self.hidden_dims, activate_final=True)(jnp.concatenate([obs, z], axis=-1))
        return nn.Dense(self.action_dim, kernel_init=nn.initializers.xavier_uniform())(h)


class GaussianPolicy(nn.Module):
    """Diagonal Gaussian pre-tanh head of a SAC policy: inputs (..., n) -> (mean, log_std), each
    (..., action_dim), log_std squashed into [log_std_min, log_std_max]. Several inputs are
    concatenated (EXPO's edit policy reads the state and the base action)."""

    action_dim: int
    hidden_dims: Sequence[int] = (256, 256)
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, *inputs):
        h = MLP(self.hidden_dims, activate_final=True)(jnp.concatenate(inputs, axis=-1))
        mean = nn.Dense(self.action_dim, kernel_init=nn.initializers.xavier_uniform())(h)
        log_std = nn.Dense(self.action_dim, kernel_init=nn.initializers.xavier_uniform())(h)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


class NoiseStd(nn.Module):
    """ReinFlow's noise-injection net: per-dimension std of a denoising step from (obs, x_t, t),
    squashed into [min_std, max_std]: (..., obs_dim), (..., D), (...,) -> (..., D)."""

    action_dim: int
    hidden_dims: Sequence[int] = (256, 256)
    time_emb_dim: int = 32
    min_std: float = 0.08
    max_std: float = 0.14

    @nn.compact
    def __call__(self, obs, x, t):
        t = jnp.broadcast_to(t, x.shape[:-1])
        h = jnp.concatenate([obs, x, SinusoidalEmbedding(self.time_emb_dim)(t)], axis=-1)
        h = MLP(self.hidden_dims, activate_final=True)(h)
        raw = nn.Dense(self.action_dim, kernel_init=nn.initializers.xavier_uniform())(h)
        return self.min_std + 0.5 * (self.max_std - self.min_std) * (jnp.tanh(raw) + 1.0)
