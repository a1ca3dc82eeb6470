"""Vision Transformers ViT-Ti/16, ViT-S/16, ViT-B/16 (Dosovitskiy et al., 2021) with timm's
``vit_*_patch16_224`` semantics: class token, learned position embedding, pre-norm blocks, final LayerNorm and the
class token's output as the pooled feature.
"""

import math
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from analytic.backbones.convert import KeyLayout, ModulePath
from analytic.backbones.layers import HIGHEST, conv, dense, layer_norm

LAYER_NORM_EPSILON = 1e-6


class Attention(nn.Module):
    r"""Multi-head self-attention with one fused ``qkv`` projection, as timm stores it.

    .. math::
        \mathrm{head}_h = \mathrm{softmax}\left(\frac{Q_h K_h^\top}{\sqrt{d_h}}\right) V_h, \qquad
        \mathrm{out} = [\mathrm{head}_1, \dots, \mathrm{head}_H] \, W_\mathrm{proj} + b_\mathrm{proj}
    """

    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, tokens, width = x.shape
        head_width = width // self.num_heads
        qkv = dense(3 * width, name="qkv")(x).reshape(batch, tokens, 3, self.num_heads, head_width)
        # Heads before tokens: batched matrix products over (batch, head) run 3x faster on XLA:CPU than over
        # a head axis between the token and feature axes.
        queries, keys, values = qkv.transpose(2, 0, 3, 1, 4)
        logits = jnp.einsum("bhqd,bhkd->bhqk", queries, keys, precision=HIGHEST) / math.sqrt(head_width)
        attended = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(logits, axis=-1), values, precision=HIGHEST)
        return dense(width, name="proj")(attended.transpose(0, 2, 1, 3).reshape(batch, tokens, width))


class Mlp(nn.Module):
    """Two linear layers with an exact (erf) GELU between them."""

    hidden_width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = nn.gelu(dense(self.hidden_width, name="fc1")(x), approximate=False)
        return dense(x.shape[-1], name="fc2")(hidden)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    num_heads: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + Attention(self.num_heads, name="attn")(layer_norm(epsilon=LAYER_NORM_EPSILON, name="norm1")(x))
        mlp = Mlp(self.mlp_ratio * x.shape[-1], name="mlp")
        return x + mlp(layer_norm(epsilon=LAYER_NORM_EPSILON, name="norm2")(x))


class VisionTransformer(nn.Module):
    """ViT feature extractor: NHWC images of ``image_size`` pixels -> class-token features ``(B, width)``.

    ``image_size`` fixes the length of the position embedding, so inputs must have exactly that size.
    """

    width: int
    depth: int
    num_heads: int
    image_size: int = 224
    patch_size: int = 16

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        if images.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(
                f"this ViT takes {self.image_size}x{self.image_size} images (its position embedding's size), "
                f"got {images.shape[1]}x{images.shape[2]}"
            )
        patches = conv(
            self.width, self.patch_size, stride=self.patch_size, padding="VALID", use_bias=True, name="patch_embed"
        )(images)
        tokens = patches.reshape(patches.shape[0], -1, self.width)
        class_token = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, self.width))
        position = self.param("pos_embed", nn.initializers.normal(0.02), (1, tokens.shape[1] + 1, self.width))
        x = jnp.concatenate([jnp.broadcast_to(class_token, (tokens.shape[0], 1, self.width)), tokens], axis=1)
        x = x + position
        for index in range(self.depth):
            x = Block(self.num_heads, name=f"blocks_{index}")(x)
        return layer_norm(epsilon=LAYER_NORM_EPSILON, name="norm")(x)[:, 0]


def vit_tiny(image_size: int = 224) -> VisionTransformer:
    """ViT-Ti/16: width 192, 12 blocks, 3 heads."""
    return VisionTransformer(192, 12, 3, image_size)


def vit_small(image_size: int = 224) -> VisionTransformer:
    """ViT-S/16: width 384, 12 blocks, 6 heads."""
    return VisionTransformer(384, 12, 6, image_size)


def vit_base(image_size: int = 224) -> VisionTransformer:
    """ViT-B/16: width 768, 12 blocks, 12 heads."""
    return VisionTransformer(768, 12, 12, image_size)


def image_size_of(state_dict: Mapping[str, Any], patch_size: int = 16) -> int:
    """The image side a ViT state dict was trained for, read from its position embedding's length (1 + grid²)."""
    patches = state_dict["pos_embed"].shape[1] - 1
    grid = math.isqrt(patches)
    if grid * grid != patches:
        raise ValueError(f"pos_embed holds {patches} patch positions, not a square grid")
    return grid * patch_size


def torch_prefix(module_path: ModulePath) -> str:
    """Flax module path -> timm prefix (``blocks_3/attn/qkv`` -> ``blocks.3.attn.qkv``)."""
    renamed = [re.sub(r"^blocks_(\d+)$", r"blocks.\1", part) for part in module_path]
    return ".".join(renamed).replace("patch_embed", "patch_embed.proj")


TORCH_LAYOUTS = (KeyLayout("timm", "cls_token", lambda module: torch_prefix),)
