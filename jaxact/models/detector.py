"""End-to-end spatio-temporal action detector: one model, no NMS, no external person detector.

    video [B, T, H, W, 3]
      -> VideoResNet (keyframe isolated from every temporal op)
           keyframe features of every stage ----> FPN -> SparseLocalizer -> boxes, person logits
           last 3D feature map [B, T, h, w, C] --> RoIAlign at the (stop-gradient) boxes, per frame
                                                     -> actor features [B, N, T, S, S, C]
                                                     -> pooled action head -> action logits

The localizer only ever sees the keyframe (see `backbone`), so person boxes do not depend on the
other frames; the action branch sees all frames. Boxes fed to RoIAlign are `stop_gradient`-ed: the
action loss trains features, not box positions (those belong to the set loss).

Every constructor field is an int, float, bool, string or tuple, so a model is built from an
`ml_collections.ConfigDict` with `ActionDetector(**config.model)`. `PRESETS` holds named sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxact.models.backbone import RESNET50, VideoResNet
from jaxact.models.fpn import FPN
from jaxact.models.localizer import SparseLocalizer
from jaxact.ops.boxes import cxcywh_to_xyxy
from jaxact.ops.roi_align import roi_align_video

# Named sizes: `ActionDetector(**PRESETS[name], num_actions=A)`; "tiny" is the class default.
PRESETS = {
    "tiny": {},
    "resnet50": dict(RESNET50, fpn_dim=256, localizer_stages=6, localizer_heads=8,
                     dynamic_dim=64, ffn_dim=2048, head_dim=512, num_queries=50),
}


class PooledActionHead(nn.Module):
    """Actor features -> multi-label action logits (a placeholder for a later fusion module).

    Attributes:
      num_actions: A.
      hidden_dim: width of the hidden layer.
      pool: "avg" or "max" over time and the RoI bins.
    """

    num_actions: int
    hidden_dim: int = 128
    pool: str = "avg"

    @nn.compact
    def __call__(self, actor_features: jax.Array, query_features: jax.Array | None = None):
        """`actor_features` `[B, N, T, S, S, C]` (+ `query_features` `[B, N, D]`) -> `[B, N, A]`."""
        if self.pool == "avg":
            x = jnp.mean(actor_features, axis=(2, 3, 4))
        elif self.pool == "max":
            x = jnp.max(actor_features, axis=(2, 3, 4))
        else:
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        if query_features is not None:
            # The localizer's query knows the box shape (standing people are taller).
            x = jnp.concatenate([x, query_features], axis=-1)
        x = nn.relu(nn.LayerNorm(name="norm")(nn.Dense(self.hidden_dim, name="hidden")(x)))
        return nn.Dense(self.num_actions, name="logits")(x)


class ActionDetector(nn.Module):
    """Backbone -> FPN -> set-prediction localizer -> RoIAlign on the 3D map -> action head.

    Attributes:
      num_actions: A, number of (multi-label) action classes.
      stem, stem_width, patch_size, block, stage_sizes, widths, strides, dilations,
        temporal_kernels, isolate_keyframe: the `VideoResNet` fields.
      fpn_dim: FPN width D (also the localizer's query width).
      num_queries: N predicted boxes per clip.
      localizer_stages, localizer_heads, dynamic_dim, ffn_dim, localizer_roi_size, prior_prob:
        the `SparseLocalizer` fields (stages, heads, dynamic_dim, ffn_dim, roi_size, prior_prob).
      action_roi_size: S of the actor features.
      roi_sampling_ratio: RoIAlign samples per bin (localizer and actor features).
      head_dim: hidden width of the action head.
      head_pool: "avg" or "max" pooling of the actor features.
      head_use_query: also feed the localizer's query features to the action head.
    """

    num_actions: int = 5
    # Backbone.
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
    # FPN and localizer.
    fpn_dim: int = 64
    num_queries: int = 20
    localizer_stages: int = 3
    localizer_heads: int = 4
    dynamic_dim: int = 16
    ffn_dim: int = 256
    localizer_roi_size: int = 7
    prior_prob: float = 0.1
    # Action branch.
    action_roi_size: int = 7
    roi_sampling_ratio: int = 2
    head_dim: int = 128
    head_pool: str = "avg"
    head_use_query: bool = True

    @nn.compact
    def __call__(self, video: jax.Array, train: bool = False) -> dict:
        """`video` `[B, T, H, W, 3]` (keyframe at `T // 2`; `train` is reserved for dropout).

        Returns a dict with
          boxes: `[B, N, 4]` normalized (cx, cy, w, h);
          person_logits: `[B, N]`;
          action_logits: `[B, N, A]`;
          actor_features: `[B, N, T, S, S, C]` RoIAligned from the last 3D feature map;
          query_features: `[B, N, fpn_dim]`;
          aux_outputs: list of `{boxes, person_logits}` from earlier localizer stages.
        """
        del train
        b, t = video.shape[:2]
        keyframe_features, features_3d = VideoResNet(
            stem=self.stem, stem_width=self.stem_width, patch_size=self.patch_size,
            block=self.block, stage_sizes=tuple(self.stage_sizes), widths=tuple(self.widths),
            strides=tuple(self.strides), dilations=tuple(self.dilations),
            temporal_kernels=tuple(self.temporal_kernels), isolate_keyframe=self.isolate_keyframe,
            name="backbone")(video)
        pyramid = FPN(self.fpn_dim, name="fpn")(keyframe_features)
        loc = SparseLocalizer(
            num_queries=self.num_queries, dim=self.fpn_dim, num_stages=self.localizer_stages,
            num_heads=self.localizer_heads, dynamic_dim=self.dynamic_dim, ffn_dim=self.ffn_dim,
            roi_size=self.localizer_roi_size, sampling_ratio=self.roi_sampling_ratio,
            prior_prob=self.prior_prob, name="localizer")(pyramid)

        # roi_align_video scales these normalized xyxy boxes to feature-map pixels (x W, x H) and
        # applies the half-pixel offset; clipping keeps bins on the frame.
        roi_boxes = jnp.clip(cxcywh_to_xyxy(jax.lax.stop_gradient(loc["boxes"])), 0.0, 1.0)
        actor_features = roi_align_video(features_3d, roi_boxes, self.action_roi_size,
                                         self.roi_sampling_ratio)
        s, c = self.action_roi_size, features_3d.shape[-1]
        chex.assert_shape(actor_features, (b, self.num_queries, t, s, s, c))
        action_logits = PooledActionHead(self.num_actions, self.head_dim, self.head_pool,
                                         name="action_head")(
            actor_features, loc["query_features"] if self.head_use_query else None)
        return {
            "boxes": loc["boxes"],
            "person_logits": loc["person_logits"],
            "action_logits": action_logits,
            "actor_features": actor_features,
            "query_features": loc["query_features"],
            "aux_outputs": loc["aux_outputs"],
        }


def gflops_per_clip(model: nn.Module, params, input_shape: Sequence[int]) -> float:
    """Forward GFLOPs of `model` for one clip, from XLA's cost analysis of the lowered forward.

    The lowered (not compiled) module is counted so the figure is the same on every backend: on
    GPU the compiled convolutions are cuDNN custom calls that the cost analysis counts as 0.

    Args:
      model: a module called as `model.apply(variables, video)`.
      params: its variables (`model.init(...)`'s result) or the bare `params` collection.
      input_shape: `[B, T, H, W, 3]`; the count for the whole batch is divided by `B`.
    """
    variables = params if "params" in params else {"params": params}
    video = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    cost = jax.jit(model.apply).lower(variables, video).cost_analysis()
    if isinstance(cost, list | tuple):  # older jax returned one dict per computation
        cost = cost[0]
    return float(cost["flops"]) / 1e9 / input_shape[0]
