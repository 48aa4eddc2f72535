"""Set-prediction person localizer: N learned queries -> N boxes and person logits, no NMS.

Choice: Sparse R-CNN (Sun et al. 2021) rather than DETR. Each of the N queries is a learned
proposal box plus a learned proposal feature. A stage RoIAligns the FPN at the current boxes,
lets the queries talk to each other (self-attention, so duplicates can be suppressed), mixes each
query's RoI features into it with a *dynamic* 1 x 1 conv whose weights the query generates, and
predicts a person logit and a box refinement. Stages repeat with refined boxes (iterative box
refinement). Why Sparse R-CNN:
  * its features are local (RoIAligned at the box), not global cross-attention over all pixels;
    DETR's global attention is what makes it need hundreds of epochs, and our budget is minutes
    of CPU training;
  * boxes are small (10-40 px on 128 x 128 frames) and crowded (up to 12 people): RoIs from the
    fine FPN levels resolve them, a global token grid at stride 16 would not;
  * the cost is tiny: N x S x S RoI samples per stage, independent of the image size.

Boxes live in logit space (`sigmoid` gives normalized cx, cy, w, h); each stage adds a delta to
the logits (as in Deformable DETR's iterative refinement). The boxes used for RoIAlign and the
boxes passed on between stages are `stop_gradient`-ed, so every stage learns its own refinement
(except the learned initial proposals, which learn through the first stage's prediction). Every
stage's prediction is returned so the set loss can supervise all of them (deep supervision).

RoIAlign is applied on every FPN level and the levels are fused by an element-wise max (PANet's
adaptive feature pooling) instead of assigning each box to one level: with static shapes that is
as cheap, and it is differentiable everywhere.

Every module takes `dtype` (the computation's) and `param_dtype` (the parameters'), both float32 by
default. Box logits add each stage's delta to the (`param_dtype`) proposals, so with float32
parameters they stay float32 under a bfloat16 `dtype`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxact.ops.boxes import clip_boxes, cxcywh_to_xyxy
from jaxact.ops.roi_align import roi_align


def multilevel_roi_align(features: Sequence[jax.Array], boxes: jax.Array, output_size: int,
                         sampling_ratio: int = 2) -> jax.Array:
    """RoIAlign of boxes on every level, fused by max.

    Args:
      features: list of `[B, H_l, W_l, D]` maps covering the same image.
      boxes: `[B, N, 4]` xyxy boxes normalized to `[0, 1]` of the image.
      output_size: `S`.
      sampling_ratio: samples per bin along each axis.

    Returns:
      `[B, N, S, S, D]`.
    """
    pool = functools.partial(roi_align, output_size=output_size, sampling_ratio=sampling_ratio,
                             aligned=True, normalized=True)
    return functools.reduce(jnp.maximum, [jax.vmap(pool)(f, boxes) for f in features])


def _dtypes(module: nn.Module) -> dict:
    """`dtype` and `param_dtype` of `module`, as keyword arguments for its layers and children."""
    return {"dtype": module.dtype, "param_dtype": module.param_dtype}


def grid_box_logits(key, shape, dtype=jnp.float32):
    """Initial proposals `[N, 4]` (logits of cx, cy, w, h): centres on a grid covering the frame.

    Distinct starting boxes make the first matchings less arbitrary than N whole-image boxes.
    """
    del key
    n = shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    idx = jnp.arange(n)
    cx = (idx % cols + 0.5) / cols
    cy = (idx // cols + 0.5) / rows
    size = jnp.full((n,), min(2.0 / cols, 0.9))
    boxes = jnp.stack([cx, cy, size, size], axis=-1)
    return jnp.log(boxes / (1.0 - boxes)).astype(dtype)


class DynamicInteraction(nn.Module):
    """Sparse R-CNN's instance interaction: `[B, N, D]` queries x `[B, N, S, S, D]` RoIs -> `[B, N, D]`.

    Each query generates the weights of two 1 x 1 convs (D -> d -> D) applied to its own RoI.
    """

    dim: int
    dynamic_dim: int = 16
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, queries: jax.Array, roi: jax.Array) -> jax.Array:
        b, n, s, _, d = roi.shape
        dd = self.dynamic_dim
        dt = _dtypes(self)
        params = nn.Dense(2 * d * dd, name="params", **dt)(queries)
        w1 = params[..., : d * dd].reshape(b, n, d, dd)
        w2 = params[..., d * dd:].reshape(b, n, dd, d)
        x = roi.reshape(b, n, s * s, d)
        x = nn.relu(nn.LayerNorm(name="norm1", **dt)(jnp.einsum("bnpd,bnde->bnpe", x, w1)))
        x = nn.relu(nn.LayerNorm(name="norm2", **dt)(jnp.einsum("bnpe,bned->bnpd", x, w2)))
        x = nn.Dense(self.dim, name="out", **dt)(x.reshape(b, n, s * s * d))
        return nn.relu(nn.LayerNorm(name="norm3", **dt)(x))


class RefinementStage(nn.Module):
    """One Sparse R-CNN stage.

    `(features, queries [B, N, D], box_logits [B, N, 4])` ->
    `(queries [B, N, D], box_logits [B, N, 4], person_logits [B, N])`.
    """

    dim: int
    num_heads: int = 4
    dynamic_dim: int = 16
    ffn_dim: int = 256
    roi_size: int = 7
    sampling_ratio: int = 2
    prior_prob: float = 0.1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features, queries, box_logits):
        dt = _dtypes(self)
        boxes = jax.lax.stop_gradient(jax.nn.sigmoid(box_logits))
        xyxy = clip_boxes(cxcywh_to_xyxy(boxes))
        roi = multilevel_roi_align(features, xyxy, self.roi_size, self.sampling_ratio)

        # Box geometry as a positional embedding: queries know where they are when they compare.
        qk = queries + nn.Dense(self.dim, name="box_embed", **dt)(boxes)
        attn = nn.MultiHeadDotProductAttention(self.num_heads, qkv_features=self.dim,
                                               name="self_attn", **dt)(qk, qk, queries)
        q = nn.LayerNorm(name="norm_attn", **dt)(queries + attn)
        q = nn.LayerNorm(name="norm_dyn", **dt)(
            q + DynamicInteraction(self.dim, self.dynamic_dim, name="interaction", **dt)(q, roi))
        ffn = nn.Dense(self.dim, name="ffn_out", **dt)(
            nn.relu(nn.Dense(self.ffn_dim, name="ffn_in", **dt)(q)))
        q = nn.LayerNorm(name="norm_ffn", **dt)(q + ffn)

        c = nn.relu(nn.LayerNorm(name="cls_norm", **dt)(nn.Dense(self.dim, name="cls_hidden", **dt)(q)))
        bias = -math.log((1.0 - self.prior_prob) / self.prior_prob)
        person_logits = nn.Dense(1, bias_init=nn.initializers.constant(bias), name="cls",
                                 **dt)(c)[..., 0]
        r = q
        for i in range(2):
            r = nn.relu(nn.LayerNorm(name=f"reg_norm{i}", **dt)(
                nn.Dense(self.dim, name=f"reg_hidden{i}", **dt)(r)))
        # Zero init: the first predictions are the proposals themselves.
        delta = nn.Dense(4, kernel_init=nn.initializers.zeros, name="reg", **dt)(r)
        return q, box_logits + delta, person_logits


class SparseLocalizer(nn.Module):
    """N learned queries refined over FPN features -> boxes and person logits.

    Attributes:
      num_queries: N, the fixed number of predicted boxes (more than the most people per frame).
      dim: query width; must equal the FPN's `dim`.
      num_stages: refinement stages (Sparse R-CNN uses 6; 2-3 suffice for small synthetic data).
      num_heads: self-attention heads.
      dynamic_dim: inner width of the dynamic convs.
      ffn_dim: hidden width of the feed-forward block.
      roi_size: RoIAlign output side S.
      sampling_ratio: RoIAlign samples per bin along each axis.
      prior_prob: initial person probability (bias of the person logit).
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    num_queries: int = 20
    dim: int = 64
    num_stages: int = 3
    num_heads: int = 4
    dynamic_dim: int = 16
    ffn_dim: int = 256
    roi_size: int = 7
    sampling_ratio: int = 2
    prior_prob: float = 0.1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]) -> dict:
        """`features`: list of `[B, H_l, W_l, dim]` FPN levels of the keyframe.

        Returns a dict with
          boxes: `[B, N, 4]` normalized (cx, cy, w, h) in (0, 1), last stage;
          person_logits: `[B, N]`, last stage;
          query_features: `[B, N, dim]`, last stage;
          aux_outputs: list (one per earlier stage) of dicts with `boxes` and `person_logits`.
        """
        b = features[0].shape[0]
        for f in features:
            chex.assert_shape(f, (b, None, None, self.dim))
        n = self.num_queries
        init_boxes = self.param("init_boxes", grid_box_logits, (n, 4), self.param_dtype)
        init_queries = self.param("init_queries", nn.initializers.normal(1.0), (n, self.dim),
                                  self.param_dtype)
        box_logits = jnp.broadcast_to(init_boxes, (b, n, 4))
        queries = jnp.broadcast_to(jnp.asarray(init_queries, self.dtype), (b, n, self.dim))
        predictions = []
        for s in range(self.num_stages):
            if s:
                box_logits = jax.lax.stop_gradient(box_logits)
            queries, box_logits, person_logits = RefinementStage(
                self.dim, self.num_heads, self.dynamic_dim, self.ffn_dim, self.roi_size,
                self.sampling_ratio, self.prior_prob, name=f"stage{s}", **_dtypes(self))(
                    features, queries, box_logits)
            predictions.append({"boxes": jax.nn.sigmoid(box_logits), "person_logits": person_logits})
        out = dict(predictions[-1], query_features=queries, aux_outputs=predictions[:-1])
        chex.assert_shape([out["boxes"], out["person_logits"], queries],
                          [(b, n, 4), (b, n), (b, n, self.dim)])
        return out
