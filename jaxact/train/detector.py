"""Spatio-temporal action detector: training, AVA frame-mAP evaluation and prediction.

One phase, "detector": `train.num_steps` steps on the Hungarian set loss
(`jaxact.detection_losses.set_criterion`: person, box L1 + GIoU, action BCE, deep supervision of
the earlier localizer stages). It checkpoints into `WORKDIR/checkpoints/detector` (loader position
included) and a rerun resumes from there. Evaluation: `jaxact.evaluation.detection`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import traverse_util

from jaxact import console, detection_losses, settings, viz
from jaxact.data import behaviour_labels, builders, pipeline, sources, video_io
from jaxact.evaluation import behaviour_maps, detection
from jaxact.models import channel_gate
from jaxact.models.detector import (
    ActionDetector,
    build_detector,
    check_model_fields,
    gated_gflops_per_clip,
    gflops_per_clip,
)
from jaxact.ops.boxes import clip_boxes, cxcywh_to_xyxy
from jaxact.train import checkpoint, experiment, loop, parallel
from jaxact.train import state as train_state
from jaxact.train.state import TrainState

PHASE = "detector"
MATCHING = ("voc", "greedy")
SPLITS = tuple(builders.SPLIT_IDS)


# ----------------------------------------------------------------------------- model + step


def gumbel_temperature(train_config) -> Callable[[jax.Array], jax.Array]:
    """step -> the Gumbel-softmax temperature of the adaptive layers: exponential annealing from
    `train.temperature_start` at step 0 to `train.temperature_end` at `train.num_steps`."""
    start, end = float(train_config.temperature_start), float(train_config.temperature_end)
    if start <= 0 or end <= 0:
        raise ValueError(f"train.temperature_start={start} and train.temperature_end={end} "
                         "must be > 0")
    steps = max(int(train_config.num_steps), 1)
    return lambda step: start * (end / start) ** jnp.minimum(step / steps, 1.0)


def make_train_step(model: ActionDetector, weights, map_ranks: tuple[int, ...] | None = None,
                    temperature: Callable[[jax.Array], jax.Array] | None = None):
    """`(state, batch, axis_name=None) -> (state, metrics)` on the set loss with `weights`
    (anything `detection_losses.as_weights` takes); `axis_name`: see `parallel.DataParallel`.
    batch: `video` `[B, T, H, W, 3]`, `boxes` `[B, P, 4]` xyxy normalized, `actions`
    `[B, P, A]`, `person_mask` `[B, P]`, and `owner` `[B, H, W]` where the data has it (the
    behaviour-map target). `map_ranks` `[A]`: the priority of each action in the label images
    (`behaviour_labels.priority_ranks`); the map then learns each person's top action alone.
    `temperature`: step -> Gumbel-softmax temperature of the gate and grouping (default 1).
    Relations see the queries matched to people (the loss's own matching)."""
    weights = detection_losses.as_weights(weights)  # hashable: a constant of the trace

    def step(state: TrainState, batch, axis_name=None):
        targets = {k: batch[k] for k in ("boxes", "actions", "person_mask", "owner")
                   if k in batch}
        if map_ranks is not None and "owner" in batch:
            targets["map_actions"] = detection_losses.priority_one_hot(targets["actions"],
                                                                       map_ranks)
        rng = parallel.device_rng(train_state.dropout_rng(state), axis_name)
        # Terms are divided by the people of the global batch, as DETR all-reduces its box count.
        num_people = parallel.global_count(
            jnp.sum(targets["person_mask"].astype(jnp.float32)), axis_name)
        num_clips = parallel.global_count(
            jnp.asarray(batch["video"].shape[0], jnp.float32), axis_name)
        tau = 1.0 if temperature is None else temperature(state.step)

        def matched(loc):
            return detection_losses.match(loc, targets, weights).pred_matched

        def loss_fn(params):
            outputs = model.apply({"params": params}, batch["video"], train=True,
                                  temperature=tau, select_actors=matched,
                                  rngs={"dropout": rng, "gumbel": jax.random.fold_in(rng, 1)})
            return detection_losses.set_criterion(outputs, targets, weights, num_people,
                                                  num_clips)

        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        metrics = parallel.global_metrics(terms, axis_name)
        grads = parallel.global_sum(grads, axis_name)
        new_state = state.apply_gradients(grads=grads)
        metrics.update(grad_norm=optax.tree.norm(grads),
                       param_norm=optax.tree.norm(new_state.params),
                       **train_state.nonfinite_metrics(new_state.opt_state))
        if temperature is not None:
            metrics["temperature"] = jnp.asarray(tau, jnp.float32)
        return new_state, metrics

    return step


def detections_from_outputs(outputs: dict) -> dict:
    """Model outputs -> AVA-style scored detections.

    Returns `boxes` `[B, N, 4]` xyxy normalized (clipped to the frame), `person_scores` `[B, N]`
    = sigmoid(person logit), `action_scores` `[B, N, A]` = person score * sigmoid(action logit)
    and, from heads with behaviour maps, `map_probs` `[B, N, S, S, A + 1]`: the per-bin sigmoids
    normalised over the A + 1 channels. With a gate: `gate_flops` `[B]`, the counted fraction
    of the gated layers' FLOPs per clip, `gate_fractions` `[B, L, 3]` (keep, reuse, drop per
    layer); from the backbone's gates `gate_clip_kept` `[B, L_b]` (kept fraction of channels),
    from the head's `gate_actor_flops` `[B, N]` (counted fraction per actor) and `gate_kept`
    `[B, N, L_h]` (kept channels); with relations: `groups_used`
    `[B]`.
    """
    person = jax.nn.sigmoid(outputs["person_logits"])
    out = {"boxes": clip_boxes(cxcywh_to_xyxy(outputs["boxes"])),
           "person_scores": person,
           "action_scores": person[..., None] * jax.nn.sigmoid(outputs["action_logits"])}
    if "map_logits" in outputs:
        probs = jax.nn.sigmoid(outputs["map_logits"])
        out["map_probs"] = probs / jnp.maximum(jnp.sum(probs, axis=-1, keepdims=True), 1e-6)
    if outputs.get("gates"):  # counted compute: a reused channel is a copy, no FLOPs
        gates = outputs["gates"]
        out["gate_flops"] = channel_gate.flops_fraction(gates)
        out["gate_fractions"] = channel_gate.decision_fractions(gates)  # [B, L, 3]
        per_clip = [g for g in gates if g.decisions.ndim == 3]  # backbone: [B, C, 3]
        per_actor = [g for g in gates if g.decisions.ndim == 4]  # head: [B, N, C, 3]
        if per_clip:
            out["gate_clip_kept"] = jnp.stack([jnp.mean(g.decisions[..., channel_gate.KEEP], -1)
                                               for g in per_clip], axis=-1)  # [B, L_b]
        if per_actor:
            out["gate_actor_flops"] = channel_gate.actor_flops_fraction(per_actor)
            out["gate_kept"] = jnp.stack([jnp.sum(g.decisions[..., channel_gate.KEEP], axis=-1)
                                          for g in per_actor], axis=-1)  # [B, N, L_h]
    if outputs.get("relation"):
        out["groups_used"] = outputs["relation"]["groups_used"]
    return out


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
             data_parallel: parallel.DataParallel, input_shape: tuple[int, ...],
             map_ranks: tuple[int, ...] | None = None,
             gate_budget: float | None = None) -> Programs:
    """`Programs` for `model` on clips of `input_shape` `[1, T, H, W, 3]` (cached); `map_ranks`:
    see `make_train_step`; `gate_budget`: predict on the gate's compact path computing this
    fraction of each gated layer's channels (None: the masked path)."""
    tx = train_state.make_optimizer(train_config)
    replicated = parallel.replicated(data_parallel.mesh)

    init = train_state.make_init(model, tx, input_shape, train_config.ema_decay)
    # Init runs once, but XLA CPU spends long optimising its many random-initialiser kernels.
    init_fn = jax.jit(init, out_shardings=replicated).lower(jax.random.key(0)).compile(
        compiler_options=FAST_COMPILE)
    options = FAST_COMPILE if train_config.fast_compile else None

    def predict(params, video):
        return detections_from_outputs(model.apply({"params": params}, video,
                                                   gate_budget=gate_budget))

    return Programs(
        init=init_fn,
        train_step=data_parallel.train_step(
            make_train_step(model, weights, map_ranks, gumbel_temperature(train_config)),
            options),
        predict=data_parallel.map_rows(predict, num_broadcast=1, compiler_options=options))


