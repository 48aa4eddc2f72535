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

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxact.models.channel_gate import KEEP, REUSE, Gate, GatePolicy, select_channels
from jaxact.models.gumbel import gumbel_one_hot, hard_one_hot

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

    With `gate`, a policy on the pooled input (the non-key frames only, so the keyframe stays
    isolated) decides per clip and per GroupNorm group of channels: keep (the mixed output
    `relu(x + GN(TConv(x)))`), reuse (the input `x`: the temporal conv is skipped for those
    channels) or drop (0). Deciding before computing is what lets the compact path
    (`budget`) skip the skipped channels' convolution; deciding per norm group keeps its
    GroupNorm statistics exact there. See `jaxact.models.channel_gate`.

    Attributes:
      kernel_size: temporal extent (odd; zero padding at the sequence ends).
      isolate_keyframe: skip the keyframe `T // 2` (see the module docstring); False mixes all
        frames, keyframe included (the ablation without isolation).
      gate: gate the channels (keep / reuse / drop).
      gate_hidden: hidden width of the gate's policy.
    """

    kernel_size: int = 3
    isolate_keyframe: bool = True
    gate: bool = False
    gate_hidden: int = 32
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, rng: jax.Array | None = None, temperature=1.0,
                 budget: float | None = None) -> tuple[jax.Array, Gate | None]:
        """`x` `[B, T, H, W, C]` -> (`[B, T, H, W, C]`, the layer's `Gate` or None).

        rng: Gumbel noise of the gate's choices in training; None: argmax.
        budget: the compact inference path (gate on, no rng): the fraction of norm groups whose
          temporal conv is computed per clip (those with the highest keep logits); a kept group
          beyond it is reused instead.
        """
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
        conv = nn.Dense(c, use_bias=False, name="conv", **_dtypes(self))
        norm = group_norm(c, "norm", zero_scale=True, **_dtypes(self))
        gate = None
        if not self.gate:
            out = nn.relu(ctx + _unfold(norm(_fold(conv(taps))), n))
        else:
            groups = num_groups(c)
            logits = GatePolicy(groups, self.gate_hidden, name="gate", **_dtypes(self))(
                jnp.mean(ctx, axis=(1, 2, 3)))  # [B, G, 3]
            if budget is None:
                chosen = gumbel_one_hot(logits, rng, temperature)
                computed = nn.relu(ctx + _unfold(norm(_fold(conv(taps))), n))
                per_channel = jnp.repeat(chosen, c // groups, axis=-2)  # [B, C, 3]
                out = select_channels(per_channel[:, None, None], computed, ctx)
            else:
                if rng is not None:
                    raise ValueError("the compact path (budget=) is for evaluation: no rng")
                chosen = hard_one_hot(logits)
                out = self._compact(ctx, taps, logits, chosen, budget)
            gate = Gate(jnp.repeat(chosen, c // groups, axis=-2),
                        2.0 * n * h * w * self.kernel_size * c * c)
        if self.isolate_keyframe:
            out = jnp.concatenate([out[:, :key], x[:, key:key + 1], out[:, key:]], axis=1)
        return out, gate

    def _compact(self, ctx, taps, logits, chosen, budget: float) -> jax.Array:
        """Only the `ceil(budget * G)` groups with the highest keep logits are convolved."""
        c = ctx.shape[-1]
        groups = logits.shape[-2]
        per = c // groups
        k = min(groups, max(1, math.ceil(budget * groups)))
        _, top = jax.lax.top_k(logits[..., KEEP] - jnp.max(logits, axis=-1), k)  # [B, k]
        channels = (top[..., None] * per + jnp.arange(per)).reshape(top.shape[0], k * per)
        params = self.variables["params"]
        kernel = jnp.moveaxis(params["conv"]["kernel"][:, channels], 0, 1)  # [B, kC_in, k * per]
        taps, kernel = nn.dtypes.promote_dtype(taps, kernel, dtype=self.dtype)
        mixed = jnp.einsum("bnhwi,bio->bnhwo", taps, kernel)
        # GroupNorm of the picked groups: per frame over (H, W, channels of the group).
        shape = mixed.shape
        grouped = mixed.reshape(*shape[:-1], k, per).astype(jnp.float32)
        mean = jnp.mean(grouped, axis=(2, 3, 5), keepdims=True)
        var = jnp.mean(jnp.square(grouped), axis=(2, 3, 5), keepdims=True) - jnp.square(mean)
        normed = ((grouped - mean) * jax.lax.rsqrt(var + 1e-6)).reshape(shape)
        scale = params["norm"]["scale"][channels][:, None, None, None]
        bias = params["norm"]["bias"][channels][:, None, None, None]
        picked_ctx = jnp.take_along_axis(ctx, channels[:, None, None, None], axis=-1)
        computed = nn.relu(picked_ctx + (normed * scale + bias).astype(ctx.dtype))
        per_channel = jnp.repeat(chosen, per, axis=-2)  # [B, C, 3]
        covered = jax.vmap(lambda idx: jnp.zeros(c, bool).at[idx].set(True))(channels)
        keep = (per_channel[..., KEEP] > 0) & covered
        reuse = (per_channel[..., REUSE] > 0) | ((per_channel[..., KEEP] > 0) & ~covered)
        out = jnp.where(reuse[:, None, None, None], ctx, 0.0).astype(ctx.dtype)
        placed = jax.vmap(lambda o, idx, v: o.at[..., idx].set(v))(out, channels, computed)
        return jnp.where(keep[:, None, None, None], placed, out)


class BasicBlock(nn.Module):
    """Two 3 x 3 convs (ResNet-18/34 block) with temporal mixing after the first.

    `[B, T, H, W, C_in]` -> (`[B, T, H / stride, W / stride, width]`, the mixing's `Gate` or
    None); `rng`, `temperature`, `budget`: see `TemporalMixing`.
    """

    width: int
    stride: int = 1
    dilation: int = 1
    temporal_kernel: int = 3
    isolate_keyframe: bool = True
    gate: bool = False
    gate_hidden: int = 32
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, rng=None, temperature=1.0, budget=None):
        t = x.shape[1]
        xf = _fold(x)
        dt = _dtypes(self)
        y = nn.Conv(self.width, (3, 3), self.stride, use_bias=False, name="conv0", **dt)(xf)
        y = nn.relu(group_norm(self.width, "norm0", **dt)(y))
        y, gate = _temporal(self, _unfold(y, t), rng, temperature, budget)
        y = _fold(y)
        y = nn.Conv(self.width, (3, 3), kernel_dilation=self.dilation, use_bias=False,
                    name="conv1", **dt)(y)
        y = group_norm(self.width, "norm1", zero_scale=True, **dt)(y)
        return _unfold(nn.relu(_shortcut(self, xf, y) + y), t), gate


class BottleneckBlock(nn.Module):
    """1 x 1 -> 3 x 3 -> 1 x 1 (ResNet-50 block), temporal mixing after the first 1 x 1.

    `[B, T, H, W, C_in]` -> (`[B, T, H / stride, W / stride, width]`, inner width `width / 4`,
    the mixing's `Gate` or None); `rng`, `temperature`, `budget`: see `TemporalMixing`.
    """

    width: int
    stride: int = 1
    dilation: int = 1
    temporal_kernel: int = 3
    isolate_keyframe: bool = True
    gate: bool = False
    gate_hidden: int = 32
    expansion: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, rng=None, temperature=1.0, budget=None):
        t = x.shape[1]
        inner = self.width // self.expansion
        xf = _fold(x)
        dt = _dtypes(self)
        y = nn.Conv(inner, (1, 1), use_bias=False, name="conv0", **dt)(xf)
        y = nn.relu(group_norm(inner, "norm0", **dt)(y))
        y, gate = _temporal(self, _unfold(y, t), rng, temperature, budget)
        y = _fold(y)
        y = nn.Conv(inner, (3, 3), self.stride, kernel_dilation=self.dilation, use_bias=False,
                    name="conv1", **dt)(y)
        y = nn.relu(group_norm(inner, "norm1", **dt)(y))
        y = nn.Conv(self.width, (1, 1), use_bias=False, name="conv2", **dt)(y)
        y = group_norm(self.width, "norm2", zero_scale=True, **dt)(y)
        return _unfold(nn.relu(_shortcut(self, xf, y) + y), t), gate


def _temporal(block, y: jax.Array, rng, temperature, budget):
    # A 1-tap "temporal" conv would only be another per-frame 1 x 1 conv; T = 1 has nothing to mix.
    if block.temporal_kernel <= 1 or y.shape[1] <= 1:
        return y, None
    return TemporalMixing(block.temporal_kernel, block.isolate_keyframe, block.gate,
                          block.gate_hidden, name="temporal", **_dtypes(block))(
        y, rng, temperature, budget)


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
      gate: gate every temporal mixing step's channels (keep / reuse / drop, `TemporalMixing`).
      gate_hidden: hidden width of each gate's policy.
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
    gate: bool = False
    gate_hidden: int = 32
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, video: jax.Array, rng: jax.Array | None = None, temperature=1.0,
                 gate_budget: float | None = None):
        """`video` `[B, T, H, W, 3]`, keyframe at `T // 2`; `rng`, `temperature` and
        `gate_budget` reach the gated temporal mixing steps (`TemporalMixing`).

        Returns:
          `(keyframe_features, features_3d, gates)`: a list with one `[B, H_s, W_s, widths[s]]`
          per stage (the keyframe slot of each stage's output, finest first), the last stage's
          output `[B, T, H_last, W_last, widths[-1]]` and the gated steps' `Gate`s ([] without
          `gate`).
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
        keyframe_features, gates = [], []
        for s, (size, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            for i in range(size):
                key = None if rng is None else jax.random.fold_in(rng, 100 * s + i)
                x, gate = block_cls(width, self.strides[s] if i == 0 else 1, self.dilations[s],
                                    self.temporal_kernels[s], self.isolate_keyframe, self.gate,
                                    self.gate_hidden, name=f"stage{s}_block{i}",
                                    **_dtypes(self))(x, key, temperature, gate_budget)
                if gate is not None:
                    gates.append(gate)
            keyframe_features.append(x[:, t // 2])
        chex.assert_shape(x, (b, t, None, None, self.widths[-1]))
        return keyframe_features, x, gates
