"""Memory-classifier errors of trained maneuvers workdirs under other readouts of the same features.

Run from the repository root:

  python -m benchmarks.memory_readouts --first_clip=7200 --num_clips=3600 workdirs/seed*

Asks whether the memory classifier's errors come from how the memory is read or from the features
themselves. Each workdir's final encoder embeds clips of the validation seed stream
`[first_clip, first_clip + num_clips)` (rendered in memory, as `benchmarks.maneuvers_validation
--split=holdout` does; the default range lies past the enlarged validation split and the holdout
clips that script reads by default) with the test views of the workdir's config, and the same
frame features are classified against several reference sets of the final memory bank:

- the run's own references (`memory.num_clusters` clusters of a `memory.sample_size` sample),
- k-means with k in `--clusters` on each class's whole bank,
- every stored vector as a reference (1-nearest neighbour over the bank),

each decided by the method's frame vote and by the smallest mean distance. Prints the errors per
workdir and in total.
"""

import functools

import jax
import numpy as np
from absl import app, flags

from benchmarks import maneuvers_validation  # defines --temporal_views, --flip_view, --chunk
from jaxact import losses
from jaxact.evaluation import classification
from jaxact.models import memory as memlib

_FIRST_CLIP = flags.DEFINE_integer("first_clip", 7200, "First validation-stream clip index.",
                                   lower_bound=0)
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 3600, "Clips per workdir.", lower_bound=1)
_CLUSTERS = flags.DEFINE_multi_integer("clusters", [1, 4, 8, 16, 32],
                                       "k of the whole-bank k-means readouts (repeat the flag).",
                                       lower_bound=1)


def reference_sets(exp, state, clusters) -> dict:
    """Readout name -> `References` from the state's final memory bank."""
    m, bank = exp.memory, state.memory
    rng = jax.random.fold_in(state.rng, state.step)
    sets = {f"run's references ({m.num_clusters} of a {m.sample_size} sample)": state.references}
    for k in clusters:
        sets[f"k-means {k}, whole bank"] = memlib.refresh_references(
            bank, rng, num_clusters=k, num_iters=m.kmeans_iters, rule=m.reference_rule,
            sample_size=bank.capacity)
    sets["every stored vector (1-NN)"] = state.references.replace(refs=bank.feats,
                                                                  valid=bank.valid)
    return sets


@functools.cache
def compiled(exp):
    """`(encode, distances)` jitted once per experiment, not once per rendered chunk."""
    encode = jax.jit(lambda params, video: exp.model.apply({"params": params}, video)[0])
    distances = jax.jit(lambda feats, refs: losses.frame_class_distances(feats, refs, exp.memory))
    return encode, distances


def readout_correctness(exp, model, split: str) -> dict:
    """Per-clip correctness `[N]` of every reference set and decision rule on the split."""
    params, sets = model
    encode, distances = compiled(exp)
    per_view = {name: [] for name in sets}
    for view in exp.views:
        dists, labels = {name: [] for name in sets}, []
        for batch in exp.eval_loader(split, 1.0, view):
            keep = batch["mask"]
            feats = encode(params, batch["video"])  # [B, T, D]
            for name, refs in sets.items():
                dists[name].append(np.asarray(distances(feats, refs))[keep])  # [B', T, C]
            labels.append(batch["label"][keep])
        label = np.concatenate(labels)
        for name in sets:
            dist = np.concatenate(dists[name])
            # combine_views needs a softmax output; these readouts have none.
            per_view[name].append({"label": label, "memory_dist": dist,
                                   "softmax_logp": np.zeros((len(dist), dist.shape[-1]))})
    row = {}
    for name, outputs in per_view.items():
        out = classification.combine_views(outputs, exp.views, exp.data.flip_permutation,
                                           exp.memory.temperature)
        row[(name, "frame vote")] = out["memory_pred"] == out["label"]
        row[(name, "mean distance")] = np.argmax(out["memory_logp"], -1) == out["label"]
    return row


def main(argv):
    workdirs = argv[1:]
    if not workdirs:
        raise app.UsageError("name one or more trained workdirs")
    runs = []
    for workdir in workdirs:
        exp, _ = maneuvers_validation.restore_workdir(workdir, "holdout", 0)
        # The final memory-phase state, bank included, with the references of its final bank.
        state = exp.programs.refresh(exp.restore("memory", exp.with_memory(exp.init_state())))
        runs.append((exp, (state.params, reference_sets(exp, state, _CLUSTERS.value))))
    rows = maneuvers_validation.evaluate_holdout(runs, _FIRST_CLIP.value, _NUM_CLIPS.value,
                                                 maneuvers_validation.CHUNK.value,
                                                 evaluate=readout_correctness)
    views = len(runs[0][0].views)
    print(f"\nerrors on validation-stream clips {_FIRST_CLIP.value}-"
          f"{_FIRST_CLIP.value + _NUM_CLIPS.value - 1}, {views} views\n"
          f"| reference set | decision | " + " | ".join(workdirs) + " | total |\n"
          "|---|---|" + "---|" * (len(workdirs) + 1))
    for key in rows[0]:
        errors = [int(np.sum(~row[key])) for row in rows]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(map(str, errors)) + f" | {sum(errors)} |")


if __name__ == "__main__":
    app.run(main)
