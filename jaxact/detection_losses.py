"""Set losses of the action detector: Hungarian matching, then person / box / action terms.

    L = w_person * BCE(person) + w_l1 * L1(box) + w_giou * (1 - GIoU(box)) + w_action * BCE(actions)
        + w_map * BCE(behaviour map) + w_flops * L_flops - w_relation * L_sim

Predictions are matched one-to-one to the real people of each clip with the exact Hungarian
solver (`jaxact.ops.hungarian`), vmapped over the batch; padded ground-truth rows are masked out
of the matching, so clips may hold any number of people up to the padded size P. The matching
cost is DETR's: `cost_person * c(p) + cost_l1 * L1 - cost_giou * GIoU(xyxy)`, where
`c(p) = -p` ("prob") or the focal-loss difference of Deformable DETR ("focal"). The L1 of the
cost and of the loss is on `l1_coords`: (cx, cy, w, h) as DETR, or the corners (x1, y1, x2, y2)
as the decoupled-fusion method.

Behaviour maps (heads that output `map_logits` `[B, N, S, S, A + 1]`, targets with `owner`): a
matched prediction's per-bin target is built from its person's visible pixels, RoIAligned over
the predicted box exactly as the actor features are: channel 0 (no behaviour) gets the share of
the bin that is not that person, channel 1 + a the share that is, times the person's action a.
The term is the sigmoid BCE over bins and channels, averaged per prediction.

Unmatched predictions get person target 0; L1, GIoU and action BCE are computed on matched
predictions only. Every term is a sum over the batch divided by `normalizer`, the number of real
people in the (global) batch, at least 1, so clips with more people weigh more, as in DETR. The
caller passes the global count (`global_count` in train/parallel.py) so that per-device losses
sum to the global batch's; by default it is this batch's count. Nothing here knows about devices.
The person term is a sigmoid BCE summed over all N queries, optionally focal-modulated
(`focal_gamma > 0`, `focal_alpha` in [0, 1]); the action BCE is averaged over the A classes of a person.

Adaptive layers (`outputs["gates"]`, `outputs["relation"]`): L_flops is the counted compute
fraction of the gated layers (`channel_gate.flops_fraction`, with `reuse_cost`); L_sim rewards
grouping that agrees with the learned similarity (`actor_relation.similarity_loss`, over each
clip's pairs of real actors). The box terms of the method's relation loss L_s are the detector's
own L1 and GIoU above. Both are per-clip values summed and divided by `clips`, the number of
clips in the (global) batch.

Intermediate localizer stages (`outputs["aux_outputs"]`) get the same person and box losses with
their own matching, scaled by `aux` (deep supervision); they predict no actions.

Shapes: outputs `boxes` `[B, N, 4]` cxcywh normalized, `person_logits` `[B, N]`, `action_logits`
`[B, N, A]`; targets `boxes` `[B, P, 4]` xyxy normalized, `actions` `[B, P, A]` multi-hot,
`person_mask` `[B, P]` bool.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxact import settings
from jaxact.models import actor_relation, channel_gate
from jaxact.ops import boxes as box_ops
from jaxact.ops.hungarian import linear_sum_assignment
from jaxact.ops.roi_align import roi_align_video

# The Hungarian solver needs finite costs; anything this large is "never match" in practice.
_MAX_COST = 1e6


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Loss and matching-cost weights (field names are the config keys).

    Attributes:
      person, l1, giou, action: loss weights w_cls, w_l1, w_giou, w_act.
      aux: multiplier of the intermediate stages' set losses (0 disables deep supervision).
      cost_person, cost_l1, cost_giou: matching-cost weights.
      cost_type: "prob" (-p, DETR) or "focal" (Deformable DETR's focal cost).
      focal_alpha: alpha of the focal loss/cost; negative disables alpha weighting.
      focal_gamma: focusing exponent; 0 with `focal_alpha < 0` makes the person loss plain BCE.
      map: weight of the behaviour-map BCE (0 turns it off; heads without maps have none).
      l1_coords: "cxcywh" or "xyxy", the coordinates of the box L1 (loss and matching cost).
      flops: weight of the gated layers' counted compute fraction L_flops (models with a gate).
      flops_target: compute budget: only the fraction above it costs, max(0, L_flops - target)
        (0: every kept channel costs, the method's plain L_flops).
      reuse_cost: what a reused channel costs in L_flops, as a fraction of a kept one's.
      relation: weight w_sim of the grouping-similarity agreement L_sim (subtracted: it is a
        reward; models with relations).
    """

    person: float = 2.0
    l1: float = 5.0
    giou: float = 2.0
    action: float = 2.0
    aux: float = 1.0
    cost_person: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0
    cost_type: str = "prob"
    focal_alpha: float = -1.0
    focal_gamma: float = 0.0
    map: float = 1.0
    l1_coords: str = "cxcywh"
    flops: float = 1.0
    flops_target: float = 0.0
    reuse_cost: float = 0.0
    relation: float = 0.1

    def __post_init__(self):
        settings.check_choice(self.cost_type, COST_TYPES, "cost_type")
        settings.check_choice(self.l1_coords, L1_COORDS, "l1_coords")
        if not 0.0 <= self.flops_target < 1.0:
            raise ValueError(f"flops_target must be in [0, 1), got {self.flops_target}")


