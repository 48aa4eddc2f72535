"""End-to-end spatio-temporal action detector: one model, no NMS, no external person detector.

    video [B, T, H, W, 3]
      -> VideoResNet (keyframe isolated from every temporal op)
           keyframe features of every stage ----> FPN -> SparseLocalizer -> boxes, person logits
           last 3D feature map [B, T, h, w, C] --> RoIAlign at the (stop-gradient) boxes, per frame
                                                     -> actor features [B, N, T, S, S, C]
                                                     -> action head -> action logits

The localizer only ever sees the keyframe (see `backbone`), so person boxes do not depend on the
other frames; the action branch sees all frames. Boxes fed to RoIAlign are `stop_gradient`-ed: the
action loss trains features, not box positions (those belong to the set loss).

Configuration: `ActionDetector`'s fields are ints, strings and three nested sections, each a
mapping of one child module's fields: `backbone` (`VideoResNet`), `localizer` (`SparseLocalizer`,
less what the detector sets itself) and `head` (`name`, a key of `HEADS`, plus that head's
fields). A new action head is a module registered in `HEADS`; its fields go under `model.head`,
and no detector field changes. `build_detector(config.model, num_actions)` builds the model from
an `ml_collections.ConfigDict` (`check_model_fields` names any unknown field first); `PRESETS`
holds named sizes; `upgrade_flat_model_config` turns the flat `model.*` fields of older configs
into the nested ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from jaxact import settings
from jaxact.models.backbone import RESNET50, VideoResNet
from jaxact.models.channel_gate import Gate
from jaxact.models.fpn import FPN
from jaxact.models.fusion_head import DecoupledFusionHead
from jaxact.models.localizer import SparseLocalizer
from jaxact.ops.boxes import clip_boxes, cxcywh_to_xyxy
from jaxact.ops.roi_align import roi_align_video

# Named sizes: `build_detector(PRESETS[name], num_actions)`; "tiny" is the class default. Nested
# like `config.model`, so `config.model.update(PRESETS[name])` overrides only the given fields.
PRESETS = {
    "tiny": {},
    "resnet50": {
        "backbone": dict(RESNET50),
        "fpn_dim": 256,
        "num_queries": 50,
        "localizer": {"num_stages": 6, "num_heads": 8, "dynamic_dim": 64, "ffn_dim": 2048},
        "head": {"name": "pooled", "hidden_dim": 512},
    },
}


class PooledActionHead(nn.Module):
    """Actor features -> multi-label action logits (a placeholder for a later fusion module).

    Attributes:
      num_actions: A.
      hidden_dim: width of the hidden layer.
      pool: "avg" or "max" over time and the RoI bins.
      use_query: also feed the localizer's query features (they know the box shape: standing
        people are taller).
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    # Allowed values of the string fields, for config checks before anything is traced.
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"pool": ("avg", "max")}

    num_actions: int
    hidden_dim: int = 128
    pool: str = "avg"
    use_query: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, actor_features: jax.Array, query_features: jax.Array | None = None):
        """`actor_features` `[B, N, T, S, S, C]` (+ `query_features` `[B, N, D]`) -> `[B, N, A]`."""
        if self.pool == "avg":
            x = jnp.mean(actor_features, axis=(2, 3, 4))
        elif self.pool == "max":
            x = jnp.max(actor_features, axis=(2, 3, 4))
        else:
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        if self.use_query:
            if query_features is None:
                raise ValueError("use_query=True needs query_features")
            x = jnp.concatenate([x, query_features], axis=-1)
        dt = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        x = nn.relu(nn.LayerNorm(name="norm", **dt)(nn.Dense(self.hidden_dim, name="hidden", **dt)(x)))
        return nn.Dense(self.num_actions, name="logits", **dt)(x)


