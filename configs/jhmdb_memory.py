"""Memory-matching classifier on real 2-D joint sequences (JHMDB, 14 classes, 3 official splits).

  python launch.py --config=configs/jhmdb_memory.py --workdir=workdirs/jhmdb_split1
  python launch.py --config=configs/jhmdb_memory.py:split=2 --workdir=workdirs/jhmdb_split2
  python -m benchmarks.jhmdb          # all 3 splits, both methods, mean/std table

Expected (2026-12-06, 2 CPU cores, about 100 s a split for both methods): mean test top-1 over
the 3 splits, memory classifier 0.797 ± 0.030, softmax baseline 0.786 ± 0.024 (seed 0; over
seeds 0-4 the means are 0.770 ± 0.021 and 0.785 ± 0.005). Seeds 0-4 as one classifier
(`python -m benchmarks.jhmdb --config.seed=S --workdir_root=R/seedS` for each S, then
`python -m benchmarks.jhmdb_ensemble --ensemble_combine=scores R/seed0 ... R/seed4`): memory
0.801, baseline 0.822 (2026-12-07).

Variants combine: `:split=3,tiny` (a short run: the `tiny` budget of configs/maneuvers_memory.py
with a small model; not measured) or `:split=3,smoke` (seconds-long, for tests; does not learn).
Any ragged-sequence npz (`frames [sum_T, ...]`, `lengths [N]`, `labels [N]`) is one override
away: `--config.data.train_path=A.npz --config.data.test_path=B.npz` (set `data.features=()`
and the augmentations to 0 for data that is not 2-D joints). Measured results: docs/results_jhmdb.md.

Choose settings on a validation part of a training split, never on test: 20 % of each class of
the train file (a fixed random draw, `data.validation_seed`) is held out as split 'validation',
trained on by neither method, and reported instead of test:

  python launch.py --config=configs/jhmdb_memory.py:split=1 --workdir=workdirs/jhmdb_val1 \
      --config.data.validation_fraction=0.2 --config.eval.split=validation
  python -m benchmarks.jhmdb --jhmdb_validation   # all 3 splits' validation parts
  python -m benchmarks.jhmdb --jhmdb_validation --jhmdb_validation_by=videos  # other videos'

Add `--config.train.eval_every=250` for a validation curve in TensorBoard (train.eval_split is
'validation' by default).
"""

import os

import ml_collections

from configs import common, maneuvers_memory

SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                           "shared", "data", "jhmdb_joints")


def split_paths(split: int) -> tuple[str, str]:
    return tuple(os.path.normpath(os.path.join(SHARED_DATA, f"split{split}_{part}.npz"))
                 for part in ("train", "test"))


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    """`arg`: comma-separated `split=N` (1-3, the official JHMDB split) and `tiny` or `smoke`."""
    variant = common.parse_variant(arg, split=1, tiny=False, smoke=False)
    if variant.tiny and variant.smoke:
        raise ValueError(f"config variants tiny and smoke exclude each other: {arg!r}")
    if variant.split not in (1, 2, 3):
        raise ValueError(f"config variant split={variant.split!r}: expected 1, 2 or 3")
    config = maneuvers_memory.get_config()  # same method; data, model size and budget differ
    config.config_name = "jhmdb_memory" + (f":{arg}" if arg else "")
    split = variant.split

    config.data = ml_collections.ConfigDict()
    config.data.name = "ragged_npz"
    config.data.train_path, config.data.test_path = split_paths(split)
    config.data.num_frames = 32  # each clip (15-40 frames) is linearly resampled to this length
    # Joint features need joints [J, D] per frame (distances: J >= 2); () flattens any frame, so
    # plain vectors (e.g. 24 sensor values per frame) need data.features=() and no augmentation.
    # 'motion2' (displacement over 2 frames: two motion scales) and, for 2-D joints of
    # data.joint_order, 'bones' (unit bone directions) and 'angles' (cos, sin between bones at
    # each joint) were chosen on the validation parts (docs/results_jhmdb.md); the first three
    # alone are the setup of the 2026-11-23 numbers.
    config.data.features = ("coords", "distances", "motion", "motion2", "bones", "angles")
    config.data.standardize = True  # inputs standardised with train-split statistics
    # True: each clip's joints divided by the person's size (sequences.person_scale), so people
    # filmed near and far look alike; needs 2-D joints.
    config.data.normalize_scale = False
    config.data.min_fraction = 1.0  # < 1: train on random first-p% prefixes, p ~ U[min, 1]
    config.data.train_observation = 1.0  # < 1: train on exactly the first p% of every clip
    config.data.crop_min = 0.8  # training crops a random [crop_min, 1] portion in time
    config.data.scale_range = 0.1  # scale ~ U[0.9, 1.1]
    config.data.rotation_degrees = 10.0  # rotation ~ U[-10, 10] degrees
    config.data.shear_range = 0.0  # > 0: x += a y, y += b x, a, b ~ U[-r, r]
    config.data.mirror_prob = 0.5  # mirror x and swap left/right joints
    config.data.joint_order = "jhmdb"  # key of jaxact.data.sequences.JOINT_ORDERS
    # > 0: this part of each class of the train file becomes split 'validation' (not trained
    # on; standardisation statistics from the rest); which clips: data.validation_seed.
    config.data.validation_fraction = 0.0
    config.data.validation_seed = 0
    # Or: the train file's clips that are also in this file become split 'validation' (another
    # split's test file: other source videos, as test has; benchmarks/jhmdb.py
    # --jhmdb_validation_by=videos).
    config.data.validation_path = ""
    config.data.num_threads = 2
    config.data.prefetch = 4

    config.model.frame_encoder = "mlp"
    config.model.frame_encoder_kwargs = ml_collections.ConfigDict(
        {"widths": (256,), "embed_dim": 128})
    config.model.hidden_size = 128
    config.model.feature_dim = 64
    config.model.dropout_rate = 0.3

    # The memory setup before the maneuvers default moved to unit-length features: on the
    # validation parts it stays ahead of unit-length features (docs/results_jhmdb.md).
    config.model.normalize_features = False
    config.memory.distance = "euclidean"
    config.memory.temperature = 1.0
    config.memory.capacity = 256
    config.memory.aux_steps = 600
    config.memory.init_batches = 14  # about one pass over the 433 training clips

    config.train.num_steps = 1500
    config.train.batch_size = 32
    config.train.learning_rate = 2e-3
    config.train.weight_decay = 1e-2
    config.train.checkpoint_every = 500
    config.train.eval_every = 0  # N > 0 needs data.validation_fraction > 0 (split 'validation')
    config.eval.batch_size = 64
    config.eval.temporal_views = 1  # ragged sequences are resampled linearly: one temporal view
    config.eval.flip_view = False  # True: also the mirrored view (x mirrored, left/right swapped)

    if variant.tiny or variant.smoke:  # small model; smoke: tests pass their own small npz files
        config.data.num_frames = 8
        config.model.frame_encoder_kwargs.widths = (16,)
        config.model.frame_encoder_kwargs.embed_dim = 16
        config.model.hidden_size = 16
        config.model.feature_dim = 8
        if variant.tiny:  # a short run on the real splits (not measured)
            maneuvers_memory.tiny_budget(config)
        else:  # seconds-long, for tests; does not learn
            maneuvers_memory.smoke_budget(config)
    return config
