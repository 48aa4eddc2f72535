"""Recurrent video encoder: a per-frame encoder followed by an RNN (or a temporal conv) over time.

Frame encoders are picked by name from `FRAME_ENCODERS`:
  conv:   a patchify conv + strided 3x3 convs + flatten. Flattening (rather than global pooling)
          keeps *where* things are, which is what trajectories are made of; both convs run as
          matmuls (`PatchConv`, `Im2ColConv`), the fast path on CPU.
  resnet: a ResNet-style encoder (basic blocks, GroupNorm, global pooling) for real video.
  mlp:    flattens each frame (joints, sensor channels, precomputed features) and applies an MLP.

The temporal model is picked by `cell`: 'lstm' or 'gru' (an RNN, optionally bidirectional), or
'conv' (`TemporalConv`: residual dilated 1-D convolutions, the temporal-CNN design of skeleton
action models such as DD-Net).

Every module takes `dtype` (the computation's) and `param_dtype` (the parameters'), both float32 by
default, and passes them to its layers, its frame encoder and its RNN cells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxact.models.backbone import group_norm


def _dtypes(module: nn.Module) -> dict:
    """`dtype` and `param_dtype` of `module`, as keyword arguments for its layers and children."""
    return {"dtype": module.dtype, "param_dtype": module.param_dtype}


def _conv_parameters(module: nn.Module, x, kernel_size: int):
    """`nn.Conv`'s parameters for `module` (`kernel` `[k, k, C, features]`, `bias`), drawn as
    `nn.Conv` draws them, promoted with `x` `[N, H, W, C]` to `module.dtype`: the matmul forms
    of a convolution below load the checkpoints of the `nn.Conv` they replace."""
    k, c = kernel_size, x.shape[-1]
    kernel = module.param("kernel", nn.initializers.lecun_normal(), (k, k, c, module.features),
                          module.param_dtype)
    bias = module.param("bias", nn.initializers.zeros_init(), (module.features,),
                        module.param_dtype)
    return nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)


class PatchConv(nn.Module):
    """A `p x p` stride-`p` VALID convolution computed as one matmul over non-overlapping
    patches: `[N, H, W, C]` -> `[N, H // p, W // p, features]`.

    Its parameters are `nn.Conv`'s (`kernel` `[p, p, C, features]`, `bias`), drawn alike, so it
    replaces one in place; XLA:CPU runs a matmul ~1.5x faster than the strided conv it equals
    (benchmarks/compare_pytorch.py)."""

    features: int
    patch_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        p = self.patch_size
        x, kernel, bias = _conv_parameters(self, x, p)
        rows, cols = h // p, w // p  # VALID: a partial patch at the edge is dropped
        x = x[:, :rows * p, :cols * p].reshape(n, rows, p, cols, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(n, rows, cols, p * p * c) @ kernel.reshape(p * p * c, -1) + bias


class Im2ColConv(nn.Module):
    """A `k x k` SAME convolution with stride `s` computed as one matmul over the `k * k` shifted,
    strided views of the input stacked on channels (im2col): `[N, H, W, C]` ->
    `[N, ceil(H / s), ceil(W / s), features]`.

    Its parameters are `nn.Conv`'s (`kernel` `[k, k, C, features]`, `bias`), drawn alike, and its
    outputs equal `nn.Conv`'s. Why: XLA:CPU computes a strided convolution's kernel gradient by
    transposing the activations to batch-minor and running a slow convolution; as a matmul, the
    gradient is one large dot (benchmarks/compare_pytorch.py)."""

    features: int
    kernel_size: int = 3
    strides: int = 2
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        k, s = self.kernel_size, self.strides
        x, kernel, bias = _conv_parameters(self, x, k)
        rows, cols = -(-h // s), -(-w // s)
        pad_h, pad_w = max((rows - 1) * s + k - h, 0), max((cols - 1) * s + k - w, 0)
        x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                        (0, 0)))  # SAME: the odd pixel of padding goes after, as in lax.conv
        views = [x[:, dy:dy + s * (rows - 1) + 1:s, dx:dx + s * (cols - 1) + 1:s]
                 for dy in range(k) for dx in range(k)]  # kernel order: [dy, dx, C]
        return jnp.concatenate(views, axis=-1) @ kernel.reshape(k * k * c, -1) + bias


CONV_POOLS = ("flatten", "flatten_max", "max")


class ConvFrameEncoder(nn.Module):
    """`[N, H, W, C]` -> `[N, embed_dim]`.

    `pool`: how the last feature map `[N, h, w, c]` reaches the embedding: "flatten" keeps every
    position (where things are: trajectories); "max" takes each channel's maximum over space, a
    position-free "is it anywhere" detector for small cues (a 2-pixel indicator lamp) that a
    position-specific dense layer would have to learn at every position; "flatten_max" both.
    """

    widths: Sequence[int] = (32, 64)
    patch_size: int = 4
    embed_dim: int = 128
    pool: str = "flatten"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dt = _dtypes(self)
        x = PatchConv(self.widths[0], self.patch_size, name="stem", **dt)(x)
        x = nn.relu(x)
        for i, width in enumerate(self.widths[1:]):
            x = nn.relu(Im2ColConv(width, 3, 2, name=f"conv{i}", **dt)(x))
        if self.pool not in CONV_POOLS:
            raise ValueError(f"frame_encoder_kwargs.pool={self.pool!r}: expected one of "
                             f"{CONV_POOLS}")
        pooled = [x.reshape(x.shape[0], -1)] if self.pool.startswith("flatten") else []
        if self.pool.endswith("max"):
            pooled.append(jnp.max(x, axis=(1, 2)))
        features = jnp.concatenate(pooled, axis=-1)
        return nn.relu(nn.Dense(self.embed_dim, name="embed", **dt)(features))


class ResidualBlock(nn.Module):
    """Basic two-conv residual block with GroupNorm (no batch statistics to carry).

    GroupNorm groups come from `backbone.num_groups` (up to 32, at least 4 channels per group,
    dividing `width`), so any width works.
    """

    width: int
    strides: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dt = _dtypes(self)
        y = nn.Conv(self.width, (3, 3), self.strides, name="conv0", **dt)(x)
        y = nn.relu(group_norm(self.width, "norm0", **dt)(y))
        y = group_norm(self.width, "norm1", **dt)(nn.Conv(self.width, (3, 3), name="conv1", **dt)(y))
        if x.shape != y.shape:
            x = nn.Conv(self.width, (1, 1), self.strides, name="proj", **dt)(x)
        return nn.relu(x + y)


class ResNetFrameEncoder(nn.Module):
    """`[N, H, W, C]` -> `[N, embed_dim]`; `stage_sizes=(2, 2, 2, 2)` is ResNet-18's layout."""

    stage_sizes: Sequence[int] = (1, 1, 1)
    width: int = 32
    embed_dim: int = 128
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dt = _dtypes(self)
        x = nn.relu(nn.Conv(self.width, (3, 3), strides=2, name="stem", **dt)(x))
        for stage, blocks in enumerate(self.stage_sizes):
            for b in range(blocks):
                x = ResidualBlock(self.width * 2**stage, strides=2 if stage and not b else 1,
                                  name=f"stage{stage}_block{b}", **dt)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.relu(nn.Dense(self.embed_dim, name="embed", **dt)(x))