# Action heads by `model.head.name`. A head is built as `cls(num_actions=A, dtype=..., param_dtype=...,
# **fields)` and called as `head(actor_features [B, N, T, S, S, C], query_features [B, N, D])`
# -> `[B, N, A]` logits, or a dict of `action_logits` `[B, N, A]` and per-bin behaviour
# `map_logits` `[B, N, S, S, A + 1]`; its parameters live under "action_head". "pooled" is the
# reference head (fusion 'pooled' in the ablations); "decoupled" fuses time and space
# (`model.head.fusion`: 'sum' | 'concat' | 'gram').
HEADS: dict[str, type[nn.Module]] = {"pooled": PooledActionHead, "decoupled": DecoupledFusionHead}
DEFAULT_HEAD = "pooled"  # the head of a `head` section without a "name"

# Fields of the child modules that the detector sets from its own fields (so they are not fields
# of the `backbone`, `localizer` or `head` sections).
_SET_BY_DETECTOR = {
    "backbone": ("gate", "dtype", "param_dtype"),
    "localizer": ("num_queries", "dim", "sampling_ratio", "dtype", "param_dtype"),
    "head": ("num_actions", "gate", "dtype", "param_dtype"),
}
GATES = ("off", "head", "backbone", "both")
_HEAD_GATES, _BACKBONE_GATES = ("head", "both"), ("backbone", "both")


def _is_mapping(value) -> bool:
    # `ml_collections.ConfigDict` is no `Mapping`, but has `items()`.
    return isinstance(value, Mapping) or callable(getattr(type(value), "items", None))


