"""Memory bank of per-class feature vectors, and classification by matching against it.

Everything here is a pure function over pytrees with static shapes, so it runs inside a jitted
train step and is checkpointed with the rest of the train state:

  bank = create(num_classes, capacity, dim)
  bank = write(bank, feats, labels, mask)              # ring buffer per class
  refs = refresh_references(bank, rng, ...)            # sample -> k-means -> one vector per cluster
  d = class_distances(feats, refs, metric)             # [N, C]: distance to each class's nearest ref
  pred = vote(frame_class_distances, frame_mask)       # majority vote of frames
"""

from __future__ import annotations

import dataclasses
import functools

import chex
import flax.struct
import jax
import jax.numpy as jnp

from jaxact import settings
from jaxact.ops import distances, kmeans

# Distance given to missing references: large but finite so losses and softmaxes stay finite.
MISSING_DISTANCE = 1e6
# Metrics on binarized features; their training loss uses the soft (sigmoid) relaxation.
BINARIZED_METRICS = ("hamming", "jaccard")
ENTROPY_METRICS = ("relative_entropy", "jensen_shannon")
LOSS_ON = ("all", "misclassified")
MEMORY_INIT = ("pretrain", "checkpoint")


@dataclasses.dataclass(frozen=True)
class MemorySettings:
    """The memory classifier's settings (field names are the `memory` config section's keys).

    Bank and references: `capacity` K vectors per class; `clustering` 'kmeans' (`num_clusters`
    clusters, `kmeans_iters` Lloyd iterations) or 'threshold' (leader clustering: a member is
    within `cluster_threshold` (euclidean) of its cluster's leader; at most `num_clusters`) of a
    `sample_size` sample per class, one reference per cluster by `reference_rule` in
    `kmeans.REFERENCE_RULES`; refreshed every `refresh_every` steps.
    Matching: `distance` in `distances.METRICS` (`minkowski_p`, `binarize_threshold`,
    `entropy_temperature` for the metrics that take them); `temperature` scales logits
    `-distance / temperature`.
    Loss: `frame_loss_weight` and `video_loss_weight` of the per-frame and per-video
    cross-entropies; `margin` added to the right class's distance; `loss_on` 'all' or
    'misclassified' videos; `softmax_loss_weight` of the head's cross-entropy kept as a
    regulariser. Writes: every `write_stride`-th frame of correctly classified videos.
    Initialisation: `init` 'pretrain' (softmax pre-training for `aux_steps`, then the features of
    `init_batches` batches) or 'checkpoint' (the model of the workdir `aux_checkpoint`); both on
    `aux_data`, a split of the dataset ('' the training split; built-in datasets take TFDS
    slices, e.g. 'validation[:50%]'): the method's auxiliary labelled videos.
    """

    capacity: int
    num_clusters: int
    kmeans_iters: int
    clustering: str
    cluster_threshold: float
    reference_rule: str
    sample_size: int
    distance: str
    minkowski_p: float
    binarize_threshold: float
    entropy_temperature: float
    temperature: float
    margin: float
    refresh_every: int
    loss_on: str
    frame_loss_weight: float
    video_loss_weight: float
    softmax_loss_weight: float
    write_stride: int
    init: str
    aux_steps: int
    aux_checkpoint: str
    aux_data: str
    init_batches: int

    def __post_init__(self):
        try:
            canonical = distances.check_metric(self.distance, field="distance")
        except ValueError as e:
            raise ValueError(f"distance={self.distance!r}: {e}") from e
        object.__setattr__(self, "distance", canonical)  # scipy's aliases, e.g. cityblock
        for field, choices in (("reference_rule", kmeans.REFERENCE_RULES), ("loss_on", LOSS_ON),
                               ("init", MEMORY_INIT), ("clustering", kmeans.CLUSTERINGS)):
            settings.check_choice(getattr(self, field), choices, field)
        for field in ("softmax_loss_weight", "margin", "cluster_threshold"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        settings.check_positive(self, "capacity", "num_clusters", "sample_size", "refresh_every",
                                "write_stride", "kmeans_iters", "temperature",
                                "entropy_temperature")
        if self.init == "checkpoint" and not self.aux_checkpoint:
            raise ValueError("aux_checkpoint: init='checkpoint' needs a workdir here")

    @property
    def aux_split(self) -> str:
        """The split that pre-trains the auxiliary network and fills the bank."""
        return self.aux_data or "train"

    @property
    def binarized(self) -> bool:
        return self.distance in BINARIZED_METRICS

    @property
    def metric_kwargs(self) -> dict:
        """Extra arguments of the distance."""
        if self.distance == "minkowski":
            return {"p": self.minkowski_p}
        if self.binarized:
            return {"threshold": self.binarize_threshold}
        if self.distance in ENTROPY_METRICS:
            return {"entropy_temperature": self.entropy_temperature}
        return {}


@flax.struct.dataclass
class MemoryBank:
    """Fixed-capacity storage of feature vectors per class.

    Attributes:
      feats: `[C, K, D]` stored vectors.
      valid: `[C, K]` bool, whether a slot holds a written vector.
      ptr: `[C]` int32, the slot the next write of each class goes to (ring order).
      count: `[C]` int32, vectors ever written per class.
    """

    feats: jax.Array
    valid: jax.Array
    ptr: jax.Array
    count: jax.Array

    @property
    def num_classes(self) -> int:
        return self.feats.shape[0]

    @property
    def capacity(self) -> int:
        return self.feats.shape[1]


@flax.struct.dataclass
class References:
    """Reference vectors per class plus the statistics that some distances need.

    Attributes:
      refs: `[C, k, D]`, one vector per cluster of each class's memory.
      valid: `[C, k]` bool.
      variance: `[D]` per-feature variance of the memory (standardized euclidean).
      inv_cov: `[D, D]` regularised inverse covariance of the memory (mahalanobis).
    """

    refs: jax.Array
    valid: jax.Array
    variance: jax.Array
    inv_cov: jax.Array


def create(num_classes: int, capacity: int, dim: int) -> MemoryBank:
    """An empty bank."""
    for field, value in (("num_classes", num_classes), ("memory.capacity", capacity),
                         ("feature_dim", dim)):
        if value <= 0:
            raise ValueError(f"{field} must be > 0, got {value}")
    return MemoryBank(
        feats=jnp.zeros((num_classes, capacity, dim), jnp.float32),
        valid=jnp.zeros((num_classes, capacity), bool),
        ptr=jnp.zeros((num_classes,), jnp.int32),
        count=jnp.zeros((num_classes,), jnp.int32),
    )


def write(bank: MemoryBank, feats, labels, mask) -> MemoryBank:
    """Writes rows into their class's ring buffer.

    Args:
      bank: the bank.
      feats: `[N, D]` vectors.
      labels: `[N]` int class of each row.
      mask: `[N]` bool; False rows are ignored, as are rows with non-finite values or labels
        outside `[0, C)`.

    Rows of one class are written in order; if a class receives more than K rows at once, only its
    last K are kept, so capacity is never exceeded and slots are never written twice in one call.
    """
    num_classes, capacity = bank.num_classes, bank.capacity
    chex.assert_rank(feats, 2)
    labels = labels.astype(jnp.int32)
    mask = (mask.astype(bool) & jnp.all(jnp.isfinite(feats), axis=-1)
            & (labels >= 0) & (labels < num_classes))
    onehot = (labels[:, None] == jnp.arange(num_classes)) & mask[:, None]  # [N, C]
    new_per_class = jnp.sum(onehot, axis=0, dtype=jnp.int32)  # [C]
    safe_labels = jnp.clip(labels, 0, num_classes - 1)
    rank = jnp.take_along_axis(jnp.cumsum(onehot, axis=0, dtype=jnp.int32) - 1,
                               safe_labels[:, None], axis=1)[:, 0]
    keep = mask & (rank >= new_per_class[safe_labels] - capacity)
    slot = (bank.ptr[safe_labels] + rank) % capacity
    row = jnp.where(keep, safe_labels, num_classes)  # out of range -> dropped by the scatter
    return bank.replace(
        feats=bank.feats.at[row, slot].set(feats.astype(bank.feats.dtype), mode="drop"),
        valid=bank.valid.at[row, slot].set(True, mode="drop"),
        ptr=(bank.ptr + new_per_class) % capacity,
        count=bank.count + new_per_class,
    )


def sample(bank: MemoryBank, rng, num: int):
    """Draws up to `num` stored vectors per class without replacement.

    Clustering a fixed-size sample instead of the whole memory is the method's speed-up.
    Returns (feats `[C, n, D]`, mask `[C, n]`) with `n = min(num, K)`.
    """
    num = min(num, bank.capacity)
    scores = jax.random.uniform(rng, bank.valid.shape)
    scores = jnp.where(bank.valid, scores, -1.0)
    _, idx = jax.lax.top_k(scores, num)  # [C, n]
    feats = jnp.take_along_axis(bank.feats, idx[..., None], axis=1)
    return feats, jnp.take_along_axis(bank.valid, idx, axis=1)


@functools.partial(jax.jit, static_argnames=("num_clusters", "num_iters", "rule", "sample_size",
                                             "clustering"))
def refresh_references(bank: MemoryBank, rng, *, num_clusters: int, num_iters: int, rule: str,
                       sample_size: int, clustering: str = "kmeans",
                       threshold: float = 0.0) -> References:
    """Samples each class's memory, clusters it (`kmeans.cluster_references`: `clustering`,
    `threshold`) and picks one reference per cluster by `rule`."""
    sample_rng, cluster_rng = jax.random.split(rng)
    feats, mask = sample(bank, sample_rng, sample_size)
    rngs = jax.random.split(cluster_rng, bank.num_classes)
    cluster = functools.partial(kmeans.cluster_references, k=num_clusters, num_iters=num_iters,
                                rule=rule, clustering=clustering, threshold=threshold)
    refs, valid = jax.vmap(lambda p, m, r: cluster(p, m, rng=r))(feats, mask, rngs)
    flat, flat_mask = feats.reshape(-1, feats.shape[-1]), mask.reshape(-1)
    return References(
        refs=refs, valid=valid,
        variance=distances.feature_variance(flat, flat_mask),
        inv_cov=distances.inverse_covariance(flat, flat_mask),
    )


def class_distances(feats, refs: References, metric: str, *, soft: bool = False,
                    **metric_kwargs):
    """Distance of each vector to the nearest reference of each class.

    Args:
      feats: `[N, D]`.
      refs: references `[C, k, D]`.
      metric: a name in `distances.METRICS`.
      soft: relax binarized metrics (hamming, jaccard) so gradients flow.

    Returns:
      `[N, C]`; classes without any valid reference get `MISSING_DISTANCE`.
    """
    num_classes, k, dim = refs.refs.shape
    if metric == "seuclidean":
        metric_kwargs.setdefault("variance", refs.variance)
    if metric == "mahalanobis":
        metric_kwargs.setdefault("inv_cov", refs.inv_cov)
    d = distances.pairwise(feats, refs.refs.reshape(num_classes * k, dim), metric, soft=soft,
                           **metric_kwargs)
    d = jnp.where(refs.valid.reshape(-1), d, MISSING_DISTANCE).reshape(-1, num_classes, k)
    return jnp.min(d, axis=-1)


def vote(frame_class_dist, frame_mask=None):
    """Majority vote of frames; ties go to the class with the smallest mean distance.

    Args:
      frame_class_dist: `[B, T, C]` distance of each frame to each class.
      frame_mask: `[B, T]` bool of frames that vote (default: all).

    Returns:
      (prediction `[B]` int32, votes `[B, C]` int32).
    """
    b, t, c = frame_class_dist.shape
    if frame_mask is None:
        frame_mask = jnp.ones((b, t), bool)
    frame_pred = jnp.argmin(frame_class_dist, axis=-1)
    votes = jnp.sum(jax.nn.one_hot(frame_pred, c, dtype=jnp.int32) * frame_mask[..., None],
                    axis=1)
    weight = frame_mask[..., None].astype(frame_class_dist.dtype)
    mean_dist = jnp.sum(frame_class_dist * weight, 1) / jnp.maximum(jnp.sum(weight, 1), 1.0)
    tied = votes == jnp.max(votes, axis=-1, keepdims=True)
    pred = jnp.argmin(jnp.where(tied, mean_dist, jnp.inf), axis=-1).astype(jnp.int32)
    return pred, votes


def scores(frame_class_dist, frame_mask=None, temperature: float = 1.0):
    """Soft per-class video scores `[B, C]` (log-probabilities) from mean frame distances."""
    b, t, _ = frame_class_dist.shape
    if frame_mask is None:
        frame_mask = jnp.ones((b, t), bool)
    weight = frame_mask[..., None].astype(frame_class_dist.dtype)
    mean_dist = jnp.sum(frame_class_dist * weight, 1) / jnp.maximum(jnp.sum(weight, 1), 1.0)
    return jax.nn.log_softmax(-mean_dist / temperature, axis=-1)
