"""Spatio-temporal action detector: training, AVA frame-mAP evaluation and prediction.

One phase, "detector": `train.num_steps` AdamW steps on the Hungarian set loss
(`jaxact.detection_losses.set_criterion`: person, box L1 + GIoU, action BCE, deep supervision of
the earlier localizer stages). It checkpoints into `WORKDIR/checkpoints/detector` (loader position
included) and a rerun resumes from there.

Evaluation runs the model on every clip of `eval.split` and scores its keyframe detections the AVA
way: every one of the N predicted boxes of a clip is a candidate (no score threshold, no NMS),
with person score `sigmoid(person_logit)` and per-action score `person score * sigmoid(action
logit)`. `results.json` holds the frame-mAP (mean over classes with ground truth), the per-class
APs and the class-agnostic person AP@0.5; `detections.png` draws a few test keyframes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxact import detection_losses, viz
from jaxact.data import builders, pipeline, sources, video_io
from jaxact.evaluation import frame_map
from jaxact.models.detector import ActionDetector, gflops_per_clip
from jaxact.ops.boxes import cxcywh_to_xyxy
from jaxact.train import checkpoint, loop, parallel
from jaxact.train.state import TrainState, count_params, dropout_rng, make_optimizer, nonfinite_metrics

PHASE = "detector"
DATASETS = ("classroom",)  # builders with keyframe boxes and per-person actions
SPLITS = tuple(builders.SPLIT_IDS)
MATCHING = ("voc", "greedy")
HEAD_POOLS = ("avg", "max")
# ActionDetector fields that are not `model.*` config fields: flax's bookkeeping, and the action
# count, which the dataset defines.
_NOT_MODEL_FIELDS = {"parent", "name", "num_actions"}


# ----------------------------------------------------------------------------- config checks


def dataset_max_people(config) -> int:
    """Most people in one clip of the configured builder (metadata only: generates nothing)."""
    presets = {c.name: c for c in builders.BUILDERS[config.data.name].BUILDER_CONFIGS}
    if config.data.builder_config not in presets:
        raise ValueError(f"data.builder_config={config.data.builder_config!r}: expected one of "
                         f"{sorted(presets)}")
    return presets[config.data.builder_config].render.max_people


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Fails before any data generation or compile, naming the offending field."""
    parallel.check_mode(config.parallel.mode)
    if config.data.name not in DATASETS:
        raise ValueError(f"data.name={config.data.name!r}: the detector needs keyframe boxes and "
                         f"actions; expected one of {DATASETS}")
    for field in ("data.num_frames", "data.frame_stride", "data.max_people", "train.num_steps",
                  "model.num_queries"):
        section, name = field.split(".")
        if config[section][name] < 1:
            raise ValueError(f"{field} must be >= 1, got {config[section][name]}")
    most = dataset_max_people(config)
    if config.data.max_people < most:
        raise ValueError(f"data.max_people={config.data.max_people}: clips of "
                         f"{config.data.name}/{config.data.builder_config} hold up to {most} people")
    if config.model.num_queries < config.data.max_people:
        raise ValueError(f"model.num_queries={config.model.num_queries} must be >= "
                         f"data.max_people={config.data.max_people} (one box per person at least)")
    if not 0.0 <= config.data.flip_prob <= 1.0:
        raise ValueError(f"data.flip_prob={config.data.flip_prob} must be in [0, 1]")
    known = {f.name for f in dataclasses.fields(ActionDetector)} - _NOT_MODEL_FIELDS
    unknown = sorted(set(config.model) - known)
    if unknown:
        raise ValueError(f"model: unknown field(s) {['model.' + k for k in unknown]}; expected "
                         f"ActionDetector fields {sorted(known)} (num_actions comes from the data)")
    if config.model.head_pool not in HEAD_POOLS:
        raise ValueError(f"model.head_pool={config.model.head_pool!r}: expected one of {HEAD_POOLS}")
    try:
        weights = detection_losses.as_weights(config.loss)
    except ValueError as e:
        raise ValueError(f"loss: {e}") from e
    if weights.cost_type not in ("prob", "focal"):
        raise ValueError(f"loss.cost_type={weights.cost_type!r}: expected 'prob' or 'focal'")
    if config.eval.split not in SPLITS:
        raise ValueError(f"eval.split={config.eval.split!r}: expected one of {SPLITS}")
    if not 0.0 < config.eval.iou_threshold <= 1.0:
        raise ValueError(f"eval.iou_threshold={config.eval.iou_threshold} must be in (0, 1]")
    if config.eval.matching not in MATCHING:
        raise ValueError(f"eval.matching={config.eval.matching!r}: expected one of {MATCHING}")
    for field in ("train.batch_size", "eval.batch_size"):
        section, name = field.split(".")
        if config[section][name] <= 0 or config[section][name] % num_devices:
            raise ValueError(f"{field}={config[section][name]} must be a positive multiple of the "
                             f"number of devices ({num_devices})")


