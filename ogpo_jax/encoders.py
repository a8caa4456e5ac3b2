"""Image encoders for camera observations (`envs.pixels`): a small conv net (default) or a minimal
ViT, trained jointly with flow-matching BC under random-shift augmentation, then frozen.

    enc = PixelEncoder("conv", image_shape=(32, 32, 1), proprio_size=9, features=64)
    params = enc.init(key)
    feats = enc.encode(params, obs)          # obs (B, 32*32*1 + 9) -> (B, 64 + 9)

An observation is the flat vector `envs.pixels` makes: the image, ravelled, then the
proprioception. `encode` returns the image's features (LayerNorm then tanh, so they lie in
[-1, 1] whatever the scene) followed by the proprioception unchanged: what the actor and the
critics read once the encoder is frozen, and what the replay stores.
No pretrained weights: none ship inside a registry wheel, so the encoder learns from the
demonstrations (as the OGPO code trains its small ViT with BC).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("conv", "vit")


def conv3x3_stride2(x, kernel, bias, patches: bool = False):
    """A 3x3, stride-2, 'SAME' convolution: (..., H, W, Cin), kernel (3, 3, Cin, Cout) -> (..., H', W', Cout).

    `patches=True` computes it as nine strided slices and one matmul (im2col). Both ways give the
    same numbers. XLA's CPU backend is ~25x slower at a convolution's gradient inside a
    `lax.scan` than outside one; BC's scanned block takes the gradient, so it uses patches there,
    while acting (forward passes only) uses the convolution."""
    lead = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    if patches:
        h, w = x.shape[1], x.shape[2]
        oh, ow = -(-h // 2), -(-w // 2)
        # XLA's 'SAME' for stride 2, kernel 3: (2 * out + 1 - in) padding, the odd one at the end
        ph, pw = max(2 * oh + 1 - h, 0), max(2 * ow + 1 - w, 0)
        xp = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        cols = [xp[:, i:i + 2 * oh - 1:2, j:j + 2 * ow - 1:2, :] for i in range(3) for j in range(3)]
        y = jnp.concatenate(cols, -1) @ kernel.reshape(-1, kernel.shape[-1])
    else:
        y = jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y + bias
    return y.reshape(lead + y.shape[1:])


class ConvEncoder(nn.Module):
    """Conv(3x3, stride 2) x len(channels) with ReLU, then Dense -> LayerNorm -> tanh:
    (..., H, W, C) -> (..., features). `patches`: see `conv3x3_stride2` (same params, same output)."""

    features: int = 64
    channels: Sequence[int] = (32, 32, 32)
    patches: bool = False

    @nn.compact
    def __call__(self, images):
        x = images
        for i, c in enumerate(self.channels):
            kernel = self.param(f"conv{i}_kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], c))
            bias = self.param(f"conv{i}_bias", nn.initializers.zeros, (c,))
            x = nn.relu(conv3x3_stride2(x, kernel, bias, self.patches))
        x = x.reshape(x.shape[:-3] + (-1,))
        return jnp.tanh(nn.LayerNorm()(nn.Dense(self.features)(x)))


class ViTEncoder(nn.Module):
    """A minimal ViT: non-overlapping `patch` x `patch` patches embedded to `dim` (a reshape and a
    Dense: no convolution, whose gradient is slow inside `lax.scan` on XLA's CPU backend), a
    learned position embedding, `depth` pre-LayerNorm blocks (self-attention with `heads` heads,
    a 2x MLP), mean-pooled, then Dense -> LayerNorm -> tanh: (..., H, W, C) -> (..., features)."""

    features: int = 64
    patch: int = 4
    dim: int = 64
    depth: int = 2
    heads: int = 4
    patches: bool = False            # unused: the same interface as ConvEncoder

    @nn.compact
    def __call__(self, images):
        *lead, h, w, c = images.shape
        p = self.patch
        x = images.reshape(tuple(lead) + (h // p, p, w // p, p, c))
        x = jnp.swapaxes(x, -4, -3).reshape(tuple(lead) + ((h // p) * (w // p), p * p * c))
        x = nn.Dense(self.dim)(x)                                       # (..., tokens, dim)
        x = x + self.param("pos", nn.initializers.normal(0.02), x.shape[-2:])
        for _ in range(self.depth):
            x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(nn.LayerNorm()(x))
            hid = nn.gelu(nn.Dense(2 * self.dim)(nn.LayerNorm()(x)))
            x = x + nn.Dense(self.dim)(hid)
        x = nn.LayerNorm()(x).mean(-2)
        return jnp.tanh(nn.LayerNorm()(nn.Dense(self.features)(x)))


@dataclasses.dataclass(frozen=True)
class PixelEncoder:
    """What reads a flat camera observation: the encoder `kind` ('conv' | 'vit'), the image's
    shape (height, width, channels), the proprioception's size and the number of image features.
    Static and hashable: jitted policies may close over it."""

    kind: str
    image_shape: tuple
    proprio_size: int
    features: int = 64

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"bc.encoder={self.kind!r} must be one of {list(KINDS)}")
        if self.features < 1:
            raise ValueError(f"bc.encoder_features={self.features} must be >= 1")
        h, w, _ = self.image_shape
        if self.kind == "vit" and (h % 4 or w % 4):
            raise ValueError(f"bc.encoder='vit' uses 4x4 patches; the image is {h}x{w} "
                             "(env.kwargs.image_height/image_width must be multiples of 4)")
        object.__setattr__(self, "image_shape", tuple(int(v) for v in self.image_shape))

    @property
    def image_size(self) -> int:
        return int(np.prod(self.image_shape))

    @property
    def feature_size(self) -> int:
        """The size of `encode`'s output: image features then proprioception."""
        return self.features + self.proprio_size

    def module(self, patches: bool = False) -> nn.Module:
        """`patches`: convolutions as im2col matmuls (for gradients inside `lax.scan`: BC)."""
        cls = ConvEncoder if self.kind == "conv" else ViTEncoder
        return cls(self.features, patches=patches)

    def init(self, key):
        return self.module().init(key, jnp.zeros((1,) + self.image_shape))["params"]

    def split(self, obs):
        """Flat observations (..., image_size + proprio_size) -> (images (..., H, W, C), proprio)."""
        if obs.shape[-1] != self.image_size + self.proprio_size:
            raise ValueError(f"observation of size {obs.shape[-1]}, the encoder reads {self.image_size} image + "
                             f"{self.proprio_size} proprio values")
        return obs[..., :self.image_size].reshape(obs.shape[:-1] + self.image_shape), obs[..., self.image_size:]

    def encode(self, params, obs, patches: bool = False):
        """(..., image_size + proprio_size) -> (..., feature_size). `patches`: see `module`."""
        images, proprio = self.split(obs)
        feats = self.module(patches).apply({"params": params}, images)
        return jnp.concatenate([feats, proprio.astype(feats.dtype)], -1)

    def augment(self, obs, key, shift: int):
        """The observations with each image shifted by up to `shift` pixels each way (edge
        padding, then a random crop back to size: DrQ's augmentation); proprio unchanged."""
        if shift <= 0:
            return obs
        images, proprio = self.split(obs)
        lead = images.shape[:-3]
        flat = images.reshape((-1,) + self.image_shape)
        h, w, c = self.image_shape
        padded = jnp.pad(flat, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
        offsets = jax.random.randint(key, (flat.shape[0], 2), 0, 2 * shift + 1)
        crop = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))(padded, offsets)
        return jnp.concatenate([crop.reshape(lead + (self.image_size,)), proprio], -1)


def for_env(bc_cfg, env) -> PixelEncoder | None:
    """The encoder `bc_cfg` describes for `env`'s camera observation, or None for a state one."""
    from ogpo_jax.envs import pixels
    if not pixels.is_pixels(env):
        return None
    return PixelEncoder(bc_cfg.encoder, tuple(env.image_shape), int(env.proprio_size), int(bc_cfg.encoder_features))


__all__ = ["ConvEncoder", "ViTEncoder", "PixelEncoder", "KINDS", "for_env"]
