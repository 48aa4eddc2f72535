"""Spatio-temporal action detector on synthetic classrooms (AVA-style keyframe boxes + behaviours).

  python launch.py --config=configs/classroom_detector.py --workdir=workdirs/classroom_detector
  python launch.py --config=configs/classroom_detector.py:tiny --workdir=/tmp/tiny   # smoke run
  python launch.py --config=configs/classroom_detector.py --workdir=DIR --mode=eval
  python launch.py --config=configs/classroom_detector.py --workdir=DIR --mode=predict --video=clip.npy

Target on the `classroom/default` test split (400 clips): person AP@0.5 >= 0.9 and frame-mAP@0.5
>= 0.6, with training in <= 20 minutes on 2 CPU cores. 1,000 steps at batch 8 (8 frames,
128 x 128; ~7 epochs of the 1,100 training clips) take 0.8 s each there: measured 13.5 min of
training (19.3 min with another job on the cores), frame-mAP 0.718, person AP50 0.943 (README);
dataset generation, once per machine, is not counted. On one H100, 1,300 steps train in 87 s
(frame-mAP 0.804). `:resnet50` swaps in the ResNet-50-sized preset
(`jaxact.models.detector.PRESETS`), meant for an accelerator; its training settings are a starting
point only (tests build it, nobody has trained it).
"""

import ml_collections