# ----------------------------------------------------------------------------- model + step


def build_model(config: ml_collections.ConfigDict, num_actions: int) -> ActionDetector:
    return ActionDetector(num_actions=num_actions, **config.model)


def make_train_step(model: ActionDetector, weights):
    """`(state, batch, axis_name=None) -> (state, metrics)` on the set loss with `weights`
    (anything `detection_losses.as_weights` takes); `axis_name`: see `parallel.DataParallel`.
    batch: `video` `[B, T, H, W, 3]`, `boxes` `[B, P, 4]` xyxy normalized, `actions`
    `[B, P, A]`, `person_mask` `[B, P]`."""
    weights = detection_losses.as_weights(weights)  # hashable: a constant of the trace

    def step(state: TrainState, batch, axis_name=None):
        targets = {k: batch[k] for k in ("boxes", "actions", "person_mask")}
        rng = parallel.device_rng(dropout_rng(state), axis_name)

        def loss_fn(params):
            # `train` and the dropout rng are unused by today's detector; passing them keeps the
            # step right once a module starts using them.
            outputs = model.apply({"params": params}, batch["video"], train=True,
                                  rngs={"dropout": rng})
            return detection_losses.set_criterion(outputs, targets, weights, axis_name)

        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        terms, grads = parallel.global_sum((terms, grads), axis_name)
        new_state = state.apply_gradients(grads)
        metrics = {**terms, "grad_norm": optax.tree.norm(grads),
                   "param_norm": optax.tree.norm(new_state.params),
                   **nonfinite_metrics(new_state.opt_state)}
        return new_state, metrics

    return step


def detections_from_outputs(outputs: dict) -> dict:
    """Model outputs -> AVA-style scored detections.

    Returns `boxes` `[B, N, 4]` xyxy normalized (clipped to the frame), `person_scores` `[B, N]`
    = sigmoid(person logit) and `action_scores` `[B, N, A]` = person score * sigmoid(action logit).
    """
    person = jax.nn.sigmoid(outputs["person_logits"])
    return {"boxes": jnp.clip(cxcywh_to_xyxy(outputs["boxes"]), 0.0, 1.0),
            "person_scores": person,
            "action_scores": person[..., None] * jax.nn.sigmoid(outputs["action_logits"])}


# ----------------------------------------------------------------------------- setup


@dataclasses.dataclass(frozen=True)
class Programs:
    """The compiled functions of one setting: model, loss weights, optimizer, parallel mode,
    input shape.

    Built once per process by `programs` and shared by every `Experiment` with equal settings, so
    evaluation or prediction after training (or a second run in the same process) reuses the
    compiled code, and a state made by one Experiment fits another's step (the optimizer, a
    static field of the state, is the same object).
    """

    tx: optax.GradientTransformation
    init: Callable  # rng key -> TrainState, replicated
    train_step: Callable  # (state, batch) -> (state, metrics); donates the state
    predict: Callable  # (params, data_parallel.batch(video)) -> this process's detections


