"""Recurrent video encoder: a per-frame encoder followed by an RNN over time.

Frame encoders are picked by name from `FRAME_ENCODERS`:
  conv:   a patchify conv + strided 3x3 convs + flatten. Flattening (rather than global pooling)
          keeps *where* things are, which is what trajectories are made of; the patchify stem
          keeps most FLOPs in matmuls, the fast path on CPU.
  resnet: a ResNet-style encoder (basic blocks, GroupNorm, global pooling) for real video.
  mlp:    flattens each frame (joints, sensor channels, precomputed features) and applies an MLP.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


class ConvFrameEncoder(nn.Module):
    """`[N, H, W, C]` -> `[N, embed_dim]`."""

    widths: Sequence[int] = (32, 64)
    patch_size: int = 4
    embed_dim: int = 128

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.widths[0], (self.patch_size,) * 2, strides=self.patch_size,
                    padding="VALID", name="stem")(x)
        x = nn.relu(x)
        for i, width in enumerate(self.widths[1:]):
            x = nn.relu(nn.Conv(width, (3, 3), strides=2, name=f"conv{i}")(x))
        x = x.reshape(x.shape[0], -1)
        return nn.relu(nn.Dense(self.embed_dim, name="embed")(x))


class ResidualBlock(nn.Module):
    """Basic two-conv residual block with GroupNorm (no batch statistics to carry)."""

    width: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        norm = lambda name: nn.GroupNorm(num_groups=min(32, self.width // 4), name=name)
        y = nn.relu(norm("norm0")(nn.Conv(self.width, (3, 3), self.strides, name="conv0")(x)))
        y = norm("norm1")(nn.Conv(self.width, (3, 3), name="conv1")(y))
        if x.shape != y.shape:
            x = nn.Conv(self.width, (1, 1), self.strides, name="proj")(x)
        return nn.relu(x + y)


class ResNetFrameEncoder(nn.Module):
    """`[N, H, W, C]` -> `[N, embed_dim]`; `stage_sizes=(2, 2, 2, 2)` is ResNet-18's layout."""

    stage_sizes: Sequence[int] = (1, 1, 1)
    width: int = 32
    embed_dim: int = 128

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.width, (3, 3), strides=2, name="stem")(x))
        for stage, blocks in enumerate(self.stage_sizes):
            for b in range(blocks):
                x = ResidualBlock(self.width * 2**stage, strides=2 if stage and not b else 1,
                                  name=f"stage{stage}_block{b}")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.relu(nn.Dense(self.embed_dim, name="embed")(x))


class MLPFrameEncoder(nn.Module):
    """`[N, ...]` (any per-frame shape, flattened) -> `[N, embed_dim]`."""

    widths: Sequence[int] = (128,)
    embed_dim: int = 128

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.widths):
            x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
        return nn.relu(nn.Dense(self.embed_dim, name="embed")(x))


FRAME_ENCODERS = {"conv": ConvFrameEncoder, "resnet": ResNetFrameEncoder, "mlp": MLPFrameEncoder}
RNN_CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


class RecurrentEncoder(nn.Module):
    """Per-frame encoder -> RNN -> per-frame features.

    Attributes:
      frame_encoder: a key of `FRAME_ENCODERS`.
      frame_encoder_kwargs: its constructor arguments (widths, embed_dim, ...).
      cell: a key of `RNN_CELLS`.
      hidden_size: RNN state size.
      feature_dim: size D of the output features.
      bidirectional: also run the RNN backwards over the observed frames, so every frame's feature
        sees the whole observed clip (frames before a decisive moment then vote informed).
      dropout_rate: dropout on the frame embeddings and the RNN outputs when `train=True` (needs a
        'dropout' rng); small datasets such as JHMDB's 433 clips overfit without it.
    """

    frame_encoder: str = "conv"
    frame_encoder_kwargs: dict | None = None
    cell: str = "lstm"
    hidden_size: int = 128
    feature_dim: int = 64
    bidirectional: bool = False
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, frames, train: bool = False):
        """`frames` `[B, T, ...]` -> features `[B, T, D]`."""
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
        b, t = frames.shape[:2]
        encoder = FRAME_ENCODERS[self.frame_encoder](**(self.frame_encoder_kwargs or {}),
                                                     name="frame_encoder")
        x = encoder(frames.reshape(b * t, *frames.shape[2:])).reshape(b, t, -1)
        x = dropout(x)
        cell = RNN_CELLS[self.cell]
        if self.bidirectional:
            x = nn.Bidirectional(nn.RNN(cell(self.hidden_size)), nn.RNN(cell(self.hidden_size)),
                                 name="birnn")(x)
        else:
            x = nn.RNN(cell(self.hidden_size), name="rnn")(x)
        feats = nn.Dense(self.feature_dim, name="project")(dropout(x))
        chex.assert_shape(feats, (b, t, self.feature_dim))
        return feats


class VideoClassifierNet(nn.Module):
    """RecurrentEncoder plus a softmax head, shared by the memory method and its baseline.

    The memory classifier uses `features`; the auxiliary pre-training and the softmax baseline use
    `logits`. One parameter tree serves both, so a baseline forks from the same pre-training.

    Attributes:
      num_classes: C.
      encoder: `RecurrentEncoder` arguments.
      normalize_features: return unit-length features (the head still reads the raw ones, so
        pre-training and the baseline are unchanged); distances between them are then bounded,
        which makes the memory loss's temperature and margin mean the same at any feature scale.
    """

    num_classes: int
    encoder: dict
    normalize_features: bool = False

    @nn.compact
    def __call__(self, frames, train: bool = False):
        """`frames` `[B, T, ...]` -> (features `[B, T, D]`, logits `[B, T, C]`)."""
        feats = RecurrentEncoder(**self.encoder, name="encoder")(frames, train)
        logits = nn.Dense(self.num_classes, name="head")(nn.relu(feats))
        if self.normalize_features:
            feats = feats * jax.lax.rsqrt(jnp.sum(feats**2, axis=-1, keepdims=True) + 1e-12)
        return feats, logits