class MLPFrameEncoder(nn.Module):
    """`[N, ...]` (any per-frame shape, flattened) -> `[N, embed_dim]`."""

    widths: Sequence[int] = (128,)
    embed_dim: int = 128
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dt = _dtypes(self)
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.widths):
            x = nn.relu(nn.Dense(width, name=f"dense{i}", **dt)(x))
        return nn.relu(nn.Dense(self.embed_dim, name="embed", **dt)(x))


FRAME_ENCODERS = {"conv": ConvFrameEncoder, "resnet": ResNetFrameEncoder, "mlp": MLPFrameEncoder}
RNN_CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}
TEMPORAL_MODELS = (*RNN_CELLS, "conv")


class TemporalConv(nn.Module):
    """`[B, T, F]` -> `[B, T, width]`: residual pre-norm blocks of dilated 1-D convolutions over
    time, zero-padded at both ends ('SAME'), so each output frame sees
    `(kernel_size - 1) * sum(dilations) + 1` frames around it, past and future (as a
    bidirectional RNN sees the whole observed clip). Each convolution runs as one matmul over
    `kernel_size` shifted copies of the sequence, the fast path on CPU.

    Attributes:
      width: channels of every block and of the output.
      kernel_size: taps of each convolution (odd, so 'SAME' is centred).
      dilations: one block per entry, its convolution's dilation.
      dropout_rate: dropout on each block's output when `train=True` (needs a 'dropout' rng).
    """

    width: int
    kernel_size: int = 3
    dilations: Sequence[int] = (1, 2, 4, 8)
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"temporal kernel_size={self.kernel_size}: expected an odd number")
        dt = _dtypes(self)
        t = x.shape[1]
        x = nn.Dense(self.width, name="input", **dt)(x)
        for i, dilation in enumerate(self.dilations):
            y = nn.relu(nn.LayerNorm(name=f"norm{i}", **dt)(x))
            half = (self.kernel_size - 1) // 2 * dilation
            padded = jnp.pad(y, ((0, 0), (half, half), (0, 0)))
            taps = [padded[:, k * dilation:k * dilation + t] for k in range(self.kernel_size)]
            y = nn.Dense(self.width, name=f"conv{i}", **dt)(jnp.concatenate(taps, axis=-1))
            x = x + nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return nn.relu(nn.LayerNorm(name="out_norm", **dt)(x))


