"""Spatio-temporal action detector: training, AVA frame-mAP evaluation and prediction.

One phase, "detector": `train.num_steps` steps on the Hungarian set loss
(`jaxact.detection_losses.set_criterion`: person, box L1 + GIoU, action BCE, deep supervision of
the earlier localizer stages). It checkpoints into `WORKDIR/checkpoints/detector` (loader position
included) and a rerun resumes from there. Evaluation: `jaxact.evaluation.detection`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxact import detection_losses, settings
from jaxact.data import builders, sources
from jaxact.evaluation import detection
from jaxact.models.detector import (
    ActionDetector,
    build_detector,
    check_model_fields,
    gflops_per_clip,
)
from jaxact.ops.boxes import clip_boxes, cxcywh_to_xyxy
from jaxact.train import experiment, loop, parallel
from jaxact.train import state as train_state
from jaxact.train.state import TrainState

PHASE = "detector"
MATCHING = ("voc", "greedy")
SPLITS = tuple(builders.SPLIT_IDS)


# ----------------------------------------------------------------------------- model + step


def make_train_step(model: ActionDetector, weights):
    """`(state, batch, axis_name=None) -> (state, metrics)` on the set loss with `weights`
    (anything `detection_losses.as_weights` takes); `axis_name`: see `parallel.DataParallel`.
    batch: `video` `[B, T, H, W, 3]`, `boxes` `[B, P, 4]` xyxy normalized, `actions`
    `[B, P, A]`, `person_mask` `[B, P]`."""
    weights = detection_losses.as_weights(weights)  # hashable: a constant of the trace

    def step(state: TrainState, batch, axis_name=None):
        targets = {k: batch[k] for k in ("boxes", "actions", "person_mask")}
        rng = parallel.device_rng(train_state.dropout_rng(state), axis_name)
        # Terms are divided by the people of the global batch, as DETR all-reduces its box count.
        num_people = parallel.global_count(
            jnp.sum(targets["person_mask"].astype(jnp.float32)), axis_name)

        def loss_fn(params):
            # `train` and the dropout rng are unused by today's detector; passing them keeps the
            # step right once a module starts using them.
            outputs = model.apply({"params": params}, batch["video"], train=True,
                                  rngs={"dropout": rng})
            return detection_losses.set_criterion(outputs, targets, weights, num_people)

        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        metrics = parallel.global_metrics(terms, axis_name)
        grads = parallel.global_sum(grads, axis_name)
        new_state = state.apply_gradients(grads=grads)
        metrics.update(grad_norm=optax.tree.norm(grads),
                       param_norm=optax.tree.norm(new_state.params),
                       **train_state.nonfinite_metrics(new_state.opt_state))
        return new_state, metrics

    return step


def detections_from_outputs(outputs: dict) -> dict:
    """Model outputs -> AVA-style scored detections.

    Returns `boxes` `[B, N, 4]` xyxy normalized (clipped to the frame), `person_scores` `[B, N]`
    = sigmoid(person logit) and `action_scores` `[B, N, A]` = person score * sigmoid(action logit).
    """
    person = jax.nn.sigmoid(outputs["person_logits"])
    return {"boxes": clip_boxes(cxcywh_to_xyxy(outputs["boxes"])),
            "person_scores": person,
            "action_scores": person[..., None] * jax.nn.sigmoid(outputs["action_logits"])}


# ----------------------------------------------------------------------------- programs


@dataclasses.dataclass(frozen=True)
class Programs:
    """The compiled functions of one setting: model, loss weights, optimizer, parallel mode,
    input shape. Built once per process by `programs` and shared by every Experiment with equal
    settings (see `jaxact.train.classifier.Programs`)."""

    init: Callable  # rng key -> TrainState, replicated
    train_step: Callable  # (state, batch) -> (state, metrics); donates the state
    predict: Callable  # (params, data_parallel.batch(video)) -> this process's detections


# XLA backend optimisation level 0: much faster compiles of the tiny programs on CPU.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@functools.cache
def programs(model: ActionDetector, weights: detection_losses.LossWeights,
             train_config: ml_collections.FrozenConfigDict,
             data_parallel: parallel.DataParallel, input_shape: tuple[int, ...]) -> Programs:
    """`Programs` for `model` on clips of `input_shape` `[1, T, H, W, 3]` (cached)."""
    tx = train_state.make_optimizer(train_config)
    replicated = parallel.replicated(data_parallel.mesh)

    init = train_state.make_init(model, tx, input_shape)
    # Init runs once, but XLA CPU spends long optimising its many random-initialiser kernels.
    init_fn = jax.jit(init, out_shardings=replicated).lower(jax.random.key(0)).compile(
        compiler_options=FAST_COMPILE)
    options = FAST_COMPILE if train_config.fast_compile else None

    def predict(params, video):
        return detections_from_outputs(model.apply({"params": params}, video))

    return Programs(
        init=init_fn,
        train_step=data_parallel.train_step(make_train_step(model, weights), options),
        predict=data_parallel.map_rows(predict, num_broadcast=1, compiler_options=options))


@functools.cache
def model_gflops(model: ActionDetector, input_shape: tuple[int, ...]) -> float:
    """Forward GFLOPs per clip (XLA cost analysis; abstract params, so nothing is initialised)."""
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape, jnp.float32))
    return gflops_per_clip(model, variables, input_shape)


# ----------------------------------------------------------------------------- the experiment


class Experiment(experiment.ExperimentBase):
    """The action detector on a detection dataset (keyframe boxes, per-person actions)."""

    TASK = "detection"
    KEPT_FROM_TRAINING = ("train_seconds", "resumed_from_step")

    def validate(self) -> None:
        c = self.config
        for field in ("data.num_frames", "data.frame_stride", "data.max_people",
                      "train.num_steps", "model.num_queries"):
            section, name = field.split(".")
            if c[section][name] < 1:
                raise ValueError(f"{field} must be >= 1, got {c[section][name]}")
        most = sources.detection_max_people(c.data)  # metadata only: generates nothing
        if c.data.max_people < most:
            raise ValueError(f"data.max_people={c.data.max_people}: clips of "
                             f"{c.data.name}/{c.data.builder_config} hold up to {most} people")
        if c.model.num_queries < c.data.max_people:
            raise ValueError(f"model.num_queries={c.model.num_queries} must be >= "
                             f"data.max_people={c.data.max_people} (one box per person at least)")
        if not 0.0 <= c.data.flip_prob <= 1.0:
            raise ValueError(f"data.flip_prob={c.data.flip_prob} must be in [0, 1]")
        check_model_fields(c.model)
        self.weights = detection_losses.as_weights(c.loss)
        settings.check_choice(c.eval.split, SPLITS, "eval.split")
        if not 0.0 < c.eval.iou_threshold <= 1.0:
            raise ValueError(f"eval.iou_threshold={c.eval.iou_threshold} must be in (0, 1]")
        settings.check_choice(c.eval.matching, MATCHING, "eval.matching")

    def build(self) -> None:
        self.model = build_detector(self.config.model, len(self.class_names))
        self.programs = programs(self.model, self.weights,
                                 ml_collections.FrozenConfigDict(self.config.train),
                                 self.data_parallel, self.input_shape(1))

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        """`[B, T, H, W, 3]` of the model's input."""
        return (batch_size, self.config.data.num_frames, *self.data.frame_shape)

    def init_state(self) -> TrainState:
        return self.programs.init(jax.random.key(self.config.seed))

    def train(self) -> tuple[dict, dict]:
        """Trains to `train.num_steps`, resuming if a checkpoint exists."""
        c = self.config
        resumed_from = self.checkpoint_manager(PHASE).latest_step() or 0
        start = time.time()
        loader = self.make_loader("train", self.data.transform(train=True), train=True)
        state = self.run_phase(PHASE, self.init_state(), self.programs.train_step, loader,
                               c.train.num_steps)
        train_seconds = round(time.time() - start, 1)
        if resumed_from >= c.train.num_steps:  # nothing left to train: keep the time
            train_seconds = loop.previous_results(self.workdir).get("train_seconds", train_seconds)
        return state.params, {"train_seconds": train_seconds, "resumed_from_step": resumed_from}

    def restore_final(self):
        return self.restore(PHASE, self.init_state()).params

    # -- evaluation
    def predict_batch(self, params, batch: dict) -> dict:
        out = self.programs.predict(params, self.data_parallel.batch(batch["video"]))
        out["boxes_pred"] = out.pop("boxes")  # `boxes` is the ground truth's key
        return parallel.all_hosts(
            {**out, **{k: batch[k] for k in ("boxes", "actions", "person_mask", "mask")}})

    def eval_loader(self, split: str):
        return self.make_loader(split, self.data.transform(train=False), train=False)

    def evaluators(self) -> list:
        c = self.config.eval
        return [detection.FrameMapEvaluator(
            predict_batch=self.predict_batch, loader=self.eval_loader, split=c.split,
            class_names=tuple(self.class_names), description=self.data.description,
            iou_threshold=c.iou_threshold, matching=c.matching, plot_num_clips=c.plot_num_clips,
            plot_score_threshold=c.plot_score_threshold)]

    def cost(self, params) -> dict:
        return {"num_params": train_state.count_params(params),
                "gflops_per_clip": round(model_gflops(self.model, self.input_shape(1)), 4)}

    # -- predict
    def predict_video(self, path: str) -> dict:
        """Detects people and their actions at the middle frame of one clip.

        The clip is a video file, or a .npy / .npz of uint8 frames `[T, H, W, 3]` at the training
        resolution; the keyframe is frame `T // 2`. Returns (and logs) the boxes whose person
        score exceeds `eval.plot_score_threshold`, best first, each with its per-action scores.
        """
        frames = self.data.read_clip(path)  # a bad file fails before any restore
        params = self.restore_final()
        keyframe = len(frames) // 2
        num_actions = len(self.class_names)
        record = {"video": frames, "keyframe": keyframe, "boxes": np.zeros((0, 4), np.float32),
                  "actions": np.zeros((0, num_actions), np.uint8),
                  "person_ids": np.zeros((0,), np.int64)}
        video = self.data.transform(train=False)(record, None)["video"][None]
        video = np.repeat(video, jax.local_device_count(), axis=0)  # one row per local device
        out = self.programs.predict(params, self.data_parallel.batch(video))
        threshold = self.config.eval.plot_score_threshold
        person = out["person_scores"][0]
        found = []
        for n in np.argsort(-person, kind="stable"):
            if person[n] <= threshold:
                break
            actions = {name: round(float(s), 4) for name, s in
                       zip(self.class_names, out["action_scores"][0, n], strict=True)}
            found.append({"box_xyxy": [round(float(v), 4) for v in out["boxes"][0, n]],
                          "person_score": round(float(person[n]), 4), "action_scores": actions})
            logging.info("box %s person %.3f | %s", found[-1]["box_xyxy"], person[n],
                         " ".join(f"{k}={v:.3f}" for k, v in actions.items()))
        return {"video": path, "keyframe": keyframe, "score_threshold": threshold,
                "detections": found}