COST_TYPES = ("prob", "focal")
L1_COORDS = ("cxcywh", "xyxy")


def l1_distance(pred_cxcywh, gt_xyxy, coords: str) -> jax.Array:
    """Summed absolute difference of broadcastable `[..., 4]` boxes in `coords`."""
    if coords == "xyxy":
        return jnp.sum(jnp.abs(box_ops.cxcywh_to_xyxy(pred_cxcywh) - gt_xyxy), axis=-1)
    return jnp.sum(jnp.abs(pred_cxcywh - box_ops.xyxy_to_cxcywh(gt_xyxy)), axis=-1)


def as_weights(weights, prefix: str = "loss") -> LossWeights:
    """`LossWeights`, a dict, a ConfigDict or None (defaults) -> `LossWeights`; unknown or bad
    fields fail naming `prefix.field`.

    Convert a config once: the result is hashable, so it can be a static argument of `jax.jit`.
    """
    return settings.from_section(LossWeights, weights, prefix)


class Matching(NamedTuple):
    """Per-clip assignment; -1 marks unmatched entries.

    pred_to_gt: `[B, N]` int32 ground-truth row of each prediction.
    gt_to_pred: `[B, P]` int32 prediction of each ground-truth row.
    pred_matched: `[B, N]` bool, `pred_to_gt >= 0`.
    gt_matched: `[B, P]` bool, `gt_to_pred >= 0` (False on padding).
    """

    pred_to_gt: jax.Array
    gt_to_pred: jax.Array
    pred_matched: jax.Array
    gt_matched: jax.Array


def _focal_terms(logits, w: LossWeights):
    """Per-query person loss for target 1 and for target 0 (each `[...]`)."""
    p = jax.nn.sigmoid(logits)
    pos = -jax.nn.log_sigmoid(logits)
    neg = -jax.nn.log_sigmoid(-logits)
    if w.focal_gamma:
        pos = pos * (1.0 - p) ** w.focal_gamma
        neg = neg * p**w.focal_gamma
    if w.focal_alpha >= 0:
        pos, neg = w.focal_alpha * pos, (1.0 - w.focal_alpha) * neg
    return pos, neg


def matching_cost(outputs: dict, targets: dict, weights=None) -> jax.Array:
    """DETR matching cost `[B, N, P]` (padded columns are 0; the matcher masks them out)."""
    w = as_weights(weights)
    logits = outputs["person_logits"]
    if w.cost_type == "prob":
        person = -jax.nn.sigmoid(logits)
    elif w.cost_type == "focal":
        pos, neg = _focal_terms(logits, w)
        person = pos - neg
    else:
        raise ValueError(f"cost_type must be 'prob' or 'focal', got {w.cost_type!r}")
    pred = outputs["boxes"]
    gt_xyxy = targets["boxes"]
    l1 = l1_distance(pred[:, :, None], gt_xyxy[:, None], w.l1_coords)
    giou = box_ops.pairwise_giou(box_ops.cxcywh_to_xyxy(pred), gt_xyxy)
    cost = w.cost_person * person[..., None] + w.cost_l1 * l1 - w.cost_giou * giou
    cost = jnp.where(targets["person_mask"].astype(bool)[:, None, :], cost, 0.0)
    return jnp.clip(jnp.nan_to_num(cost, nan=_MAX_COST), -_MAX_COST, _MAX_COST)


def match(outputs: dict, targets: dict, weights=None) -> Matching:
    """Minimum-cost one-to-one matching of predictions to real people, per clip (no gradient)."""
    cost = jax.lax.stop_gradient(matching_cost(outputs, targets, weights))
    mask = targets["person_mask"].astype(bool)
    pred_to_gt, gt_to_pred = jax.vmap(linear_sum_assignment, in_axes=(0, None, 0))(cost, None, mask)
    return Matching(pred_to_gt, gt_to_pred, pred_to_gt >= 0, gt_to_pred >= 0)