class RecurrentEncoder(nn.Module):
    """Per-frame encoder -> RNN -> per-frame features.

    Attributes:
      frame_encoder: a key of `FRAME_ENCODERS`.
      frame_encoder_kwargs: its constructor arguments (widths, embed_dim, ...).
      cell: the temporal model, one of `TEMPORAL_MODELS`: a key of `RNN_CELLS`, or 'conv'
        (`TemporalConv` of width `hidden_size`; `bidirectional` does not apply: it sees both
        ways).
      hidden_size: RNN state size, or the temporal convolutions' width.
      temporal_kernel: taps of each temporal convolution (cell 'conv').
      temporal_dilations: one temporal-conv block per entry, its dilation (cell 'conv').
      feature_dim: size D of the output features.
      bidirectional: also run the RNN backwards over the observed frames, so every frame's feature
        sees the whole observed clip (frames before a decisive moment then vote informed).
      dropout_rate: dropout on the frame embeddings and the RNN outputs when `train=True` (needs a
        'dropout' rng); small datasets such as JHMDB's 433 clips overfit without it.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    frame_encoder: str = "conv"
    frame_encoder_kwargs: dict | None = None
    cell: str = "lstm"
    hidden_size: int = 128
    feature_dim: int = 64
    bidirectional: bool = False
    temporal_kernel: int = 3
    temporal_dilations: Sequence[int] = (1, 2, 4, 8)
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, frames, train: bool = False, track=None):
        """`frames` `[B, T, ...]` -> features `[B, T, D]`. `track` `[B, T, F]`, if given, are
        per-frame features from outside the frames (a tracked target's motion) that join the
        frame embeddings as the RNN's input."""
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
        b, t = frames.shape[:2]
        dt = _dtypes(self)
        encoder = FRAME_ENCODERS[self.frame_encoder](**(self.frame_encoder_kwargs or {}),
                                                     name="frame_encoder", **dt)
        x = encoder(frames.reshape(b * t, *frames.shape[2:])).reshape(b, t, -1)
        if track is not None:
            chex.assert_shape(track, (b, t, None))
            x = jnp.concatenate([x, track.astype(x.dtype)], axis=-1)
        x = dropout(x)

        def cell():
            return RNN_CELLS[self.cell](self.hidden_size, **dt)

        if self.cell not in TEMPORAL_MODELS:
            raise ValueError(f"model.cell={self.cell!r}: expected one of {TEMPORAL_MODELS}")
        if self.cell == "conv":
            x = TemporalConv(self.hidden_size, self.temporal_kernel,
                             tuple(self.temporal_dilations), self.dropout_rate, name="tcn",
                             **dt)(x, train)
        elif self.bidirectional:
            x = nn.Bidirectional(nn.RNN(cell()), nn.RNN(cell()), name="birnn")(x)
        else:
            x = nn.RNN(cell(), name="rnn")(x)
        feats = nn.Dense(self.feature_dim, name="project", **dt)(dropout(x))
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
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    num_classes: int
    encoder: dict
    normalize_features: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs, train: bool = False):
        """`inputs`: frames `[B, T, ...]`, or `{"video": frames, "track": [B, T, F]}` (see
        `RecurrentEncoder`) -> (features `[B, T, D]`, logits `[B, T, C]`), both float32
        whatever `dtype` is: the losses' softmax and the memory bank's distances (differences of
        nearby unit vectors) need float32's mantissa, and the bank stores float32."""
        dt = _dtypes(self)
        frames, track = ((inputs["video"], inputs["track"]) if isinstance(inputs, Mapping)
                         else (inputs, None))
        feats = RecurrentEncoder(**self.encoder, name="encoder", **dt)(frames, train, track)
        logits = nn.Dense(self.num_classes, name="head", **dt)(nn.relu(feats))
        feats, logits = feats.astype(jnp.float32), logits.astype(jnp.float32)
        if self.normalize_features:
            feats = feats * jax.lax.rsqrt(jnp.sum(feats**2, axis=-1, keepdims=True) + 1e-12)
        return feats, logits