# XLA backend optimisation level 0: the tiny train step compiles in ~13 s instead of ~23 s on CPU.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@functools.cache
def programs(model: ActionDetector, weights: detection_losses.LossWeights,
             train_config: ml_collections.FrozenConfigDict,
             data_parallel: parallel.DataParallel, input_shape: tuple[int, ...]) -> Programs:
    """`Programs` for `model` on clips of `input_shape` `[1, T, H, W, 3]` (cached)."""
    tx = make_optimizer(train_config)
    replicated = parallel.replicated(data_parallel.mesh)

    def init(rng):
        params_rng, state_rng = jax.random.split(rng)
        params = model.init(params_rng, jnp.zeros(input_shape, jnp.float32))["params"]
        return TrainState.create(params, tx, state_rng)

    # Init runs once, so its speed does not matter, but XLA CPU spends long optimising its ~150
    # random-initialiser kernels: at backend level 0 it compiles ~3x faster (27 s -> 10 s for the
    # tiny model on 2 busy cores).
    init_fn = jax.jit(init, out_shardings=replicated).lower(jax.random.key(0)).compile(
        compiler_options=FAST_COMPILE)
    options = FAST_COMPILE if train_config.fast_compile else None

    def predict(params, video):
        return detections_from_outputs(model.apply({"params": params}, video))

    return Programs(
        tx=tx, init=init_fn,
        train_step=data_parallel.train_step(make_train_step(model, weights), options),
        predict=data_parallel.map_rows(predict, num_broadcast=1, compiler_options=options))


@functools.cache
def model_gflops(model: ActionDetector, input_shape: tuple[int, ...]) -> float:
    """Forward GFLOPs per clip (XLA cost analysis; abstract params, so nothing is initialised)."""
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape, jnp.float32))
    return gflops_per_clip(model, variables, input_shape)


class Experiment:
    """Everything a run needs, built once from the config: data, model, mesh, jitted functions."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config, self.workdir = config, workdir
        os.makedirs(workdir, exist_ok=True)
        self.mesh = parallel.make_mesh()
        validate_config(config, self.mesh.size)
        self.data_parallel = parallel.DataParallel(self.mesh, config.parallel.mode)
        c = config.data
        self.builder = builders.load(c.name, c.builder_config, c.data_dir)
        self.description = f"{c.name}/{c.builder_config}"
        self.class_names = list(self.builder.CLASS_NAMES)
        self.num_actions = len(self.class_names)
        self.frame_shape = tuple(self.builder.info.features["video"].shape[1:])  # (H, W, 3)
        self.model = build_model(config, self.num_actions)
        self.programs = programs(self.model, detection_losses.as_weights(config.loss),
                                 ml_collections.FrozenConfigDict(config.train), self.data_parallel,
                                 self.input_shape(1))

    # -- data
    def source(self, split: str):
        return self.builder.as_data_source(split)

    def transform(self, train: bool) -> pipeline.KeyframeTransform:
        c = self.config.data
        return pipeline.KeyframeTransform(num_frames=c.num_frames, max_people=c.max_people,
                                          train=train, stride=c.frame_stride,
                                          flip_prob=c.flip_prob)

    def train_loader(self) -> pipeline.Loader:
        c = self.config
        return pipeline.make_loader(self.source("train"), self.transform(train=True),
                                    global_batch_size=c.train.batch_size, seed=c.seed, train=True,
                                    num_threads=c.data.num_threads, prefetch=c.data.prefetch)

    def eval_loader(self, split: str) -> pipeline.Loader:
        c = self.config
        return pipeline.make_loader(self.source(split), self.transform(train=False),
                                    global_batch_size=c.eval.batch_size, seed=c.seed, train=False,
                                    num_threads=c.data.num_threads, prefetch=c.data.prefetch)

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        """`[B, T, H, W, 3]` of the model's input."""
        return (batch_size, self.config.data.num_frames, *self.frame_shape)

    # -- state + jitted functions
    def init_state(self) -> TrainState:
        return self.programs.init(jax.random.key(self.config.seed))

    @property
    def train_step(self):
        return self.programs.train_step

    @property
    def predict_fn(self):
        return self.programs.predict


# ----------------------------------------------------------------------------- train


def run_phase(exp: Experiment, state: TrainState, step_fn, loader, end_step: int) -> TrainState:
    return loop.run_phase(workdir=exp.workdir, data_parallel=exp.data_parallel,
                          train_config=exp.config.train,
                          phase=PHASE, state=state, step_fn=step_fn, loader=loader,
                          end_step=end_step)


def checkpoint_manager(exp: Experiment):
    return checkpoint.manager(os.path.join(exp.workdir, "checkpoints", PHASE),
                              exp.config.train.max_to_keep)


def train(exp: Experiment) -> dict:
    """Trains to `train.num_steps` (resuming if a checkpoint exists); returns the final state,
    the step it resumed from and this call's training wall time."""
    resumed_from = checkpoint_manager(exp).latest_step() or 0
    start = time.time()
    state = run_phase(exp, exp.init_state(), exp.train_step, exp.train_loader(),
                      exp.config.train.num_steps)
    return {"state": state, "resumed_from_step": resumed_from, "train_seconds": time.time() - start}


