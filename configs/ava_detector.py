"""The action detector on AVA-format data: annotation CSVs, a label map, and frame folders or
videos (AVA, or UCF101-24, JHMDB, MultiSports, your own recordings exported the same way; layout
and fields: docs/data_formats.md#ava-format-detection-data).

The built-in classroom data in AVA format, and a small detector trained on it:

  python scripts/export_ava_format.py --out=/tmp/ava_classroom --builder_config=small
  python launch.py --config=configs/ava_detector.py:tiny --workdir=/tmp/ava_tiny \\
      --config.data.train_csv=/tmp/ava_classroom/annotations/train.csv \\
      --config.data.test_csv=/tmp/ava_classroom/annotations/test.csv \\
      --config.data.label_map=/tmp/ava_classroom/annotations/labelmap.pbtxt \\
      --config.data.frame_dir=/tmp/ava_classroom/frames --config.data.fps=4

AVA v2.2 (frames extracted at 30 fps from the 15-minute cuts as the usual preparation scripts
do: FRAMES/VIDEO_ID/img_00001.jpg is second 900), on an accelerator:

  python launch.py --config=configs/ava_detector.py --workdir=workdirs/ava \\
      --config.data.train_csv=ava/annotations/ava_train_v2.2.csv \\
      --config.data.test_csv=ava/annotations/ava_val_v2.2.csv \\
      --config.data.label_map=ava/annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt \\
      --config.data.excluded_csv=ava/annotations/ava_val_excluded_timestamps_v2.2.csv \\
      --config.data.frame_dir=ava/frames --config.data.time_offset=900

The first run converts each split once into `data.cache_dir` (a changed input or setting
converts again); bad rows and skipped keyframes go to WORKDIR/bad_inputs.json. The default is
the ResNet-50-sized preset (`jaxact.models.detector.PRESETS`) with the default Gram-fusion head,
at 224 px and 8 frames 8 apart (about 2 s at 30 fps); its training settings are a starting point
only, nobody has trained it on AVA yet. `:tiny` is the small model of
`classroom_detector.py:tiny` at 64 px, 4 frames; `:smoke` the seconds-long one of the tests;
`:fusion=pooled` (or sum, concat) picks another action head.

Measured: `:tiny` on the `small` export above (seed 0, 2026-12-06, 2 CPU cores shared with
other jobs): frame-mAP@0.5 0.034, person AP@0.5 0.071 on its 32 test clips after 250 steps
(133 s of training). `classroom_detector.py:tiny`, the same model on the same renders read
losslessly from TFDS with their visible-person masks (the behaviour-map loss, which AVA-format
data has no target for), measured 0.069 / 0.129 in its own run; one run each, so how much of
the gap is the data and how much run-to-run spread is not known.
"""

import ml_collections

from configs import classroom_detector, common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    """`arg`: `tiny` (small model and frames, CPU) or `smoke` (seconds-long, for tests; does not
    learn); default: the ResNet-50 preset, for accelerators. `fusion=NAME` picks the action head
    as in classroom_detector.py (default its `DEFAULT_FUSION`)."""
    variant = common.parse_variant(arg, tiny=False, smoke=False,
                                   fusion=classroom_detector.DEFAULT_FUSION)
    if variant.tiny and variant.smoke:
        raise ValueError(f"config variants tiny and smoke exclude each other: {arg!r}")
    size = "tiny" if variant.tiny else "smoke" if variant.smoke else "resnet50"
    # Model, loss, train, eval and analyze sections: those of the classroom detector.
    config = classroom_detector.get_config(f"{size},fusion={variant.fusion}")
    config.config_name = "ava_detector" + (f":{arg}" if arg else "")
    # The classroom's per-behaviour thresholds name its behaviours; AVA's are others.
    config.analyze.per_behaviour = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    config.data.name = "ava_format"  # jaxact.data.ava_format.AvaFormat
    config.data.train_csv = ""  # required: AVA-format CSV of the training keyframes
    config.data.validation_csv = ""  # optional: the split train.eval_every evaluates
    config.data.test_csv = ""  # required: the split results.json reports (AVA: its val CSV)
    config.data.label_map = ""  # required: .pbtxt (AVA's) or CSV action_id,name; class order
    config.data.excluded_csv = ""  # optional: video_id,timestamp rows left out of every split
    config.data.frame_dir = ""  # FRAME_DIR/VIDEO_ID/<frame_template> (set this or video_dir)
    config.data.frame_template = "img_{:05d}.jpg"  # frame file names in a video's folder
    config.data.first_frame = 1  # number of a folder's first frame (frame at time_offset)
    config.data.video_dir = ""  # VIDEO_DIR/VIDEO_ID.mp4 (.mkv, .webm, .avi...), decoded by PyAV
    config.data.fps = 30.0  # frame rate of the frame folders (videos state their own)
    config.data.timestamp_unit = "seconds"  # 'seconds' (AVA) | 'frames' (frame numbers)
    config.data.time_offset = 0.0  # subtracted from timestamps first (AVA's cuts: 900)
    config.data.frame_size = (224, 224)  # (H, W) every frame is resized to
    config.data.num_frames = 8  # frames per clip, centred on the keyframe (at num_frames // 2)
    config.data.frame_stride = 8  # frames between sampled frames; edge frames repeat at the ends
    config.data.max_people = 32  # padded people per keyframe; >= the CSVs' most (checked)
    config.data.flip_prob = 0.5  # horizontal flip in training (boxes mirrored, actions kept)
    config.data.cache_dir = common.data_dir() + "/ava_format"  # converted splits, one folder per dataset
    config.data.cache_format = "jpeg"  # converted frames: 'jpeg' (~10x smaller) | 'raw' (exact)
    config.data.jpeg_quality = 90  # of cache_format='jpeg'
    config.data.scan_workers = 4  # threads decoding videos / frame folders in the conversion
    config.data.num_threads = 2  # loader threads
    config.data.prefetch = 4  # batches prefetched

    if variant.tiny or variant.smoke:  # small frames and clips; frames cached exactly
        config.data.frame_size = (64, 64)
        config.data.num_frames = 4
        config.data.frame_stride = 1
        config.data.max_people = 12
        config.data.cache_format = "raw"
    return config