from configs import common
from jaxact.models.detector import PRESETS


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = common.base_config()
    config.experiment = "action_detector"
    config.config_name = "classroom_detector" + (f":{variant}" if variant else "")

    config.data = ml_collections.ConfigDict()
    config.data.name = "classroom"  # builder in jaxact.data.builders.BUILDERS (detection: classroom)
    config.data.builder_config = "default"  # 'tiny' (64 px, 8 frames) | 'default' (128 px, 16 frames)
    config.data.data_dir = common.data_dir()  # TFDS cache directory
    config.data.num_frames = 8  # frames per clip, centred on the keyframe (at num_frames // 2)
    config.data.frame_stride = 1  # gap between sampled frames; the window is clamped to the clip
    config.data.max_people = 12  # padded people per clip; >= the dataset's maximum (12)
    config.data.flip_prob = 0.5  # horizontal flip in training (every behaviour is mirror-symmetric)
    config.data.num_threads = 2  # loader threads
    config.data.prefetch = 4  # batches prefetched

    # ActionDetector fields (num_actions comes from the data). Defaults: the "tiny" preset.
    config.model = ml_collections.ConfigDict()
    config.model.stem = "patchify"  # 'patchify' (stride-p conv) | 'resnet' (7x7 conv + max-pool)
    config.model.stem_width = 16  # stem output channels
    config.model.patch_size = 4  # patchify stem stride
    config.model.block = "basic"  # 'basic' | 'bottleneck' residual blocks
    config.model.stage_sizes = (1, 1, 1, 1)  # blocks per backbone stage
    config.model.widths = (16, 32, 48, 64)  # output channels per stage
    config.model.strides = (1, 2, 1, 1)  # spatial stride of each stage's first block
    config.model.dilations = (1, 1, 2, 4)  # spatial dilation per stage (keeps resolution for RoIs)
    config.model.temporal_kernels = (3, 3, 3, 3)  # temporal conv size per stage (1 = 2D only)
    config.model.isolate_keyframe = True  # the localizer sees only the keyframe
    config.model.fpn_dim = 64  # FPN width = localizer query width
    config.model.num_queries = 20  # N predicted boxes per clip; >= data.max_people
    config.model.localizer_stages = 3  # iterative box refinement stages (all deep-supervised)
    config.model.localizer_heads = 4  # self-attention heads among queries
    config.model.dynamic_dim = 16  # rank of the query-generated dynamic 1x1 conv
    config.model.ffn_dim = 256  # localizer feed-forward width
    config.model.localizer_roi_size = 7  # RoIAlign bins of the localizer
    config.model.prior_prob = 0.1  # initial person probability of every query
    config.model.action_roi_size = 7  # RoIAlign bins S of the actor features
    config.model.roi_sampling_ratio = 2  # RoIAlign samples per bin and axis
    config.model.head_dim = 128  # hidden width of the action head
    config.model.head_pool = "avg"  # 'avg' | 'max' pooling of actor features over time and bins
    config.model.head_use_query = True  # feed the localizer's query feature to the action head

    # jaxact.detection_losses.LossWeights fields.
    config.loss = ml_collections.ConfigDict()
    config.loss.person = 2.0  # person (object-ness) BCE / focal weight
    config.loss.l1 = 5.0  # L1 box (cxcywh) weight
    config.loss.giou = 2.0  # 1 - GIoU box weight
    config.loss.action = 2.0  # per-person multi-label action BCE weight
    config.loss.aux = 1.0  # multiplier of the earlier localizer stages' losses (0: off)
    config.loss.cost_person = 2.0  # matching cost: person term
    config.loss.cost_l1 = 5.0  # matching cost: L1 term
    config.loss.cost_giou = 2.0  # matching cost: GIoU term
    config.loss.cost_type = "prob"  # 'prob' (DETR) | 'focal' (Deformable DETR)
    config.loss.focal_alpha = -1.0  # focal alpha of the person loss/cost; < 0: no alpha weighting
    config.loss.focal_gamma = 0.0  # focal gamma; 0 with alpha < 0: plain BCE

    config.train.num_steps = 1000  # ~1.0-1.2 s/step on 2 CPU cores: 17-19 min (see docstring)
    config.train.batch_size = 8  # global batch, split over all devices and hosts
    config.train.learning_rate = 1e-3  # peak AdamW learning rate (small model, trained from scratch)
    config.train.warmup_steps = 100  # linear warmup: set losses are noisy while matching settles
    config.train.weight_decay = 1e-4  # AdamW decoupled weight decay
    config.train.grad_clip = 1.0  # global-norm clipping
    config.train.log_every = 50  # steps between metric logs
    config.train.checkpoint_every = 250  # steps between (async) checkpoints
    config.train.fast_compile = False  # XLA backend opt. level 0: ~2.5x faster compiles, slower steps

    config.eval.batch_size = 16  # global eval batch (the last one is padded and masked)
    config.eval.split = "test"  # split reported in results.json
    # No person-score threshold in evaluation: AP ranks all N predictions of every clip by score.
    config.eval.iou_threshold = 0.5  # IoU for a true positive in frame-mAP (person_ap50 uses 0.5)
    config.eval.matching = "voc"  # 'voc' (official AVA protocol) | 'greedy'
    config.eval.plot_score_threshold = 0.5  # detections.png and --mode=predict show boxes above it
    config.eval.plot_num_clips = 6  # test keyframes drawn in detections.png

    if variant == "tiny":  # seconds-long smoke run for tests and the quickstart check
        config.data.builder_config = "tiny"
        config.data.num_frames = 4
        config.model.stem_width = 8
        config.model.stage_sizes = (1, 1, 1)
        config.model.widths = (8, 8, 16)
        config.model.strides = (1, 2, 1)
        config.model.dilations = (1, 1, 2)
        config.model.temporal_kernels = (3, 3, 3)
        config.model.fpn_dim = 16
        config.model.num_queries = 12
        config.model.localizer_stages = 2
        config.model.localizer_heads = 2
        config.model.dynamic_dim = 4
        config.model.ffn_dim = 32
        config.model.localizer_roi_size = 3
        config.model.action_roi_size = 3
        config.model.head_dim = 16
        config.train.num_steps = 6
        config.train.batch_size = 8
        config.train.warmup_steps = 2
        config.train.log_every = 2
        config.train.checkpoint_every = 3
        config.train.fast_compile = True  # compiling, not stepping, is what a smoke run waits for
        config.eval.batch_size = 8
        config.eval.plot_num_clips = 4
    elif variant == "resnet50":  # the ResNet-50-sized preset; needs an accelerator
        config.model.update(PRESETS["resnet50"])
        config.train.batch_size = 16
        config.train.learning_rate = 2e-4
        config.train.num_steps = 6000
        config.train.warmup_steps = 500
        config.train.checkpoint_every = 1000
    elif variant:
        raise ValueError(f"unknown variant {variant!r}; expected '', 'tiny' or 'resnet50'")
    return config
