"""Memory-matching classifier on synthetic road manoeuvres (the default experiment).

  python launch.py --config=configs/maneuvers_memory.py --workdir=workdirs/maneuvers_memory
  python launch.py --config=configs/maneuvers_memory.py:tiny --workdir=/tmp/tiny   # under a minute

`:tiny` trains a smaller model for 300 steps on the `maneuvers/small` clips (600 train, 48 test;
no distractor vehicles, no camera jitter; generated once, about 12 s). Measured on 2 CPU cores
(seed 0): test top-1 0.833 (memory) and 0.875 (baseline) on the 48 test clips (chance 0.167);
39 s wall with the cores to itself, 76 s while another job used one of them. `:smoke` is
seconds-long, for tests; it does not learn (8 steps on `maneuvers/tiny`: chance accuracy).

Expected on 2 CPU cores: test top-1 about 0.998 (memory) and 0.997 (baseline) with 6 views, in
about 10 minutes of training; measured numbers and how the defaults were chosen:
docs/results_maneuvers.md.
"""

import ml_collections

from configs import common


def smoke_budget(config: ml_collections.ConfigDict) -> None:
    """Memory, step and eval sizes of every memory-classifier `smoke` variant: seconds-long runs
    for tests, which exercise every phase but do not learn (8 steps)."""
    config.memory.capacity = 32
    config.memory.num_clusters = 2
    config.memory.sample_size = 16
    config.memory.aux_steps = 4
    config.memory.init_batches = 2
    config.memory.refresh_every = 2
    config.train.num_steps = 8
    config.train.batch_size = 8
    config.train.warmup_steps = 2
    config.train.log_every = 2
    config.train.checkpoint_every = 4
    config.eval.batch_size = 8
    config.eval.observation_ratios = (0.2, 1.0)


