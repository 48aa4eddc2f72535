"""Memory-matching classifier on a folder of videos, one sub-folder per class.

  python launch.py --config=configs/video_folder_memory.py --workdir=workdirs/ucf101 \
      --config.data.root=UCF-101 --config.data.split_dir=ucfTrainTestlist
  python launch.py --config=configs/video_folder_memory.py --workdir=workdirs/my_clips \
      --config.data.root=my_clips          # no split files: a hashed 80/20 split per class

`data.root` holds ROOT/CLASS/NAME.mp4 (any video FFmpeg decodes, or .npy / .npz frames) or
ROOT/CLASS/NAME/ frame folders of images; labels are the folder names. Split files: UCF101's
trainlistNN.txt / testlistNN.txt or HMDB51's CLASS_test_splitN.txt (`data.split_number` picks
N). Every clip is decoded once into an array_record cache (`data.cache_dir`, default under
DATA_DIR/video_folder), resampled to `data.fps` and resized to a short side of
`data.short_side`; the transform crops a `data.crop_size` square (random in training, centred
in evaluation). Bad files are skipped and listed in WORKDIR/bad_inputs.json. Formats:
docs/data_formats.md#video-folders. Method, model and budget are those of
configs/maneuvers_memory.py.
"""

import ml_collections

from configs import common, maneuvers_memory


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    """`arg`: "", "tiny" (the model and budget of maneuvers_memory.py:tiny) or "smoke"
    (seconds-long, for tests, which write their own folder; does not learn)."""
    variant = common.parse_variant(arg, tiny=False, smoke=False)
    config = maneuvers_memory.get_config(arg)
    config.config_name = "video_folder_memory" + (f":{arg}" if arg else "")
    inherited = config.data
    config.data = ml_collections.ConfigDict()
    config.data.name = "video_folder"
    config.data.root = ""  # required: ROOT/CLASS/NAME.mp4 or ROOT/CLASS/NAME/*.jpg
    config.data.split_dir = ""  # UCF101 / HMDB51 split files; '': a hashed split
    config.data.split_scheme = ""  # 'ucf' | 'hmdb' | '': detected from the files
    config.data.split_number = 1  # trainlist01.txt / CLASS_test_split1.txt
    config.data.test_fraction = 0.2  # without split files: this share of each class is test
    config.data.fps = 10.0  # frames per second stored (resampled by time); 0: every frame
    config.data.frame_fps = 25.0  # the frame rate of frame folders and frame arrays
    config.data.short_side = 72  # stored frames: short side this, aspect kept
    config.data.crop_size = 64  # square cut by the transform (0: short_side)
    config.data.max_frames = 0  # keep the first this many stored frames of a clip; 0: all
    config.data.data_dir = common.data_dir()  # the cache goes under DATA_DIR/video_folder
    config.data.cache_dir = ""  # '': DATA_DIR/video_folder/ROOTNAME-HASH
    config.data.decode_workers = 4  # threads decoding clips in the one-off conversion
    for field in ("num_frames", "min_fraction", "train_observation", "num_threads", "prefetch"):
        config.data[field] = inherited[field]
    config.data.flip_prob = inherited.flip_prob  # mirror left-right; the label is kept
    config.train.eval_every = 0  # splits train and test: no validation split to watch
    if variant.tiny or variant.smoke:
        config.data.short_side = 36
        config.data.crop_size = 32
    return config
