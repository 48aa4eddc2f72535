"""Video ResNet with an isolated keyframe: (2+1)D residual blocks, GroupNorm, any depth/width.

Every block is a 2D ResNet block applied to each frame independently, plus one *temporal mixing*
step (a residual 1D convolution over T) after the block's first convolution, as in R(2+1)D.

Keyframe isolation (the keyframe is frame `T // 2`, as sampled by `KeyframeTransform`):
  * Before each temporal mixing step the keyframe is taken out of the sequence; the step runs on
    the remaining `T - 1` frames as one contiguous sequence (frames `k - 1` and `k + 1` become
    neighbours), so no non-key frame ever reads the keyframe.
  * After the step the keyframe is re-inserted at index `k` with its pre-mixing features, i.e. its
    temporal residual is exactly zero.
  * Everything else (convolutions, GroupNorm, ReLU, stem, pooling) acts on each frame alone.
Hence the keyframe slot of every stage is exactly what the same 2D ResNet computes on the keyframe
alone (a `T = 1` clip gives the same keyframe features up to float rounding), and it cannot
depend on any other frame. Non-key frames carry temporal context from the other non-key frames.
The localizer sees only keyframe features (sharp, not blurred by motion); the action head sees
the whole 3D map.

The temporal residual is `y = relu(x + GroupNorm(TConv(x)))` with the norm's scale initialised to
zero: `x` comes from a ReLU, so at initialisation every frame is treated like the keyframe, and
the keyframe's re-inserted features `x` are what a zero residual would give anyway. The temporal
convolution is a shifted-concat + matmul (a `Dense` over `k * C` channels): matmuls are the fast
path of XLA on CPU.

Sizes (`stage_sizes`, `widths`, `block`, `stem`, ...) are config fields. The tiny default
(4 x 4 patchify stem, one basic block per stage, widths 16-32-48-64, strides 4-8-8-8 with
dilations 2 and 4 in the last two stages) is meant for CPU training on 128 x 128 clips: people
there are 10-20 px wide, so the last 3D map (the actor features) is kept at stride 8 (16 x 16)
and the last two stages are narrow to pay for it (the detector's cost per clip:
docs/results_classroom.md). `RESNET50` gives a ResNet-50-sized (3, 4, 6, 3) bottleneck network with
a 7 x 7 stem, a stride-16 dilated last stage and SlowFast's temporal kernels (1, 1, 3, 3).

Every module takes `dtype` (the computation's) and `param_dtype` (the parameters'), both float32 by
default; GroupNorm statistics are computed in float32 whatever `dtype` is (flax does that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

# A ResNet-50-sized backbone: pass as `VideoResNet(**RESNET50)` (or update a config with it).
RESNET50 = dict(
    stem="resnet",
    stem_width=64,
    block="bottleneck",
    stage_sizes=(3, 4, 6, 3),
    widths=(256, 512, 1024, 2048),
    strides=(1, 2, 2, 1),
    dilations=(1, 1, 1, 2),
    temporal_kernels=(1, 1, 3, 3),
)


def num_groups(channels: int) -> int:
    """GroupNorm groups: up to 32, at least 4 channels per group, dividing `channels`."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return groups


def group_norm(channels: int, name: str, zero_scale: bool = False, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32) -> nn.GroupNorm:
    """GroupNorm over `channels` with `num_groups(channels)` groups (scale initialised to 0 or 1)."""
    init = nn.initializers.zeros if zero_scale else nn.initializers.ones
    return nn.GroupNorm(num_groups=num_groups(channels), scale_init=init, dtype=dtype,
                        param_dtype=param_dtype, name=name)


def _dtypes(module: nn.Module) -> dict:
    """`dtype` and `param_dtype` of `module`, as keyword arguments for its layers and children."""
    return {"dtype": module.dtype, "param_dtype": module.param_dtype}


def _fold(x: jax.Array) -> jax.Array:
    """`[B, T, H, W, C]` -> `[B * T, H, W, C]`: per-frame ops never mix frames."""
    return x.reshape(-1, *x.shape[2:])


def _unfold(x: jax.Array, t: int) -> jax.Array:
    return x.reshape(-1, t, *x.shape[1:])