def _plain(value, sequence: type | None = tuple):
    """Nested mappings (ConfigDicts included) -> new dicts, lists / tuples -> `sequence` (None:
    the same type)."""
    if _is_mapping(value):
        return {k: _plain(v, sequence) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return (sequence or type(value))(_plain(v, sequence) for v in value)
    return value


def _freeze(value):
    """Nested mappings -> FrozenDicts, lists -> tuples: hashable, as a flax module's fields must be."""
    plain = _plain(value)
    return FrozenDict(plain) if isinstance(plain, dict) else plain


class ActionDetector(nn.Module):
    """Backbone -> FPN -> set-prediction localizer -> RoIAlign on the 3D map -> action head.

    Attributes:
      num_actions: A, number of (multi-label) action classes.
      backbone: `VideoResNet` fields (stem, stem_width, patch_size, block, stage_sizes, widths,
        strides, dilations, temporal_kernels, isolate_keyframe); missing ones take its defaults.
      fpn_dim: FPN width D (also the localizer's query width).
      num_queries: N predicted boxes per clip.
      localizer: `SparseLocalizer` fields except num_queries, dim and sampling_ratio (num_stages,
        num_heads, dynamic_dim, ffn_dim, roi_size, prior_prob).
      action_roi_size: S of the actor features.
      roi_sampling_ratio: RoIAlign samples per bin (localizer and actor features).
      head: the action head: `name` (a key of `HEADS`, default "pooled") and that head's fields
        (for "pooled": hidden_dim, pool, use_query).
      gate: where the temporal channel gate runs: "off", "head" (the decoupled head's temporal
        layers, `head.temporal_layers` > 0), "backbone" (every temporal mixing step of the
        backbone) or "both".
      dtype: computation dtype of every layer (e.g. bfloat16 on accelerators).
      param_dtype: parameter dtype.

    Mappings are stored as FrozenDicts (and lists as tuples), so the module stays hashable.
    """

    num_actions: int = 5
    backbone: Mapping[str, Any] = FrozenDict()
    fpn_dim: int = 64
    num_queries: int = 20
    localizer: Mapping[str, Any] = FrozenDict()
    action_roi_size: int = 7
    roi_sampling_ratio: int = 2
    head: Mapping[str, Any] = FrozenDict(name=DEFAULT_HEAD)
    gate: str = "off"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        for section in ("backbone", "localizer", "head"):
            object.__setattr__(self, section, _freeze(getattr(self, section)))
        super().__post_init__()

    # Allowed values of the string fields, for config checks before anything is traced.
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"gate": GATES}

    @nn.compact
    def __call__(self, video: jax.Array, train: bool = False, temperature=1.0,
                 select_actors: Callable[[dict], jax.Array] | None = None,
                 gate_budget: float | None = None) -> dict:
        """`video` `[B, T, H, W, 3]` (keyframe at `T // 2`).

        The rest reaches the gates and adaptive heads (`DecoupledFusionHead`): `train` samples
        the gates' and the grouping's choices (rng stream "gumbel") at Gumbel-softmax
        `temperature`; `select_actors` maps the localizer's outputs (`boxes`, `person_logits`)
        to the `[B, N]` mask of the actors that take part in the relations (in training: the
        queries matched to people; default: the head's person-score threshold); `gate_budget`:
        the compact inference path, the fraction of each gated layer's channels computed.

        Returns a dict with
          boxes: `[B, N, 4]` normalized (cx, cy, w, h);
          person_logits: `[B, N]`;
          action_logits: `[B, N, A]`;
          map_logits: `[B, N, S, S, A + 1]` per-bin behaviour logits (channel 0: none), from
            heads that make them;
          actor_features: `[B, N, T, S, S, C]` RoIAligned from the last 3D feature map;
          query_features: `[B, N, fpn_dim]`;
          aux_outputs: list of `{boxes, person_logits}` from earlier localizer stages;
          gates: with a gate, a `channel_gate.Gate` per gated layer, backbone's first (decisions
            float32, FLOPs a Python float);
          relation: from heads with relations (`DecoupledFusionHead`).
        Boxes and logits (what the losses and detections read) are float32 whatever `dtype` is;
        the features are in `dtype`.
        """
        b, t = video.shape[:2]
        dt = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        head = dict(self.head)
        head_name = head.pop("name", DEFAULT_HEAD)
        if head_name not in HEADS:
            raise ValueError(f"head.name={head_name!r}: expected one of {sorted(HEADS)}")
        sample = train and self.gate != "off" or train and head.get("relation", False)
        rng = self.make_rng("gumbel") if sample else None
        keyframe_features, features_3d, gates = VideoResNet(
            **self.backbone, gate=self.gate in _BACKBONE_GATES, name="backbone", **dt)(
            video, None if rng is None else jax.random.fold_in(rng, 0), temperature, gate_budget)
        pyramid = FPN(self.fpn_dim, name="fpn", **dt)(keyframe_features)
        loc = SparseLocalizer(num_queries=self.num_queries, dim=self.fpn_dim,
                              sampling_ratio=self.roi_sampling_ratio, name="localizer",
                              **self.localizer, **dt)(pyramid)

        # roi_align_video scales these normalized xyxy boxes to feature-map pixels (x W, x H) and
        # applies the half-pixel offset; clipping keeps bins on the frame.
        roi_boxes = clip_boxes(cxcywh_to_xyxy(jax.lax.stop_gradient(loc["boxes"])))
        actor_features = roi_align_video(features_3d, roi_boxes, self.action_roi_size,
                                         self.roi_sampling_ratio)
        s, c = self.action_roi_size, features_3d.shape[-1]
        chex.assert_shape(actor_features, (b, self.num_queries, t, s, s, c))
        head_cls = HEADS[head_name]
        adaptive = {}
        if getattr(head_cls, "ADAPTIVE", False):
            head["gate"] = self.gate in _HEAD_GATES
            adaptive = {"actor_scores": jax.nn.sigmoid(loc["person_logits"]),
                        "actor_mask": (select_actors(loc) if select_actors is not None
                                       and head.get("relation") else None),
                        "train": train, "temperature": temperature, "gate_budget": gate_budget}
        elif self.gate in _HEAD_GATES:
            raise ValueError(f"gate={self.gate!r} needs an adaptive head (decoupled), not "
                             f"{head_name!r}")
        head_out = head_cls(num_actions=self.num_actions, name="action_head", **head,
                            **dt)(actor_features, loc["query_features"], **adaptive)
        if not isinstance(head_out, Mapping):
            head_out = {"action_logits": head_out}

        def f32(tree):
            return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)

        head_out = dict(head_out)
        gates = [Gate(g.decisions.astype(jnp.float32), g.flops)  # flops stay a Python float
                 for g in gates + head_out.pop("gates", [])]
        return {
            "boxes": f32(loc["boxes"]),
            "person_logits": f32(loc["person_logits"]),
            **f32(head_out),
            **({"gates": gates} if gates else {}),
            "actor_features": actor_features,
            "query_features": loc["query_features"],
            "aux_outputs": f32(loc["aux_outputs"]),
        }


