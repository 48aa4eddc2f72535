"""Streaming keyframe windows and batched keyframe detection of a whole video."""

import numpy as np
import pytest

from jaxact.analysis import lesson
from jaxact.data import pipeline


@pytest.mark.parametrize("num_frames, frame_stride, stride, length",
                         [(8, 1, 1, 20), (8, 2, 3, 17), (5, 1, 4, 3), (1, 1, 2, 5), (8, 1, 1, 1)])
def test_windows_equal_the_whole_video_windows(num_frames, frame_stride, stride, length):
    video = np.arange(length)[:, None, None, None] * np.ones((1, 2, 2, 1))
    seen = []

    def frames():
        for i, frame in enumerate(video):
            seen.append(i)
            yield frame

    out = list(lesson.keyframe_windows(frames(), num_frames, frame_stride, stride))
    assert [k for k, _ in out] == list(range(0, length, stride))
    for k, window in out:
        idx = pipeline.keyframe_window_indices(length, k, num_frames, frame_stride)
        np.testing.assert_array_equal(window, video[idx])


def test_windows_stream_with_bounded_memory():
    """A window comes out as soon as its frames are in; old frames are released."""
    pulled = []

    def frames():
        for i in range(1000):
            pulled.append(i)
            yield np.full((1, 1, 1), i)

    windows = lesson.keyframe_windows(frames(), num_frames=8, stride=4)
    k, window = next(windows)
    assert k == 0 and len(pulled) == 4  # frames 0..3 reach keyframe 0's last frame (0 + 3)
    for _ in range(100):
        k, window = next(windows)
    assert k == 400 and len(pulled) <= 400 + 4


def test_detect_keyframes_batches_and_pads():
    calls = []

    def predict(video):
        calls.append(video.shape[0])
        b = video.shape[0]
        return {"boxes": np.tile([[[0.1, 0.1, 0.2, 0.3]]], (b, 2, 1)),
                "person_scores": np.full((b, 2), 0.5),
                "action_scores": np.full((b, 2, 3), 0.25) * video[:, 0, 0, 0, 0][:, None, None]}

    windows = [(k, np.full((4, 2, 2, 3), 1.0)) for k in range(0, 10, 2)]
    out = list(lesson.detect_keyframes(windows, predict, batch_size=2, fps=4.0))
    assert calls == [2, 2, 2]  # 5 windows: the last batch is padded
    assert [d["frame"] for d in out] == [0, 2, 4, 6, 8]
    assert [d["time"] for d in out] == [0.0, 0.5, 1.0, 1.5, 2.0]
    np.testing.assert_allclose(out[0]["behaviour_scores"], np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="stride"):
        next(lesson.keyframe_windows([], 8, stride=0))


def test_iter_frames_streams_files_folders_and_arrays(tmp_path):
    import matplotlib.image

    from jaxact.data import video_io

    pytest.importorskip("av")
    video = (np.arange(6)[:, None, None, None] * 40 + np.zeros((1, 16, 16, 3))).astype(np.uint8)
    path = video_io.write_video(str(tmp_path / "v.mp4"), video, fps=8.0)
    frames = list(video_io.iter_frames(path))
    assert len(frames) == 6 and frames[0].shape == (16, 16, 3)
    assert np.abs(np.stack(frames).astype(int) - video).mean() < 6
    assert list(video_io.iter_frames(path, (8, 8)))[0].shape == (8, 8, 3)
    assert video_io.count_frames(path) in (6, None)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(video[:3]):
        matplotlib.image.imsave(folder / f"{i:03d}.png", frame)
    np.testing.assert_array_equal(np.stack(list(video_io.iter_frames(str(folder)))), video[:3])
    assert video_io.count_frames(str(folder)) == 3
    np.save(tmp_path / "a.npy", video)
    np.testing.assert_array_equal(np.stack(list(video_io.iter_frames(str(tmp_path / "a.npy")))),
                                  video)


@pytest.mark.parametrize("case, match", [
    ("missing", "no such file"), ("empty", "empty file"), ("garbage", "cannot decode|no frames"),
    ("mixed_sizes", "001.png: image of size"), ("not_image", "notes.txt: not an image"),
    ("empty_folder", "no image files"), ("extension", "unsupported extension")])
def test_iter_frames_names_the_bad_file(tmp_path, case, match):
    import matplotlib.image

    from jaxact.data import video_io

    pytest.importorskip("av")
    path = tmp_path / case
    if case == "empty":
        path = tmp_path / "empty.mp4"
        path.write_bytes(b"")
    elif case == "garbage":
        path = tmp_path / "garbage.mp4"
        path.write_bytes(b"\x00not a video" * 100)
    elif case in ("mixed_sizes", "not_image", "empty_folder"):
        path.mkdir()
        if case != "empty_folder":
            matplotlib.image.imsave(path / "000.png", np.zeros((8, 8, 3), np.uint8))
        if case == "mixed_sizes":
            matplotlib.image.imsave(path / "001.png", np.zeros((9, 8, 3), np.uint8))
        if case == "not_image":
            (path / "notes.txt").write_text("hi")
    elif case == "extension":
        path = tmp_path / "clip.gif"
        path.write_bytes(b"GIF89a")
    with pytest.raises(video_io.BadInputError, match=match):
        list(video_io.iter_frames(str(path)))