def _gather_rows(x: jax.Array, index: jax.Array) -> jax.Array:
    """`x` `[B, P, ...]`, `index` `[B, N]` (>= 0) -> `[B, N, ...]`."""
    idx = index.reshape(*index.shape, *([1] * (x.ndim - 2)))
    return jnp.take_along_axis(x, idx, axis=1)


def _box_and_person_terms(outputs, targets, w: LossWeights, num_people):
    m = match(outputs, targets, w)
    matched = m.pred_matched.astype(jnp.float32)
    pos, neg = _focal_terms(outputs["person_logits"], w)
    person = jnp.sum(jnp.where(m.pred_matched, pos, neg)) / num_people

    gt_idx = jnp.maximum(m.pred_to_gt, 0)
    gt_xyxy = _gather_rows(targets["boxes"], gt_idx)  # [B, N, 4]
    pred = outputs["boxes"]
    l1 = l1_distance(pred, gt_xyxy, w.l1_coords)
    giou = box_ops.elementwise_giou(box_ops.cxcywh_to_xyxy(pred), gt_xyxy)
    iou = box_ops.elementwise_iou(box_ops.cxcywh_to_xyxy(pred), gt_xyxy)
    terms = {
        "person": person,
        "l1": jnp.sum(l1 * matched) / num_people,
        "giou": jnp.sum((1.0 - giou) * matched) / num_people,
    }
    return m, gt_idx, terms, iou


def priority_one_hot(actions, ranks) -> jax.Array:
    """`actions` `[..., A]` multi-hot -> one-hot `[..., A]` of the present action of lowest
    `ranks` `[A]` (0 = highest priority), zeros where none is present: the single behaviour a
    label image shows for a multi-label person, so the map learns what it is scored on."""
    present = actions >= 0.5
    keyed = jnp.where(present, jnp.asarray(ranks), jnp.iinfo(jnp.int32).max)
    best = jax.nn.one_hot(jnp.argmin(keyed, axis=-1), actions.shape[-1], dtype=actions.dtype)
    return best * jnp.any(present, axis=-1, keepdims=True).astype(actions.dtype)


def map_targets(owner, pred_boxes, gt_idx, actions, size: int) -> jax.Array:
    """Per-bin behaviour targets `[B, N, S, S, A + 1]` of every prediction as if matched to
    ground-truth row `gt_idx` `[B, N]`.

    `owner` `[B, H, W]`: the visible person (row of `actions` `[B, P, A]`) at each keyframe
    pixel, -1 for none; `pred_boxes` `[B, N, 4]` cxcywh, clipped and RoIAligned like the actor
    features (no gradient flows through them). Channel 0 = 1 - c, channel 1 + a = c * action a,
    where c is the bin's share of that person's pixels.
    """
    people = actions.shape[1]
    onehot = (owner[..., None] == jnp.arange(people)).astype(jnp.float32)  # [B, H, W, P]
    boxes = box_ops.clip_boxes(box_ops.cxcywh_to_xyxy(jax.lax.stop_gradient(pred_boxes)))
    coverage = roi_align_video(onehot[:, None], boxes, size)[:, :, 0]  # [B, N, S, S, P]
    share = jnp.take_along_axis(coverage, gt_idx[:, :, None, None, None], axis=-1)  # [..., 1]
    acts = _gather_rows(actions, gt_idx)[:, :, None, None, :]  # [B, N, 1, 1, A]
    return jnp.concatenate([1.0 - share, share * acts], axis=-1)


def adaptive_terms(outputs: dict, w: LossWeights) -> tuple[dict, dict]:
    """Per-clip adaptive-layer terms `{"flops", "relation": [B]}` (those the outputs have) and
    their metrics as (sum, count) pairs: per gated layer i `gate_keep_i`, `gate_reuse_i`,
    `gate_drop_i` (fractions over elements and channels), `gate_flops` and `groups_used`."""
    terms, metrics = {}, {}
    gates = outputs.get("gates")
    if gates:
        fraction = channel_gate.flops_fraction(gates, w.reuse_cost)
        terms["flops"] = jnp.maximum(fraction - w.flops_target, 0.0)
        fractions = channel_gate.decision_fractions(gates)  # [B, L, 3]
        clips = jnp.asarray(fractions.shape[0], jnp.float32)
        for i in range(fractions.shape[1]):
            for j, name in enumerate(channel_gate.DECISIONS):
                metrics[f"gate_{name}_{i}"] = (jnp.sum(fractions[:, i, j]), clips)
        metrics["gate_flops"] = (jnp.sum(fraction), jnp.asarray(fraction.size, jnp.float32))
    relation = outputs.get("relation")
    if relation:
        share = actor_relation.share_probability(relation["group_probs"])
        per_clip = jax.vmap(lambda s, p, m: actor_relation.similarity_loss(
            s[None], p[None], m[None], relation_tau(outputs)))(
            relation["similarity"], share, relation["pair_mask"])
        terms["relation"] = per_clip
        used = relation["groups_used"].astype(jnp.float32)
        metrics["groups_used"] = (jnp.sum(used), jnp.asarray(used.size, jnp.float32))
    return terms, metrics


