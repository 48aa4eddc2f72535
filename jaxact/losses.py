"""Losses of the classifiers: softmax classification and matching against a memory of class
references.

Array in, array out: each loss returns per-video values and their weights; the train step turns
them into a mean over the global batch (`masked_share` in train/parallel.py), so nothing here
knows about devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxact.models import memory as memlib
from jaxact.models.memory import MemorySettings


def softmax_loss(logits, labels, frame_weight: float):
    """Cross-entropy on the last frame (the RNN has seen the whole clip) plus a weighted per-frame
    term.

    Args:
      logits: `[B, T, C]`.
      labels: `[B]` int.
      frame_weight: weight of the mean per-frame cross-entropy.

    Returns:
      (per-video loss `[B]`, correct `[B]` bool of the last frame's prediction).
    """
    last = optax.softmax_cross_entropy_with_integer_labels(logits[:, -1], labels)
    frames = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(labels[:, None], logits.shape[:2])).mean(axis=1)
    return last + frame_weight * frames, jnp.argmax(logits[:, -1], -1) == labels


def frame_class_distances(feats, references: memlib.References, settings: MemorySettings,
                          soft: bool = False):
    """`feats` `[B, T, D]` -> distance of every frame to every class `[B, T, C]`."""
    b, t, d = feats.shape
    dist = memlib.class_distances(feats.reshape(b * t, d), references, settings.distance,
                                  soft=soft, **settings.metric_kwargs)
    return dist.reshape(b, t, -1)


def memory_loss(feats, labels, mask, references: memlib.References, settings: MemorySettings):
    """Cross-entropy over negative distances to the class references, per frame and per video,
    with `settings.margin` added to the right class's distance (0: none).

    Args:
      feats: `[B, T, D]` frame features.
      labels: `[B]` int.
      mask: `[B]` bool, real (not padding) rows.
      references: the class references.
      settings: distance, temperature, margin, loss weights and `loss_on`.

    Returns:
      (per-video loss `[B]`, per-video weight `[B]` (0 for padding, and for correct videos when
      `loss_on='misclassified'`), prediction `[B]` by majority vote of the frames).
    """
    dist = frame_class_distances(feats, references, settings, soft=settings.binarized)
    hard = frame_class_distances(jax.lax.stop_gradient(feats), references, settings) \
        if settings.binarized else jax.lax.stop_gradient(dist)
    pred, _ = memlib.vote(hard)
    # A margin makes the right class win only when it is `margin` closer than every other class.
    margin = settings.margin * jax.nn.one_hot(labels, dist.shape[-1])
    logits = -(dist + margin[:, None]) / settings.temperature
    frame_ce = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(labels[:, None], logits.shape[:2])).mean(axis=1)
    video_ce = optax.softmax_cross_entropy_with_integer_labels(logits.mean(axis=1), labels)
    per_video = settings.frame_loss_weight * frame_ce + settings.video_loss_weight * video_ce
    weight = mask.astype(jnp.float32)
    if settings.loss_on == "misclassified":
        weight = weight * (pred != labels)
    return per_video, weight, pred