# ----------------------------------------------------------------------------- config


def _module_fields(cls: type[nn.Module], exclude: Sequence[str] = ()) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls)
                 if f.name not in ("parent", "name", *exclude))


def model_fields(head: str = DEFAULT_HEAD) -> dict[str, tuple[str, ...]]:
    """The fields of a `model` config: "" -> the top level's, then those of the "backbone",
    "localizer" and "head" sections (the latter for head `head`, "name" included)."""
    if head not in HEADS:
        raise ValueError(f"model.head.name={head!r}: expected one of {sorted(HEADS)}")
    return {
        "": _module_fields(ActionDetector, ("num_actions",)),
        "backbone": _module_fields(VideoResNet, _SET_BY_DETECTOR["backbone"]),
        "localizer": _module_fields(SparseLocalizer, _SET_BY_DETECTOR["localizer"]),
        "head": ("name", *_module_fields(HEADS[head], _SET_BY_DETECTOR["head"])),
    }


def _check_known(fields: Mapping, known: Sequence[str], prefix: str, note: str = "") -> None:
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ValueError(f"{prefix}: unknown field(s) {[f'{prefix}.{k}' for k in unknown]}; "
                         f"expected some of {sorted(known)}{note}")


def _check_choices(fields: Mapping, cls: type[nn.Module], prefix: str) -> None:
    for name, choices in getattr(cls, "CHOICES", {}).items():
        if name in fields and fields[name] not in choices:
            raise ValueError(f"{prefix}.{name}={fields[name]!r}: expected one of {choices}")


def check_model_fields(model_config) -> None:
    """Raises ValueError naming the first bad field of a `model` config (a mapping or ConfigDict):
    an unknown field (as `model.xyz`, `model.backbone.xyz`, ...), a section that is no mapping, an
    unknown head name, a string field outside its choices, or a dtype that is no float type.
    Only names and choices are checked: nothing is built or traced."""
    config = _plain(model_config)
    fields = model_fields()
    _check_known(config, fields[""], "model", " (num_actions comes from the data)")
    for section in ("backbone", "localizer", "head"):
        if section in config and not isinstance(config[section], dict):
            raise ValueError(f"model.{section} must be a mapping of fields, got "
                             f"{config[section]!r}")
    head = config.get("head", {})
    name = head.get("name", DEFAULT_HEAD)
    if name not in HEADS:
        raise ValueError(f"model.head.name={name!r}: expected one of {sorted(HEADS)}")
    _check_choices(config, ActionDetector, "model")
    gate = config.get("gate", "off")
    if gate in _HEAD_GATES and not (
            getattr(HEADS[name], "ADAPTIVE", False) and head.get("temporal_layers", 0) > 0):
        raise ValueError(f"model.gate={gate!r} gates the decoupled head's temporal layers: it "
                         "needs model.head.name='decoupled' and model.head.temporal_layers >= 1")
    fields = model_fields(name)
    classes = {"backbone": VideoResNet, "localizer": SparseLocalizer, "head": HEADS[name]}
    for section, cls in classes.items():
        sub = config.get(section, {})
        _check_known(sub, fields[section], f"model.{section}")
        _check_choices(sub, cls, f"model.{section}")
    for key in ("dtype", "param_dtype"):
        if key in config:
            settings.float_dtype(config[key], f"model.{key}")