class TemporalMixing(nn.Module):
    """Residual temporal convolution with keyframe isolation: `[B, T, H, W, C]` -> same shape.

    Attributes:
      kernel_size: temporal extent (odd; zero padding at the sequence ends).
      isolate_keyframe: skip the keyframe `T // 2` (see the module docstring); False mixes all
        frames, keyframe included (the ablation without isolation).
    """

    kernel_size: int = 3
    isolate_keyframe: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        key = t // 2
        if self.isolate_keyframe:
            ctx = jnp.concatenate([x[:, :key], x[:, key + 1:]], axis=1)  # [B, T - 1, H, W, C]
        else:
            ctx = x
        n = ctx.shape[1]
        pad = self.kernel_size // 2
        padded = jnp.pad(ctx, ((0, 0), (pad, self.kernel_size - 1 - pad), (0, 0), (0, 0), (0, 0)))
        taps = jnp.concatenate([padded[:, i:i + n] for i in range(self.kernel_size)], axis=-1)
        mixed = nn.Dense(c, use_bias=False, name="conv", **_dtypes(self))(taps)
        mixed = _unfold(group_norm(c, "norm", zero_scale=True, **_dtypes(self))(_fold(mixed)), n)
        out = nn.relu(ctx + mixed)
        if self.isolate_keyframe:
            out = jnp.concatenate([out[:, :key], x[:, key:key + 1], out[:, key:]], axis=1)
        return out


class BasicBlock(nn.Module):
    """Two 3 x 3 convs (ResNet-18/34 block) with temporal mixing after the first.

    `[B, T, H, W, C_in]` -> `[B, T, H / stride, W / stride, width]`.
    """

    width: int
    stride: int = 1
    dilation: int = 1
    temporal_kernel: int = 3
    isolate_keyframe: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        t = x.shape[1]
        xf = _fold(x)
        dt = _dtypes(self)
        y = nn.Conv(self.width, (3, 3), self.stride, use_bias=False, name="conv0", **dt)(xf)
        y = nn.relu(group_norm(self.width, "norm0", **dt)(y))
        y = _fold(_temporal(self, _unfold(y, t)))
        y = nn.Conv(self.width, (3, 3), kernel_dilation=self.dilation, use_bias=False,
                    name="conv1", **dt)(y)
        y = group_norm(self.width, "norm1", zero_scale=True, **dt)(y)
        return _unfold(nn.relu(_shortcut(self, xf, y) + y), t)


class BottleneckBlock(nn.Module):
    """1 x 1 -> 3 x 3 -> 1 x 1 (ResNet-50 block), temporal mixing after the first 1 x 1.

    `[B, T, H, W, C_in]` -> `[B, T, H / stride, W / stride, width]`, inner width `width / 4`.
    """

    width: int
    stride: int = 1
    dilation: int = 1
    temporal_kernel: int = 3
    isolate_keyframe: bool = True
    expansion: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        t = x.shape[1]
        inner = self.width // self.expansion
        xf = _fold(x)
        dt = _dtypes(self)
        y = nn.Conv(inner, (1, 1), use_bias=False, name="conv0", **dt)(xf)
        y = nn.relu(group_norm(inner, "norm0", **dt)(y))
        y = _fold(_temporal(self, _unfold(y, t)))
        y = nn.Conv(inner, (3, 3), self.stride, kernel_dilation=self.dilation, use_bias=False,
                    name="conv1", **dt)(y)
        y = nn.relu(group_norm(inner, "norm1", **dt)(y))
        y = nn.Conv(self.width, (1, 1), use_bias=False, name="conv2", **dt)(y)
        y = group_norm(self.width, "norm2", zero_scale=True, **dt)(y)
        return _unfold(nn.relu(_shortcut(self, xf, y) + y), t)


def _temporal(block, y: jax.Array) -> jax.Array:
    # A 1-tap "temporal" conv would only be another per-frame 1 x 1 conv; T = 1 has nothing to mix.
    if block.temporal_kernel <= 1 or y.shape[1] <= 1:
        return y
    return TemporalMixing(block.temporal_kernel, block.isolate_keyframe, name="temporal",
                          **_dtypes(block))(y)


def _shortcut(block, xf: jax.Array, y: jax.Array) -> jax.Array:
    if xf.shape == y.shape:
        return xf
    xf = nn.Conv(block.width, (1, 1), block.stride, use_bias=False, name="proj",
                 **_dtypes(block))(xf)
    return group_norm(block.width, "proj_norm", **_dtypes(block))(xf)


BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