def relation_tau(outputs: dict) -> jax.Array:
    """The similarity threshold the model used (its relation aux dict carries it)."""
    return outputs["relation"]["tau"]


def set_criterion(outputs: dict, targets: dict, weights=None,
                  normalizer: jax.Array | None = None,
                  clips: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Total set loss and its terms.

    Args:
      outputs: the detector's dict (`boxes`, `person_logits`, `action_logits`, optional
        `aux_outputs`).
      targets: `boxes` `[B, P, 4]` xyxy normalized, `actions` `[B, P, A]`, `person_mask` `[B, P]`,
        optionally `owner` `[B, H, W]` and `map_actions` `[B, P, A]`, the per-person labels of
        the behaviour map (default: `actions`; see `map_targets` and `priority_one_hot`).
      weights: `LossWeights`, a mapping / ConfigDict of its fields, or None for the defaults.
      normalizer: what every term is divided by: the number of people in the global batch
        (at least 1), as DETR all-reduces its box count; None: this batch's.
      clips: what the per-clip adaptive terms are divided by: the number of clips in the
        global batch; None: this batch's.

    Returns:
      `(loss, metrics)`: scalar loss; metrics holds the unweighted terms (`person`, `l1`, `giou`,
      `action`, `map`, `flops`, `relation` when there are, `aux`: the weighted sum of
      intermediate-stage losses), the adaptive layers' metrics (`adaptive_terms`), `num_people`
      (people in this batch) and `matched_iou`, a `(sum, count)` pair of the IoUs of
      the last stage's matched pairs (its mean over any number of batches or devices is sum of
      sums / sum of counts).
    """
    w = as_weights(weights)
    b, n = outputs["person_logits"].shape
    p = targets["person_mask"].shape[1]
    a = outputs["action_logits"].shape[-1]
    chex.assert_shape([outputs["boxes"], outputs["action_logits"]], [(b, n, 4), (b, n, a)])
    chex.assert_shape([targets["boxes"], targets["actions"], targets["person_mask"]],
                      [(b, p, 4), (b, p, a), (b, p)])
    local_people = jnp.sum(targets["person_mask"].astype(jnp.float32))
    num_people = jnp.maximum(local_people, 1.0) if normalizer is None else normalizer

    m, gt_idx, terms, iou = _box_and_person_terms(outputs, targets, w, num_people)
    gt_actions = _gather_rows(targets["actions"].astype(jnp.float32), gt_idx)
    action_bce = optax.sigmoid_binary_cross_entropy(outputs["action_logits"], gt_actions).mean(-1)
    terms["action"] = jnp.sum(action_bce * m.pred_matched) / num_people
    loss = (w.person * terms["person"] + w.l1 * terms["l1"] + w.giou * terms["giou"]
            + w.action * terms["action"])
    if w.map and "map_logits" in outputs and "owner" in targets:
        labels = targets.get("map_actions", targets["actions"])
        target = map_targets(targets["owner"], outputs["boxes"], gt_idx,
                             labels.astype(jnp.float32), outputs["map_logits"].shape[-2])
        map_bce = optax.sigmoid_binary_cross_entropy(outputs["map_logits"], target)
        terms["map"] = jnp.sum(map_bce.mean(axis=(-3, -2, -1)) * m.pred_matched) / num_people
        loss = loss + w.map * terms["map"]

    per_clip, adaptive_metrics = adaptive_terms(outputs, w)
    num_clips = jnp.asarray(b, jnp.float32) if clips is None else clips
    for name, values in per_clip.items():
        terms[name] = jnp.sum(values) / num_clips
    if "flops" in terms:
        loss = loss + w.flops * terms["flops"]
    if "relation" in terms:
        loss = loss - w.relation * terms["relation"]

    aux = jnp.zeros(())
    for stage in outputs.get("aux_outputs") or []:
        _, _, t, _ = _box_and_person_terms(stage, targets, w, num_people)
        aux = aux + w.person * t["person"] + w.l1 * t["l1"] + w.giou * t["giou"]
    loss = loss + w.aux * aux
    matched = m.pred_matched.astype(jnp.float32)
    matched_iou = (jnp.sum(iou.astype(jnp.float32) * matched), jnp.sum(matched))
    metrics = dict(terms, **adaptive_metrics, aux=aux, loss=loss, num_people=local_people,
                   matched_iou=matched_iou)
    return loss, metrics