def build_detector(model_config, num_actions: int) -> ActionDetector:
    """`ActionDetector` from a `model` config (a mapping or `ml_collections.ConfigDict`, nested as
    `PRESETS`; None: the defaults), checked by `check_model_fields` first. Nested sections become
    FrozenDicts, lists tuples and dtype names dtypes, so the model is hashable."""
    config = _plain(model_config or {})
    check_model_fields(config)
    for key in ("dtype", "param_dtype"):
        if key in config:
            config[key] = settings.float_dtype(config[key], f"model.{key}")
    return ActionDetector(num_actions=num_actions, **config)


# Flat `model.*` fields of configs written before the nested sections -> (section, field).
# fpn_dim, num_queries, action_roi_size and roi_sampling_ratio kept their names and place.
FLAT_MODEL_FIELDS = {
    **{k: ("backbone", k) for k in ("stem", "stem_width", "patch_size", "block", "stage_sizes",
                                    "widths", "strides", "dilations", "temporal_kernels",
                                    "isolate_keyframe")},
    "localizer_stages": ("localizer", "num_stages"),
    "localizer_heads": ("localizer", "num_heads"),
    "dynamic_dim": ("localizer", "dynamic_dim"),
    "ffn_dim": ("localizer", "ffn_dim"),
    "localizer_roi_size": ("localizer", "roi_size"),
    "prior_prob": ("localizer", "prior_prob"),
    "head_dim": ("head", "hidden_dim"),
    "head_pool": ("head", "pool"),
    "head_use_query": ("head", "use_query"),
}


def upgrade_flat_model_config(model) -> dict:
    """A `model` config dict saved by an older version -> today's layout, as a new dict. The old
    flat fields (`FLAT_MODEL_FIELDS`) move to the nested sections; fields added since get the
    values of those runs: head name "pooled" and float32 dtypes (with the nested layout), gate
    "off" (and the backbone's gate width), and the decoupled head's adaptive fields their (off)
    defaults. Today's configs come
    back equal. Values are not converted (JSON lists stay lists)."""
    out = _plain(model, sequence=None)
    flat = [k for k in FLAT_MODEL_FIELDS if k in out]
    for old in flat:
        section, name = FLAT_MODEL_FIELDS[old]
        sub = out.setdefault(section, {})
        value = out.pop(old)
        if name in sub and sub[name] != value:
            raise ValueError(f"model.{old}={value!r} conflicts with "
                             f"model.{section}.{name}={sub[name]!r}")
        sub[name] = value
    if flat:
        out.setdefault("head", {}).setdefault("name", DEFAULT_HEAD)
        out.setdefault("dtype", "float32")
        out.setdefault("param_dtype", "float32")
    out.setdefault("gate", "off")
    if isinstance(out.get("backbone"), dict):
        out["backbone"].setdefault("gate_hidden", VideoResNet.gate_hidden)
    head = out.get("head")
    if isinstance(head, dict) and head.get("name") == "decoupled":
        for field in DecoupledFusionHead.ADAPTIVE_FIELDS:
            head.setdefault(field, getattr(DecoupledFusionHead, field))
    return out


def gated_gflops_per_clip(model: ActionDetector, input_shape: Sequence[int]) -> float:
    """Ungated GFLOPs per clip of the layers the gate controls (0 without a gate), read from the
    `Gate`s of an abstract forward (nothing is initialised or compiled)."""
    if model.gate == "off":
        return 0.0
    total = []

    def forward(video):
        out, _ = model.init_with_output(jax.random.key(0), video)
        total.append(sum(g.flops * g.decisions[0, ..., 0, 0].size for g in out["gates"]))
        return out["boxes"]

    jax.eval_shape(forward, jax.ShapeDtypeStruct((1, *input_shape[1:]), jnp.float32))
    return float(total[0]) / 1e9


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
    return float(cost["flops"]) / 1e9 / input_shape[0]
