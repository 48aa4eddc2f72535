"""Losses: softmax classification and matching against a memory of class references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxact.models import memory as memlib
from jaxact.train.parallel import masked_share

# Metrics on binarized features; their training loss uses the soft (sigmoid) relaxation.
BINARIZED_METRICS = ("hamming", "jaccard")


def metric_kwargs(config) -> dict:
    """Extra arguments of the configured distance."""
    name = config.memory.distance
    if name == "minkowski":
        return {"p": config.memory.minkowski_p}
    if name in BINARIZED_METRICS:
        return {"threshold": config.memory.binarize_threshold}
    return {}


def softmax_loss(logits, labels, mask, frame_weight: float, axis_name: str | None = None):
    """Cross-entropy on the last frame (the RNN has seen the whole clip) plus a weighted per-frame
    term. `logits` `[B, T, C]`, `labels` `[B]`, `mask` `[B]`. Returns (loss, correct `[B]`).

    Under pmap (`axis_name` set) the loss is this device's share of the global mean (summed over
    devices, it is the loss of the whole batch), so summed gradients equal the jit path's."""
    last = optax.softmax_cross_entropy_with_integer_labels(logits[:, -1], labels)
    frames = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(labels[:, None], logits.shape[:2])).mean(axis=1)
    loss = masked_share(last + frame_weight * frames, mask, axis_name)
    return loss, jnp.argmax(logits[:, -1], -1) == labels


def frame_class_distances(feats, references, config, soft: bool = False):
    """`feats` `[B, T, D]` -> distance of every frame to every class `[B, T, C]`."""
    b, t, d = feats.shape
    dist = memlib.class_distances(feats.reshape(b * t, d), references, config.memory.distance,
                                  soft=soft, **metric_kwargs(config))
    return dist.reshape(b, t, -1)


def memory_loss(feats, labels, mask, references, config, axis_name: str | None = None):
    """Cross-entropy over negative distances to the class references, per frame and per video,
    with `memory.margin` added to the right class's distance (0: none).

    `axis_name`: as in `softmax_loss` (this device's share of the global loss under pmap).

    Returns (loss, (prediction `[B]` by majority vote, per-video loss weights `[B]`)).
    """
    binarized = config.memory.distance in BINARIZED_METRICS
    dist = frame_class_distances(feats, references, config, soft=binarized)
    hard = frame_class_distances(jax.lax.stop_gradient(feats), references, config) \
        if binarized else jax.lax.stop_gradient(dist)
    pred, _ = memlib.vote(hard)
    # A margin makes the right class win only when it is `margin` closer than every other class.
    margin = config.memory.get("margin", 0.0) * jax.nn.one_hot(labels, dist.shape[-1])
    logits = -(dist + margin[:, None]) / config.memory.temperature
    frame_ce = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(labels[:, None], logits.shape[:2])).mean(axis=1)
    video_ce = optax.softmax_cross_entropy_with_integer_labels(logits.mean(axis=1), labels)
    per_video = (config.memory.frame_loss_weight * frame_ce
                 + config.memory.video_loss_weight * video_ce)
    weight = mask.astype(jnp.float32)
    if config.memory.loss_on == "misclassified":
        weight = weight * (pred != labels)
    return masked_share(per_video, weight, axis_name), (pred, weight)
