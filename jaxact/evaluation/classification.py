"""Classification metrics over numpy predictions, and the classifier's evaluators."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np
from scipy import stats

from jaxact import console, viz
from jaxact.data import pipeline
from jaxact.models import memory as memlib


def top1(pred, labels) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(labels))) if len(labels) else float("nan")


def confusion_matrix(pred, labels, num_classes: int) -> np.ndarray:
    """`[C, C]` counts; rows are true classes, columns predictions."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(pred)), 1)
    return cm


def mean_class_accuracy(pred, labels, num_classes: int) -> float:
    """Mean over classes present in `labels` of per-class recall."""
    cm = confusion_matrix(pred, labels, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def topk_accuracy(scores, labels, k: int) -> float:
    """Fraction of rows whose label is among the k highest `scores` `[N, C]`."""
    topk = np.argsort(-np.asarray(scores), axis=-1)[:, :k]
    return float(np.mean(np.any(topk == np.asarray(labels)[:, None], axis=-1)))


def summary(pred, labels, scores, num_classes: int) -> dict:
    return {
        "top1": top1(pred, labels),
        "mean_class_accuracy": mean_class_accuracy(pred, labels, num_classes),
        "top5_scores": topk_accuracy(scores, labels, min(5, num_classes)),
        "num_examples": int(len(labels)),
    }


def paired_comparison(correct_a, correct_b) -> dict:
    """Two classifiers on the same examples (`[N]` bool each, row i = example i in both): the
    examples only one of them gets right and the exact McNemar p-value, a two-sided binomial test
    of those discordant counts (1.0 when there are none). Accuracies that differ by a few
    examples are chance unless p is small."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_comparison needs two [N] arrays of the same examples, got "
                         f"shapes {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    discordant = only_a + only_b
    p = stats.binomtest(only_a, discordant, 0.5).pvalue if discordant else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "mcnemar_p": float(p)}


# ----------------------------------------------------------------------------- evaluators
#
# An evaluator is built from a predict function and data settings, and run on the trained
# models: `run(models) -> (results, artefacts)`, where `results` is a JSON-able dict merged into
# results.json and `artefacts` maps a file name to a function writing that file (plots). The
# predict function gives each batch's rows of every process: `predict_batch(models, batch) ->
# {"label": [B], "mask": [B], "models": {name: {output: [B, ...]}}}`. `models` maps a name to
# whatever the predict function takes (params, references).


def collect(batches, predict_batch, models: dict, desc: str = "eval") -> dict:
    """Every model's outputs over `batches` (padding removed): name -> {output: [N, ...],
    "label": [N]}. Every batch is fed to all models, so one decoding pass serves them all."""
    outputs = {name: [] for name in models}
    for batch in console.track(batches, desc):
        rows = predict_batch(models, batch)
        keep = rows["mask"]
        for name in models:
            outputs[name].append({"label": rows["label"][keep],
                                  **{k: v[keep] for k, v in rows["models"][name].items()}})
    return {name: {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
            for name, outs in outputs.items()}


def combine_views(per_view: list[dict], views, flip_permutation, temperature: float) -> dict:
    """Merges per-view outputs of the same clips into one prediction per clip.

    Each view has `softmax_logp` `[N, C]`, `label` `[N]` and, for the memory classifier,
    `memory_dist` `[N, T, C]`. A mirrored view's classes are mapped back through
    `flip_permutation` (`[C]`, the class of each class's mirror image). The memory classifier's
    frames of all views vote together (`memory.vote`), so `memory_votes` counts `V * T` frames;
    the baseline averages its log-probabilities over the views.

    Returns `label`, `softmax_logp`, `softmax_pred` and, with distances, `memory_pred`,
    `memory_votes`, `memory_logp`, `memory_nearest` (`[N]`, `[N, C]`, `[N]`; `[N]`, `[N, C]`,
    `[N, C]`, `[N]`); `memory_nearest` is the median over frames of the distance to the nearest
    reference of any class (how far the clip lies from the memory).
    """
    def unflip(x, view):  # class axis last
        return x[..., flip_permutation] if view.flip else x

    first, pairs = per_view[0], list(zip(per_view, views, strict=True))
    label = first["label"]
    if views[0].flip:
        label = np.argsort(flip_permutation)[label]
    logp = np.mean([unflip(o["softmax_logp"], v) for o, v in pairs], axis=0)
    logp = np.asarray(jax.nn.log_softmax(logp, axis=-1))
    out = {"label": label, "softmax_logp": logp, "softmax_pred": np.argmax(logp, -1)}
    if "memory_dist" in first:
        dist = np.concatenate([unflip(o["memory_dist"], v) for o, v in pairs], axis=1)
        pred, votes = memlib.vote(dist)
        out.update(memory_pred=np.asarray(pred), memory_votes=np.asarray(votes),
                   memory_logp=np.asarray(memlib.scores(dist, temperature=temperature)),
                   memory_nearest=np.median(np.asarray(dist).min(axis=-1), axis=-1))
    return out


# What each method predicts with: the memory classifier's vote, the baseline's softmax.
PREDICTION_KEYS = {"memory": "memory_pred", "baseline": "softmax_pred"}


@dataclasses.dataclass(frozen=True)
class ClassificationEvaluator:
    """Top-1, mean class accuracy and top-5 of the memory classifier under multi-view testing,
    the baseline's top-1 and mean class accuracy, their per-clip paired comparison, and
    `confusion_matrix.png`.

    `loader(split, fraction, view)` yields the split's batches under a test view; every view of
    `views` is read once and fed to all models.
    """

    predict_batch: Callable
    loader: Callable
    split: str
    views: tuple
    flip_permutation: np.ndarray
    temperature: float
    class_names: tuple[str, ...]
    domain_threshold: float = float("nan")  # in-domain limit of `memory_nearest`; NaN: unknown

    def outputs(self, models: dict, fraction: float = 1.0, views=None) -> dict:
        """name -> `combine_views` output of every model over the split."""
        views = self.views if views is None else views
        per_view = {name: [] for name in models}
        for view in views:
            desc = f"eval {self.split}" + (f" {fraction:.0%}" if fraction < 1 else "")
            for name, out in collect(self.loader(self.split, fraction, view), self.predict_batch,
                                     models, desc).items():
                per_view[name].append(out)
        return {name: combine_views(pv, views, self.flip_permutation, self.temperature)
                for name, pv in per_view.items()}

    def run(self, models: dict) -> tuple[dict, dict]:
        num_classes = len(self.class_names)
        out = self.outputs(models)
        full = out["memory"]
        results = summary(full["memory_pred"], full["label"], full["memory_logp"], num_classes)
        if not np.isnan(self.domain_threshold):
            # The split is in domain by construction: this is the flag's false-alarm rate.
            results["out_of_domain_fraction"] = float(
                np.mean(full["memory_nearest"] > self.domain_threshold))
        if "baseline" in out:
            base = out["baseline"]
            results["baseline_top1"] = top1(base["softmax_pred"], base["label"])
            results["baseline_mean_class_accuracy"] = mean_class_accuracy(
                base["softmax_pred"], base["label"], num_classes)
            # Same clips in the same order (one loader pass), so the per-clip pairing is exact.
            paired = paired_comparison(full["memory_pred"] == full["label"],
                                       base["softmax_pred"] == base["label"])
            results["memory_vs_baseline"] = {"only_memory_right": paired["only_a_right"],
                                             "only_baseline_right": paired["only_b_right"],
                                             "mcnemar_p": paired["mcnemar_p"]}
        cm = confusion_matrix(full["memory_pred"], full["label"], num_classes)
        artefacts = {"confusion_matrix.png": lambda path: viz.plot_confusion_matrix(
            cm, list(self.class_names), path, method="memory classifier", split=self.split,
            accuracy=results["top1"])}
        return results, artefacts


@dataclasses.dataclass(frozen=True)
class EarlyPredictionEvaluator:
    """Top-1 of every model from the first `ratio` of each clip, for each of
    `observation_ratios` (centre view: views would multiply the sweep's cost), and
    `early_prediction.png`; with `bayes_limit` ({"0.2": acc}, the data's ceiling), also that,
    in results and plot."""

    classification: ClassificationEvaluator
    observation_ratios: tuple[float, ...]
    bayes_limit: dict | None = None

    def run(self, models: dict) -> tuple[dict, dict]:
        curves = {name: {} for name in PREDICTION_KEYS}
        for ratio in self.observation_ratios:
            out = self.classification.outputs(models, ratio, views=(pipeline.CENTRE_VIEW,))
            for name, pred in PREDICTION_KEYS.items():
                if name in out:
                    curves[name][f"{ratio:.1f}"] = top1(out[name][pred], out[name]["label"])
        # The limit line: whole clips (ratio 1.0) where the sweep measured them.
        full_clip = {name: curve["1.0"] for name, curve in curves.items() if "1.0" in curve}
        results = {"early_prediction": dict(curves)}
        if self.bayes_limit is not None:
            results["early_prediction"]["bayes_limit"] = dict(self.bayes_limit)
        return (results,
                {"early_prediction.png": lambda path: viz.plot_early_prediction(
                    curves, path, num_classes=len(self.classification.class_names),
                    full_clip=full_clip, bayes_limit=self.bayes_limit)})