def restore_final(exp: Experiment) -> TrainState:
    loop.check_class_names(exp.workdir, exp.class_names)
    restored = checkpoint.restore(checkpoint_manager(exp), exp.init_state())
    if restored is None:
        raise FileNotFoundError(f"no '{PHASE}' checkpoint in {exp.workdir}; train first")
    return restored[0]


# ----------------------------------------------------------------------------- evaluation


def _keyframe_image(video: np.ndarray) -> np.ndarray:
    """Normalized clip `[T, H, W, 3]` -> its keyframe as uint8 `[H, W, 3]`."""
    frame = video[video.shape[0] // 2] * pipeline.PIXEL_STD + pipeline.PIXEL_MEAN
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)


def predict_split(exp: Experiment, params, split: str, num_images: int = 0) -> dict:
    """Detections and ground truth of every clip of `split` (padding removed).

    Returns `detections` and `ground_truth` (lists in `frame_map.frame_map`'s format, one entry
    per clip) and `images`: the uint8 keyframes `[H, W, 3]` of the first `num_images` clips of
    this process (process 0 holds the first rows of every global batch).
    """
    detections, ground_truth, images = [], [], []
    for batch in exp.eval_loader(split):
        out = exp.predict_fn(params, exp.data_parallel.batch(batch["video"]))
        out["boxes_pred"] = out.pop("boxes")  # `boxes` is the ground truth's key
        local_rows = len(batch["mask"])
        rows = parallel.all_hosts(
            {**out, **{k: batch[k] for k in ("boxes", "actions", "person_mask", "mask")}})
        for i in np.flatnonzero(rows["mask"]):
            people = rows["person_mask"][i]
            detections.append({"boxes": rows["boxes_pred"][i], "scores": rows["action_scores"][i],
                               "person_scores": rows["person_scores"][i]})
            ground_truth.append({"boxes": rows["boxes"][i][people],
                                 "labels": rows["actions"][i][people]})
            if len(images) < num_images and i < local_rows:
                images.append((len(detections) - 1, _keyframe_image(batch["video"][i])))
    return {"detections": detections, "ground_truth": ground_truth, "images": images}


def _number(x) -> float | None:
    """float, or None for NaN (classes without ground truth): results.json stays strict JSON."""
    return None if math.isnan(x) else float(x)


def evaluate(exp: Experiment, params) -> dict:
    """Frame-mAP, per-class AP and person AP@0.5 on `eval.split`; the `_plot` entry holds what
    `detections.png` needs."""
    c = exp.config.eval
    start = time.time()
    out = predict_split(exp, params, c.split, c.plot_num_clips)
    dets, gts = out["detections"], out["ground_truth"]
    scores = frame_map.frame_map(dets, gts, exp.num_actions, c.iou_threshold, c.matching)
    at_50 = scores if c.iou_threshold == 0.5 else frame_map.frame_map(
        dets, gts, exp.num_actions, 0.5, c.matching)
    results = {
        "frame_map": _number(scores["map"]),
        "person_ap50": _number(at_50["person_ap"]),
        "per_class_ap": {name: _number(ap)
                         for name, ap in zip(exp.class_names, scores["per_class_ap"], strict=True)},
        "dataset": exp.description,
        "split": c.split,
        "num_clips": len(dets),
        "num_people": int(sum(len(g["boxes"]) for g in gts)),
        "iou_threshold": c.iou_threshold,
        "eval_seconds": round(time.time() - start, 1),
    }
    logging.info("%s: frame-mAP %.4f, person AP@0.5 %.4f, per class %s", c.split,
                 scores["map"], at_50["person_ap"], results["per_class_ap"])
    index = [i for i, _ in out["images"]]
    results["_plot"] = {"images": [img for _, img in out["images"]],
                        "detections": [dets[i] for i in index],
                        "ground_truth": [gts[i] for i in index]}
    return results


