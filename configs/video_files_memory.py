"""Memory-matching classifier on your own video files, listed in two CSVs.

  python launch.py --config=configs/video_files_memory.py --workdir=workdirs/my_clips \
      --config.data.train_list=train.csv --config.data.test_list=test.csv

A list has one clip per row, `path,label` (optional header row `path,label`; label: a class name;
relative paths are relative to the CSV). A clip is any video FFmpeg decodes or .npy / .npz frames,
resized to `data.frame_size`. Bad rows and unreadable clips are skipped and listed in
WORKDIR/bad_inputs.json. Method, model and budget are those of configs/maneuvers_memory.py.
"""

import ml_collections

from configs import common, maneuvers_memory


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    """`arg`: "", "tiny" (the model and budget of maneuvers_memory.py:tiny) or "smoke"
    (seconds-long, for tests, which write their own clips; does not learn)."""
    variant = common.parse_variant(arg, tiny=False, smoke=False)
    config = maneuvers_memory.get_config(arg)
    config.config_name = "video_files_memory" + (f":{arg}" if arg else "")
    inherited = config.data
    config.data = ml_collections.ConfigDict()
    config.data.name = "video_files"
    config.data.train_list = ""  # required: CSV of path,label rows; class names = its labels
    config.data.test_list = ""  # required: same format; labels must occur in the train list
    config.data.frame_size = (64, 64)  # (H, W) every clip is resized to
    config.data.scan_workers = 4  # threads decoding every clip once up front to find bad ones
    for field in ("num_frames", "min_fraction", "train_observation", "num_threads", "prefetch"):
        config.data[field] = inherited[field]
    config.data.flip_prob = inherited.flip_prob  # mirror left-right; the label is kept
    config.train.eval_every = 0  # two lists, train and test: no validation split to watch
    if variant.tiny or variant.smoke:
        config.data.frame_size = (32, 32)
    return config