@functools.cache
def model_gflops(model: ActionDetector, input_shape: tuple[int, ...]) -> float:
    """Forward GFLOPs per clip (XLA cost analysis; abstract params, so nothing is initialised)."""
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape, jnp.float32))
    return gflops_per_clip(model, variables, input_shape)


# Model fields that leave the parameters as they are: a fine-tune may change them.
_PARAMETER_FREE_FIELDS = ("dtype", "head.spatial")


def check_init_from(workdir: str, model_config) -> None:
    """Fails naming `train.init_from` unless `workdir` is a finished detector run whose
    `model` section equals `model_config` (so its parameters fit this model; the compute
    `model.dtype` and the head's `spatial` branch may differ)."""
    source = loop.read_config(workdir, "train.init_from")
    if source.get("experiment") != "action_detector":
        raise ValueError(f"train.init_from={workdir!r}: a {source.get('experiment')!r} run, not "
                         "an action_detector one")

    def flat(section):  # JSON round trip: config.json holds lists where configs hold tuples
        return {".".join(map(str, k)): v for k, v in traverse_util.flatten_dict(
            json.loads(json.dumps(section.to_dict()))).items()
            if ".".join(k) not in _PARAMETER_FREE_FIELDS}

    theirs, ours = flat(source.model), flat(model_config)
    if theirs != ours:
        differ = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
        raise ValueError(f"train.init_from={workdir!r}: its model differs in "
                         f"{', '.join('model.' + k for k in differ)}")
    if not checkpoint.has_checkpoint(os.path.join(workdir, "checkpoints", PHASE)):
        raise FileNotFoundError(f"train.init_from={workdir!r}: no '{PHASE}' checkpoint")


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
        if self.starts_from_init():
            check_init_from(c.train.init_from, c.model)
        check_model_fields(c.model)
        self.weights = detection_losses.as_weights(c.loss)
        settings.check_choice(c.eval.split, SPLITS, "eval.split")
        if not 0.0 < c.eval.iou_threshold <= 1.0:
            raise ValueError(f"eval.iou_threshold={c.eval.iou_threshold} must be in (0, 1]")
        settings.check_choice(c.eval.matching, MATCHING, "eval.matching")
        if not 0.0 <= c.eval.map_score_threshold < 1.0:
            raise ValueError(f"eval.map_score_threshold={c.eval.map_score_threshold} must be in "
                             "[0, 1)")
        if c.eval.map_cell < 1:
            raise ValueError(f"eval.map_cell={c.eval.map_cell} must be >= 1")
        if not 0.0 <= c.eval.gate_budget <= 1.0:
            raise ValueError(f"eval.gate_budget={c.eval.gate_budget} must be in [0, 1]")
        if c.eval.gate_budget and (c.model.gate == "off" or (
                c.model.gate in ("head", "both") and c.model.head.gate_policy != "input")):
            raise ValueError(f"eval.gate_budget={c.eval.gate_budget}: the compact path needs a "
                             "gate (model.gate) deciding from each layer's input (a head gate "
                             "with model.head.gate_policy='input')")

    def build(self) -> None:
        self.model = build_detector(self.config.model, len(self.class_names))
        try:  # label images rank a person's actions; datasets without that order get none
            ranks = tuple(int(r) for r in behaviour_labels.priority_ranks(self.class_names))
        except ValueError:
            ranks = None
        self.programs = programs(self.model, self.weights,
                                 ml_collections.FrozenConfigDict(self.config.train),
                                 self.data_parallel, self.input_shape(1), ranks,
                                 self.config.eval.gate_budget or None)

    def input_shape(self, batch_size: int) -> tuple[int, ...]:
        """`[B, T, H, W, 3]` of the model's input."""
        return (batch_size, self.config.data.num_frames, *self.data.frame_shape)

    def init_state(self) -> TrainState:
        return self.programs.init(jax.random.key(self.config.seed))

    def starts_from_init(self) -> bool:
        """Whether training starts from `train.init_from`: it is set and this run has no
        checkpoint of its own yet (a resume, eval or analysis never reads the source run)."""
        return bool(self.config.train.init_from) and not checkpoint.has_checkpoint(
            os.path.join(self.workdir, "checkpoints", PHASE))

    def initial_state(self) -> TrainState:
        """Where training starts: a fresh state, or (`starts_from_init`) the final parameters
        of the run `train.init_from` (fine-tuning; the optimizer state and step start afresh)."""
        state = self.init_state()
        if not self.starts_from_init():
            return state
        source = self.config.train.init_from
        mgr = checkpoint.manager(os.path.join(source, "checkpoints", PHASE))
        names = loop.recorded_class_names(source)
        if names is not None and names != list(self.class_names):
            raise ValueError(f"train.init_from={source!r}: trained on classes {names}, this "
                             f"run has {list(self.class_names)}")
        restored = checkpoint.restore(mgr, {"params": state.params})
        logging.info("parameters from %s (step %d)", source, mgr.latest_step())
        return state.replace(params=restored[0]["params"]).restart_ema()

    def train(self) -> tuple[dict, dict]:
        """Trains to `train.num_steps`, resuming if a checkpoint exists (else from
        `initial_state`)."""
        c = self.config
        resumed_from = self.checkpoint_manager(PHASE).latest_step() or 0
        start = time.time()
        loader = self.make_loader("train", self.data.transform(train=True), train=True)
        state = self.run_phase(PHASE, self.initial_state(), self.programs.train_step, loader,
                               c.train.num_steps)
        train_seconds = round(time.time() - start, 1)
        if resumed_from >= c.train.num_steps:  # nothing left to train: keep the time
            train_seconds = loop.previous_results(self.workdir).get("train_seconds", train_seconds)
        return train_state.eval_params(state), {"train_seconds": train_seconds,
                                                "resumed_from_step": resumed_from}

    def restore_final(self):
        return train_state.eval_params(self.restore(PHASE, self.init_state()))

    # -- evaluation
    def predict_batch(self, params, batch: dict) -> dict:
        out = self.programs.predict(params, self.data_parallel.batch(batch["video"]))
        out["boxes_pred"] = out.pop("boxes")  # `boxes` is the ground truth's key
        return parallel.all_hosts(
            {**out, **{k: batch[k] for k in ("boxes", "actions", "person_mask", "mask", "owner",
                                             "index") if k in batch}})

    def eval_loader(self, split: str):
        return self.make_loader(split, self.data.transform(train=False), train=False)

    def validation_metrics(self, state, split: str) -> dict:
        """Frame-mAP and person AP@0.5 of `state` on `split` (NaN where undefined)."""
        evaluator = dataclasses.replace(self.evaluators()[0], split=split, plot_num_clips=0)
        results, _ = evaluator.run(train_state.eval_params(state))
        return {k: float("nan") if results[k] is None else results[k]
                for k in ("frame_map", "person_ap50")}

    def evaluators(self) -> list:
        c = self.config.eval
        return [detection.FrameMapEvaluator(
            predict_batch=self.predict_batch, loader=self.eval_loader, split=c.split,
            class_names=tuple(self.class_names), description=self.data.description,
            iou_threshold=c.iou_threshold, matching=c.matching, plot_num_clips=c.plot_num_clips,
            plot_score_threshold=c.plot_score_threshold,
            map_score_threshold=c.map_score_threshold, map_cell=c.map_cell,
            keyframe_ids=getattr(self.data, "keyframe_ids", None))]

    def final_phases(self) -> tuple[str, ...]:
        return (PHASE,)

    def planned_steps(self) -> int:
        return self.config.train.num_steps

    def summary(self, results: dict) -> str:
        def show(x):
            return "n/a" if x is None else f"{x:.3f}"
        line = (f"{results['split']}: frame-mAP@{results['iou_threshold']:g} "
                f"{show(results['frame_map'])}, person AP@0.5 {show(results['person_ap50'])}")
        if "map_miou" in results:
            line += f", behaviour-map mIoU {show(results['map_miou'])}"
        return line + f" ({results['num_clips']} clips)"

    def cost(self, params) -> dict:
        out = {"num_params": train_state.count_params(params),
               "gflops_per_clip": round(model_gflops(self.model, self.input_shape(1)), 4)}
        if self.model.gate != "off":
            out["gated_gflops_per_clip"] = gated_gflops_per_clip(self.model, self.input_shape(1))
        return out

    def write_results(self, results: dict, artefacts: dict) -> dict:
        if "gated_flops_fraction" in results and "gated_gflops_per_clip" in results:
            # Counted FLOPs of the whole model: the gated layers' saving against its total.
            saved = results["gated_gflops_per_clip"] * (1.0 - results["gated_flops_fraction"])
            results["model_flops_fraction"] = 1.0 - saved / results["gflops_per_clip"]
        return super().write_results(results, artefacts)

    # -- predict
    def predictor(self):
        """Restores the detector once; returns `predict(path) -> (answer, artefacts)`.

        The clip (a video file, or a .npy / .npz of frames `[T, H, W, 3]`) is read at the
        training resolution; every frame in turn is a keyframe, centred in a window of
        `data.num_frames` frames. The answer holds the boxes whose person score exceeds
        `eval.plot_score_threshold`, best first, with per-action scores: `detections` at the
        middle frame, `frames` for every frame. Artefacts: `.png`, the middle frame annotated, and
        `.mp4`, the whole clip annotated, both at the clip's own resolution.
        """
        params = self.restore_final()
        threshold = self.config.eval.plot_score_threshold
        rows = self.config.eval.batch_size
        transform = self.data.transform(train=False)
        empty = {"boxes": np.zeros((0, 4), np.float32), "person_ids": np.zeros((0,), np.int64),
                 "actions": np.zeros((0, len(self.class_names)), np.uint8)}

        def found(out, n: int) -> list[dict]:
            person = out["person_scores"][n]
            keep = [q for q in np.argsort(-person, kind="stable") if person[q] > threshold]
            return [{"box_xyxy": [round(float(v), 4) for v in out["boxes"][n, q]],
                     "person_score": round(float(person[q]), 4),
                     "action_scores": {name: round(float(s), 4) for name, s in
                                       zip(self.class_names, out["action_scores"][n, q],
                                           strict=True)}} for q in keep]

        def predict(path: str) -> tuple[dict, dict]:
            frames = self.data.read_clip(path)  # a bad file fails before any compute
            keyframe = len(frames) // 2
            per_frame, key_out = [], None
            for start in range(0, len(frames), rows):
                keys = list(range(start, min(start + rows, len(frames))))
                video = np.stack([transform({"video": frames, "keyframe": k, **empty}, None)
                                  ["video"] for k in keys])
                video = np.concatenate([video, np.repeat(video[-1:], rows - len(keys), 0)])
                out = self.programs.predict(params, self.data_parallel.batch(video))
                per_frame += [found(out, n) for n in range(len(keys))]
                if keyframe in keys:
                    key_out = {k: v[keys.index(keyframe)] for k, v in out.items()}
            answer = {"video": path, "keyframe": keyframe, "score_threshold": threshold,
                      "detections": per_frame[keyframe],
                      "frames": [{"frame": t, "detections": d} for t, d in enumerate(per_frame)]}
            native = video_io.read_video(path)  # the clip at its own resolution, read once
            artefacts = self.annotated_outputs(path, native, per_frame, keyframe)
            if "map_probs" in key_out:
                answer["behaviour_shares"], artefacts["_map.png"] = self.behaviour_map_output(
                    native[min(keyframe, len(native) - 1)], key_out)
            return answer, artefacts

        return predict

    def annotated_outputs(self, path: str, native, per_frame: list[list[dict]],
                          keyframe: int) -> dict:
        """`.png` / `.mp4` writers of the clip `path` (uint8 frames `native` `[T, H, W, 3]` at its
        own resolution) with `per_frame` drawn."""

        def draw(frame, detections):
            return viz.annotate_frame(frame, {
                "boxes": np.array([d["box_xyxy"] for d in detections], np.float32).reshape(-1, 4),
                "person_scores": np.array([d["person_score"] for d in detections], np.float32),
                "scores": np.array([list(d["action_scores"].values()) for d in detections],
                                   np.float32).reshape(len(detections), len(self.class_names))},
                self.class_names, score_threshold=self.config.eval.plot_score_threshold)

        def png(out_path):
            viz.save_image(draw(native[min(keyframe, len(native) - 1)], per_frame[keyframe]),
                           out_path)

        def mp4(out_path):
            video_io.write_video(out_path, np.stack(
                [draw(f, per_frame[min(t, len(per_frame) - 1)]) for t, f in enumerate(native)]),
                fps=video_io.frame_rate(path))

        return {".png": png, ".mp4": mp4}

    def behaviour_map_output(self, frame, key_out: dict):
        """The behaviour map of keyframe `frame` (uint8 `[H, W, 3]`, the clip's own resolution)
        from its detections `key_out`: (pixel share of each behaviour, writer of the frame with
        the map overlaid)."""
        c = self.config.eval
        probs = behaviour_maps.paste_maps(key_out["map_probs"], key_out["boxes"],
                                          key_out["person_scores"], *frame.shape[:2],
                                          c.map_score_threshold, c.map_cell)
        single = behaviour_maps.behaviour_map(probs)
        shares = {k: round(v, 4) for k, v in
                  behaviour_maps.pixel_shares(single, self.class_names).items()}

        def write(out_path):
            colours = behaviour_maps.behaviour_colours(len(self.class_names))[single]
            alpha = 0.55 * colours[..., 3:]
            viz.save_image(np.round(frame * (1 - alpha) + 255 * colours[..., :3] * alpha)
                           .astype(np.uint8), out_path)

        return shares, write

    def analysis_settings(self):
        """`report.AnalysisSettings` of the `analyze` config section."""
        from jaxact.analysis import report, tracking

        a = self.config.analyze
        return report.AnalysisSettings(
            tracker=tracking.TrackerSettings(iou_threshold=a.iou_threshold,
                                             max_missed=a.max_missed, min_score=a.min_score,
                                             min_hits=a.min_hits),
            smooth_seconds=a.smooth_seconds, on=a.on, off=a.off, min_duration=a.min_duration,
            max_gap=a.max_gap, merge_iou=a.merge_iou,
            seat_min_coverage=a.seat_min_coverage,
            per_behaviour=a.get("per_behaviour", ml_collections.ConfigDict()).to_dict())

    def analyzer(self):
        """A `lesson.LessonAnalyzer` of the final parameters, settings from the `analyze` and
        `data` config sections; compiles on its first batch."""
        from jaxact.analysis import ensemble, lesson

        c = self.config
        settings = self.analysis_settings()  # bad settings fail before anything is restored
        settings.check_behaviours(self.class_names)
        map_size = c.analyze.map_size
        if map_size < 0:
            raise ValueError(f"analyze.map_size must be >= 0 (0: no maps), got {map_size}")
        members = [self] + self.ensemble_members()
        restored = [m.restore_final() for m in members]

        def predict(video):
            batch = self.data_parallel.batch(pipeline.normalize(video))
            outs = [m.programs.predict(p, batch) for m, p in zip(members, restored, strict=True)]
            return outs[0] if len(outs) == 1 else ensemble.fuse_detections(
                [jax.device_get(o) for o in outs])

        return lesson.LessonAnalyzer(
            predict=predict, class_names=tuple(self.class_names),
            frame_size=tuple(self.data.frame_shape[:2]), num_frames=c.data.num_frames,
            frame_stride=c.data.frame_stride, stride=c.analyze.stride,
            batch_size=c.eval.batch_size, default_fps=c.analyze.fps, settings=settings,
            map_size=(map_size,) * 2 if map_size else None, video=c.analyze.video,
            meta={"workdir": self.workdir})

    def ensemble_members(self) -> list[Experiment]:
        """The runs of `analyze.ensemble_with` (comma-separated workdirs of finished detector
        runs) as experiments, checked to see clips as this run does: their detections are
        fused with this run's (`jaxact.analysis.ensemble`) in `--mode=analyze`."""
        from jaxact.train import get_experiment

        workdirs = [w.strip() for w in self.config.analyze.get("ensemble_with", "").split(",")
                    if w.strip()]
        members = []
        for workdir in workdirs:
            where = f"analyze.ensemble_with={workdir!r}"
            if os.path.abspath(workdir) == os.path.abspath(self.workdir):
                raise ValueError(f"{where}: that is this run")
            config = loop.read_config(workdir, "analyze.ensemble_with")
            if config.get("experiment") != "action_detector":
                raise ValueError(f"{where}: a {config.get('experiment')!r} run, not an "
                                 "action_detector one")
            for name in ("num_frames", "frame_stride"):
                if config.data[name] != self.config.data[name]:
                    raise ValueError(f"{where}: its data.{name}={config.data[name]}, this "
                                     f"run's {self.config.data[name]}; members must see the "
                                     "same clips")
            member = get_experiment("action_detector")(config, workdir)
            if tuple(member.data.frame_shape) != tuple(self.data.frame_shape):
                raise ValueError(f"{where}: its frames are {tuple(member.data.frame_shape)}, "
                                 f"this run's {tuple(self.data.frame_shape)}")
            if list(member.class_names) != list(self.class_names):
                raise ValueError(f"{where}: behaviours {list(member.class_names)}, this "
                                 f"run's {list(self.class_names)}")
            members.append(member)
        return members

    def analyze(self, path: str, output_dir: str) -> dict:
        """--mode=analyze: the detector slid over a whole video (a file, a frame array or a
        folder of images), one keyframe every `analyze.stride` frames, in batches of
        `eval.batch_size`; the keyframes' detections become tracks, seats and behaviour
        intervals (`jaxact.analysis.report`), written to `output_dir` with the behaviour maps
        and the annotated video (`lesson.OUTPUTS`). Frames are streamed, never all in memory.

        A folder of videos (`video_io.folder_videos`) is analysed video by video into
        `output_dir/NAME`, resumably, unreadable videos skipped (`lesson.analyze_videos`); the
        returned dict then has "videos" (the index) instead of "analysis"."""
        from jaxact.analysis import lesson, report
        from jaxact.data import video_io

        chief = jax.process_index() == 0
        videos = video_io.folder_videos(path) if os.path.isdir(path) else None
        if videos is not None:
            console.say(f"{len(videos)} videos in {path}")
            return lesson.analyze_videos(self.analyzer(), videos, output_dir, write=chief)
        out = self.analyzer().run(path, output_dir if chief else None)
        console.say(report.summary_text(out["analysis"]))
        return out

    def describe_prediction(self, answer: dict) -> str:
        people = answer["detections"]
        if not people:
            return f"no person above {answer['score_threshold']:g} at frame {answer['keyframe']}"
        best = [max(d["action_scores"].items(), key=lambda kv: kv[1])[0] for d in people]
        line = f"{len(people)} people at frame {answer['keyframe']}: {', '.join(best)}"
        if "behaviour_shares" in answer:
            line += "; map " + ", ".join(f"{k} {v:.0%}" for k, v in
                                         answer["behaviour_shares"].items() if v >= 0.005)
        return line