def write_results(exp: Experiment, results: dict, extra: dict) -> dict:
    plot = results.pop("_plot")
    results.update(extra)
    if jax.process_index() == 0:
        loop.write_json(os.path.join(exp.workdir, "results.json"), results)
        viz.plot_detections(plot["images"], plot["detections"], plot["ground_truth"],
                            exp.class_names, os.path.join(exp.workdir, "detections.png"),
                            score_threshold=exp.config.eval.plot_score_threshold)
    return results


def model_cost(exp: Experiment, params) -> dict:
    return {"num_params": count_params(params),
            "gflops_per_clip": round(model_gflops(exp.model, exp.input_shape(1)), 4)}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    exp = Experiment(config, workdir)
    loop.check_class_names(exp.workdir, exp.class_names)
    out = train(exp)
    train_seconds = round(out["train_seconds"], 1)
    if out["resumed_from_step"] >= config.train.num_steps:  # nothing left to train: keep the time
        train_seconds = loop.previous_results(workdir).get("train_seconds", train_seconds)
    results = evaluate(exp, out["state"].params)
    return write_results(exp, results, {
        **model_cost(exp, out["state"].params),
        "train_seconds": train_seconds,
        "resumed_from_step": out["resumed_from_step"],
        "config_name": config.config_name,
    })


def evaluate_from_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """--mode=eval: restores the final state and recomputes results.json."""
    exp = Experiment(config, workdir)
    state = restore_final(exp)
    previous = loop.previous_results(workdir)
    results = evaluate(exp, state.params)
    return write_results(exp, results, {
        **model_cost(exp, state.params),
        "train_seconds": previous.get("train_seconds"),
        "resumed_from_step": previous.get("resumed_from_step"),
        "config_name": config.config_name,
    })


# ----------------------------------------------------------------------------- predict


def read_frames(path: str, frame_shape: tuple[int, ...]) -> np.ndarray:
    """uint8 frames `[T, H, W, 3]` of a .npy / .npz file or a video file (decoded and resized to
    the training resolution); fails naming the file otherwise."""
    if path.lower().endswith(video_io.VIDEO_EXTENSIONS):
        frames = video_io.read_video(path, size=tuple(frame_shape[:2]))
    else:
        frames = sources.read_array(path, ("video", "frames"))
    expected = f"[T>=1, {', '.join(map(str, frame_shape))}] uint8"
    if frames.ndim != 4 or tuple(frames.shape[1:]) != tuple(frame_shape) or len(frames) == 0:
        raise ValueError(f"{path}: frames have shape {frames.shape}, expected {expected}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames have dtype {frames.dtype}, expected {expected}")
    return frames


def predict_video(config: ml_collections.ConfigDict, workdir: str, video_path: str) -> dict:
    """--mode=predict: detects people and their actions at the middle frame of one clip.

    The clip is a video file, or a .npy / .npz of uint8 frames `[T, H, W, 3]` at the training
    resolution; the keyframe is frame `T // 2`. Returns (and logs) the boxes whose person score exceeds
    `eval.plot_score_threshold`, best first, each with its per-action scores.
    """
    exp = Experiment(config, workdir)
    frames = read_frames(video_path, exp.frame_shape)  # a bad file fails before any restore
    state = restore_final(exp)
    keyframe = len(frames) // 2
    record = {"video": frames, "keyframe": keyframe, "boxes": np.zeros((0, 4), np.float32),
              "actions": np.zeros((0, exp.num_actions), np.uint8),
              "person_ids": np.zeros((0,), np.int64)}
    video = exp.transform(train=False)(record, None)["video"][None]
    video = np.repeat(video, jax.local_device_count(), axis=0)  # one row per local device
    out = exp.predict_fn(state.params, exp.data_parallel.batch(video))
    threshold = config.eval.plot_score_threshold
    person = out["person_scores"][0]
    found = []
    for n in np.argsort(-person, kind="stable"):
        if person[n] <= threshold:
            break
        actions = {name: round(float(s), 4)
                   for name, s in zip(exp.class_names, out["action_scores"][0, n], strict=True)}
        found.append({"box_xyxy": [round(float(v), 4) for v in out["boxes"][0, n]],
                      "person_score": round(float(person[n]), 4), "action_scores": actions})
        logging.info("box %s person %.3f | %s", found[-1]["box_xyxy"], person[n],
                     " ".join(f"{k}={v:.3f}" for k, v in actions.items()))
    return {"video": video_path, "keyframe": keyframe, "score_threshold": threshold,
            "detections": found}