def tiny_budget(config: ml_collections.ConfigDict) -> None:
    """Memory, step and eval sizes of every memory-classifier `tiny` variant: under a minute on
    2 CPU cores, long enough to learn (200 pre-training + 100 memory / baseline steps of batch
    16; 8 batches fill the memory, so every class gets vectors)."""
    config.memory.capacity = 32
    config.memory.num_clusters = 2
    config.memory.sample_size = 16
    config.memory.aux_steps = 200
    config.memory.init_batches = 8
    config.memory.refresh_every = 10
    config.train.num_steps = 300
    config.train.batch_size = 16
    config.train.warmup_steps = 20
    config.train.log_every = 25
    config.train.checkpoint_every = 300
    config.eval.batch_size = 8
    config.eval.observation_ratios = (0.2, 1.0)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    """`arg`: "" (the default experiment), "tiny" (a run of under a minute that learns) or
    "smoke" (seconds-long, for tests; does not learn)."""
    variant = common.parse_variant(arg, tiny=False, smoke=False)
    if variant.tiny and variant.smoke:
        raise ValueError(f"config variants tiny and smoke exclude each other: {arg!r}")
    config = common.base_config()
    config.experiment = "memory_classifier"
    config.config_name = "maneuvers_memory" + (f":{arg}" if arg else "")

    config.data = ml_collections.ConfigDict()
    config.data.name = "maneuvers"  # builder in jaxact.data.builders.BUILDERS
    config.data.builder_config = "default"  # 'tiny' | 'small' | 'default'
    config.data.data_dir = common.data_dir()  # TFDS cache directory
    config.data.num_frames = 16  # frames sampled per clip
    config.data.flip_prob = 0.5  # horizontal flip (swaps left/right manoeuvres)
    config.data.min_fraction = 1.0  # < 1: train on random first-p% prefixes, p ~ U[min, 1]
    config.data.train_observation = 1.0  # < 1: train on exactly the first p% of every clip
    # > 0: also a view zoomed on the target vehicle's box, this many pixels wide, as 3 more input
    # channels (pipeline.target_zoom; the boxes come with the data: an oracle tracker)
    config.data.target_crop = 0
    # True: the video is that window alone, unscaled (target_crop x target_crop, no frame)
    config.data.target_only = False
    # True: also the target's box track (pipeline.target_track: displacement, velocity, size per
    # frame) as the recurrent network's input beside the frame embeddings
    config.data.target_track = False
    # True: the track without the camera's shake, each frame's whole-pixel shift against the first
    # (pipeline.camera_shift: phase correlation of the frames) taken off the boxes first
    config.data.stabilize_track = False
    # > 0: this many more clips of the train seed stream join split 'train', rendered into memory
    # at start-up (about 0.8 MB a cue clip): more clips than a TFDS split holds without TF
    config.data.extra_train_clips = 0
    config.data.num_threads = 2  # loader threads
    config.data.prefetch = 4  # batches prefetched

    config.model = ml_collections.ConfigDict()
    config.model.frame_encoder = "conv"  # 'conv' | 'resnet' | 'mlp'
    config.model.frame_encoder_kwargs = ml_collections.ConfigDict(
        {"widths": (32, 64), "patch_size": 4, "embed_dim": 128,
         "pool": "flatten"})  # 'max' / 'flatten_max': channels' spatial max (small cues)
    # Temporal model: 'lstm' | 'gru' (an RNN) | 'conv' (residual dilated 1-D convolutions over
    # time, temporal_kernel taps, one block per temporal_dilations entry; sees both ways).
    config.model.cell = "lstm"
    config.model.hidden_size = 128  # RNN state size, or the temporal convolutions' width
    config.model.bidirectional = True  # every frame's feature sees the whole observed clip
    config.model.temporal_kernel = 3
    config.model.temporal_dilations = (1, 2, 4, 8)
    config.model.feature_dim = 64  # per-frame feature size D stored in the memory
    config.model.dropout_rate = 0.0  # on frame embeddings and RNN outputs, training only
    # Unit-length memory features (the head reads the raw ones): with sqeuclidean distance and
    # temperature 0.1 the loss is a cosine softmax of scale 20; chosen on a validation split
    # (docs/results_maneuvers.md). The method's plain setup is normalize_features=False,
    # distance='euclidean', temperature=1.
    config.model.normalize_features = True
    # Computation dtype ('bfloat16': mixed precision, for accelerators; on CPU it is slower).
    # Parameters, losses, features and the memory bank stay float32.
    config.model.dtype = "float32"
    config.model.param_dtype = "float32"  # parameter dtype

    config.memory = ml_collections.ConfigDict()
    config.memory.capacity = 256  # K vectors per class (ring buffer)
    config.memory.num_clusters = 4  # k-means clusters (= references) per class
    config.memory.kmeans_iters = 10  # Lloyd iterations
    # 'kmeans' | 'threshold': leader clustering, members within cluster_threshold (euclidean) of
    # their leader, the data deciding how many clusters (at most num_clusters)
    config.memory.clustering = "kmeans"
    config.memory.cluster_threshold = 0.5
    config.memory.reference_rule = "nearest_to_centre"  # 'nearest_to_centre' | 'random' | 'farthest'
    config.memory.sample_size = 128  # vectors per class sampled before clustering
    config.memory.distance = "sqeuclidean"  # any name in jaxact.ops.distances.METRICS
    config.memory.minkowski_p = 3.0  # p of the minkowski distance
    config.memory.binarize_threshold = 0.0  # hamming / jaccard binarize features at this value
    # relative_entropy / jensen_shannon compare softmax(features / this) as distributions
    config.memory.entropy_temperature = 0.1
    config.memory.temperature = 0.1  # logits = -distance / temperature in the loss and scores
    config.memory.margin = 0.0  # loss only: added to the right class's distance
    config.memory.refresh_every = 25  # steps between reference refreshes
    config.memory.loss_on = "all"  # 'all' | 'misclassified'
    config.memory.frame_loss_weight = 1.0  # per-frame cross-entropy weight
    config.memory.video_loss_weight = 1.0  # per-video (mean frame logits) cross-entropy weight
    # > 0 keeps the softmax head's cross-entropy (train.frame_loss_weight) in the memory phase as a
    # regulariser of the features; 0 trains on the memory loss alone, as the method describes.
    config.memory.softmax_loss_weight = 0.0
    config.memory.write_stride = 2  # write every n-th frame's feature of correct videos
    config.memory.init = "pretrain"  # 'pretrain' (softmax pre-training) | 'checkpoint'
    # Pre-training steps (part of train.num_steps), chosen on fresh validation clips
    # (docs/results_maneuvers.md).
    config.memory.aux_steps = 150
    config.memory.aux_checkpoint = ""  # with init='checkpoint': a workdir whose model fills it
    config.memory.init_batches = 8  # batches whose features fill the memory
    # The auxiliary videos that pre-train the auxiliary network and fill the memory: a split of the
    # dataset ('': the training split; TFDS slices work, e.g. 'validation[:50%]').
    config.memory.aux_data = ""

    config.baseline = ml_collections.ConfigDict()
    config.baseline.enabled = True  # softmax baseline, forked after pre-training, same budget

    config.train.num_steps = 800
    config.train.batch_size = 32
    config.train.learning_rate = 2e-3
    config.train.frame_loss_weight = 0.5  # softmax phases: per-frame CE weight (last frame = 1)

    config.train.eval_every = 400  # centre-view top-1 on the validation split, to TensorBoard
    config.eval.observation_ratios = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    # Multi-view testing of the headline metrics: 3 frame offsets per segment x mirrored (the
    # early-prediction sweep takes the centre view); temporal_views=1, flip_view=False is
    # single-view testing. Chosen on a validation split (docs/results_maneuvers.md).
    config.eval.temporal_views = 3  # segment offsets 1/4, 1/2, 3/4 (1: the centre only)
    config.eval.flip_view = True  # also every view mirrored, its classes mapped back

    if variant.tiny:  # under a minute, learns: the quickstart check
        config.data.builder_config = "small"  # 600 train clips, no distractors, no camera jitter
        config.data.num_frames = 8
        config.data.flip_prob = 0.0  # mirrored clips (labels swapped) slow the first steps
        config.model.hidden_size = 64
        config.model.feature_dim = 32
        config.eval.temporal_views = 1  # single-view testing (the model never saw mirrored clips)
        config.eval.flip_view = False
        tiny_budget(config)
    if variant.smoke:  # seconds-long, for tests; does not learn
        config.data.builder_config = "tiny"
        config.data.num_frames = 8
        config.model.frame_encoder_kwargs.widths = (8, 16)
        config.model.frame_encoder_kwargs.embed_dim = 32
        config.model.hidden_size = 32
        config.model.feature_dim = 16
        smoke_budget(config)
    return config