class PatchifyStem(nn.Module):
    """Non-overlapping `p x p` patches -> Dense (a strided conv written as one matmul).

    `[N, H, W, 3]` -> `[N, H / p, W / p, width]`.
    """

    width: int
    patch_size: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"frame size {h}x{w} is not divisible by patch_size={p}")
        x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        x = nn.Dense(self.width, use_bias=False, name="proj", **_dtypes(self))(
            x.reshape(n, h // p, w // p, -1))
        return nn.relu(group_norm(self.width, "norm", **_dtypes(self))(x))


class ResNetStem(nn.Module):
    """7 x 7 stride-2 conv + 3 x 3 stride-2 max pool: `[N, H, W, 3]` -> `[N, H / 4, W / 4, width]`."""

    width: int = 64
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.width, (7, 7), 2, use_bias=False, name="conv", **_dtypes(self))(x)
        x = nn.relu(group_norm(self.width, "norm", **_dtypes(self))(x))
        return nn.max_pool(x, (3, 3), (2, 2), padding="SAME")


class VideoResNet(nn.Module):
    """Video ResNet returning the keyframe's multi-level features and the last 3D feature map.

    Attributes:
      stem: "patchify" (cheap `patch_size` x `patch_size` patches, the CPU default) or "resnet"
        (7 x 7 stride-2 conv + max pool); both reduce the frame by 4 for `patch_size=4`.
      stem_width: channels out of the stem.
      patch_size: patch side of the patchify stem.
      block: a key of `BLOCKS` ("basic" or "bottleneck").
      stage_sizes: number of blocks per stage.
      widths: output channels per stage.
      strides: spatial stride of each stage's first block.
      dilations: dilation of each stage's 3 x 3 convs (a stride-1, dilation-2 last stage keeps
        the last map at stride 16 with the receptive field of stride 32, as in SlowFast on AVA).
      temporal_kernels: temporal kernel per stage; 1 disables temporal mixing in that stage.
      isolate_keyframe: keep the keyframe out of every temporal mixing step (module docstring).
      dtype: computation dtype (e.g. bfloat16 on accelerators).
      param_dtype: parameter dtype.
    """

    # Allowed values of the string fields, for config checks before anything is traced.
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"stem": ("patchify", "resnet"),
                                                     "block": tuple(BLOCKS)}

    stem: str = "patchify"
    stem_width: int = 16
    patch_size: int = 4
    block: str = "basic"
    stage_sizes: Sequence[int] = (1, 1, 1, 1)
    widths: Sequence[int] = (16, 32, 48, 64)
    strides: Sequence[int] = (1, 2, 1, 1)
    dilations: Sequence[int] = (1, 1, 2, 4)
    temporal_kernels: Sequence[int] = (3, 3, 3, 3)
    isolate_keyframe: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        """`video` `[B, T, H, W, 3]`, keyframe at `T // 2`.

        Returns:
          `(keyframe_features, features_3d)`: a list with one `[B, H_s, W_s, widths[s]]` per stage
          (the keyframe slot of each stage's output, finest first), and the last stage's output
          `[B, T, H_last, W_last, widths[-1]]`.
        """
        lengths = {len(self.stage_sizes), len(self.widths), len(self.strides),
                   len(self.dilations), len(self.temporal_kernels)}
        if len(lengths) != 1:
            raise ValueError("stage_sizes, widths, strides, dilations and temporal_kernels must "
                             f"have one entry per stage, got lengths {sorted(lengths)}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
        b, t = video.shape[:2]
        frames = _fold(video)
        if self.stem == "patchify":
            x = PatchifyStem(self.stem_width, self.patch_size, name="stem", **_dtypes(self))(frames)
        elif self.stem == "resnet":
            x = ResNetStem(self.stem_width, name="stem", **_dtypes(self))(frames)
        else:
            raise ValueError(f"stem must be 'patchify' or 'resnet', got {self.stem!r}")
        x = _unfold(x, t)
        block_cls = BLOCKS[self.block]
        keyframe_features = []
        for s, (size, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            for i in range(size):
                x = block_cls(width, self.strides[s] if i == 0 else 1, self.dilations[s],
                              self.temporal_kernels[s], self.isolate_keyframe,
                              name=f"stage{s}_block{i}", **_dtypes(self))(x)
            keyframe_features.append(x[:, t // 2])
        chex.assert_shape(x, (b, t, None, None, self.widths[-1]))
        return keyframe_features, x
