"""Behaviour maps per keyframe, the annotated video and the whole-lesson runner (a fake
detector with known answers; the real one runs in test_detector_train's analyze test)."""

import json
import os

import numpy as np
import pytest

from jaxact.analysis import annotate, lesson, report, tracking
from jaxact.data import video_io
from jaxact.evaluation import behaviour_maps

NAMES = ("sit", "raise_hand")
LEFT = [0.0, 0.0, 0.5, 1.0]
RIGHT = [0.5, 0.25, 1.0, 1.0]


def _map_probs(n, behaviour):
    """[n, 2, 2, 3] maps: every bin certain of behaviour channel `behaviour[i]`."""
    return np.eye(3)[np.asarray(behaviour)][:, None, None, :].repeat(2, 1).repeat(2, 2)


def test_paste_owner_follows_the_occlusion_rule():
    boxes = np.array([[0.0, 0.0, 0.75, 0.5], [0.25, 0.0, 1.0, 0.75], [0, 0, 1, 1.0]])
    scores = np.array([0.9, 0.9, 0.3])  # the third is below the threshold: nobody's
    probs, owner = behaviour_maps.paste_maps(_map_probs(3, [1, 2, 1]), boxes, scores, 4, 4,
                                             score_threshold=0.5, return_owner=True)
    expected = np.array([[0, 1, 1, 1], [0, 1, 1, 1], [-1, 1, 1, 1], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(owner, expected)  # actor 1 has the lower bottom: in front
    np.testing.assert_array_equal(
        probs, behaviour_maps.paste_maps(_map_probs(3, [1, 2, 1]), boxes, scores, 4, 4, 0.5))


def test_tracks_keep_their_detection_indices_through_merges():
    frames = [{"time": float(t), "boxes": np.array([RIGHT, LEFT] if t % 2 else [LEFT, RIGHT]),
               "scores": np.ones(2), "behaviour_scores": np.zeros((2, 2))} for t in range(4)]
    # Left leaves for longer than the tracker's memory, then comes back: two fragments, merged.
    frames += [{"time": 4.0 + t, "boxes": np.array([RIGHT]), "scores": np.ones(1),
                "behaviour_scores": np.zeros((1, 2))} for t in range(3)]
    frames += [{"time": 7.0 + t, "boxes": np.array([RIGHT, LEFT]), "scores": np.ones(2),
                "behaviour_scores": np.zeros((2, 2))} for t in range(2)]
    settings = report.AnalysisSettings(tracker=tracking.TrackerSettings(max_missed=1))
    tracks = report.build_tracks(frames, settings)
    assert len(tracks) == 2
    for track in tracks:
        for t, d, box in zip(track.times, track.detections, track.boxes, strict=True):
            np.testing.assert_array_equal(frames[int(t)]["boxes"][d], box)
    left = next(t for t in tracks if t.boxes[0][0] == 0.0)
    assert left.times.tolist() == [0, 1, 2, 3, 7, 8] and left.detections.tolist() == [0, 1, 0, 1, 1, 1]


def test_maps_npz_names_each_pixel_by_track():
    recorder = annotate.MapRecorder(4, 4, score_threshold=0.5)
    recorder.add({"frame": 0, "time": 0.0, "boxes": np.array([LEFT, RIGHT]),
                  "scores": np.array([0.9, 0.9]), "map_probs": _map_probs(2, [2, 1])})
    recorder.add({"frame": 4, "time": 0.5, "boxes": np.array([RIGHT, LEFT]),
                  "scores": np.array([0.9, 0.2]), "map_probs": _map_probs(2, [1, 2])})
    tracks = [tracking.Track(7, np.array([0.0]), np.array([LEFT]), np.ones(1), np.zeros((1, 2)),
                             np.array([0])),
              tracking.Track(3, np.array([0.0, 0.5]), np.array([RIGHT, RIGHT]), np.ones(2),
                             np.zeros((2, 2)), np.array([1, 0]))]
    out = annotate.maps_npz(recorder, tracks, NAMES)
    assert out["behaviour"].dtype == np.uint8 and out["behaviour"].shape == (2, 4, 4)
    np.testing.assert_array_equal(out["frame"], [0, 4])
    np.testing.assert_array_equal(out["time"], [0.0, 0.5])
    np.testing.assert_array_equal(out["class_names"], NAMES)
    left_half = np.s_[:, :2]
    right_low = np.s_[1:, 2:]
    np.testing.assert_array_equal(out["person"][0][left_half], 7)
    np.testing.assert_array_equal(out["person"][0][right_low], 3)
    np.testing.assert_array_equal(out["person"][0][0, 2:], -1)
    np.testing.assert_array_equal(out["behaviour"][0][left_half], 2)  # raise_hand
    np.testing.assert_array_equal(out["behaviour"][0][right_low], 1)  # sit
    # Keyframe 1: the left person's score is below the threshold, so nobody is there.
    np.testing.assert_array_equal(out["person"][1][left_half], -1)
    np.testing.assert_array_equal(out["behaviour"][1][left_half], 0)
    np.testing.assert_array_equal(out["person"][1][right_low], 3)


def test_annotated_frames_draw_the_latest_keyframe():
    frames = [np.full((32, 32, 3), 128, np.uint8) for _ in range(6)]
    maps = [np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)]
    labels = [[], [(np.array([0.25, 0.25, 0.75, 0.75]), "3 row 1, seat 1")]]
    out = list(annotate.annotated_frames(iter(frames), [1, 3], labels, maps, NAMES))
    assert len(out) == 6 and all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in out)
    np.testing.assert_array_equal(out[0], frames[0])  # before the first keyframe: bare
    np.testing.assert_array_equal(out[1], frames[1])  # keyframe 1: nobody, no behaviour
    np.testing.assert_array_equal(out[2], frames[2])
    colour = behaviour_maps.behaviour_colours(2)[1, :3] * 255
    expected = np.round(128 * (1 - annotate.MAP_ALPHA) + colour * annotate.MAP_ALPHA)
    np.testing.assert_array_equal(out[3][-1, 0], expected)  # overlay away from the box
    assert not np.array_equal(out[3][8], out[3][-1])  # the box and its label are drawn
    np.testing.assert_array_equal(out[5], out[3])


def test_video_writer_streams_and_is_atomic(tmp_path):
    pytest.importorskip("av")
    path = str(tmp_path / "v.mp4")
    frames = [np.full((10, 12, 3), 40 * i, np.uint8) for i in range(5)]
    with video_io.VideoWriter(path, fps=8.0) as video:
        for frame in frames:
            video.write(frame)
    back = video_io.read_video(path)
    assert back.shape == (5, 10, 12, 3) and np.abs(back.astype(int) - np.stack(frames)).mean() < 4
    with pytest.raises(ValueError, match=r"frame 1 is \(8, 12, 3\)"), \
            video_io.VideoWriter(str(tmp_path / "mixed.mp4")) as video:
        video.write(frames[0])
        video.write(frames[0][:8])
    with pytest.raises(ValueError, match="no frames"), video_io.VideoWriter(str(tmp_path / "e.mp4")):
        pass
    assert sorted(os.listdir(tmp_path)) == ["v.mp4"]  # nothing partial left behind


def _fake_predict(video):
    """Two people whose behaviour follows the frame's brightness (raised when bright)."""
    b = video.shape[0]
    bright = (video[:, video.shape[1] // 2].mean(axis=(1, 2, 3)) > 100).astype(float)
    action = np.stack([1 - bright, bright], -1)[:, None, :].repeat(2, 1)
    behaviour = np.where(bright > 0, 2, 1).astype(int)
    maps = np.stack([_map_probs(2, [k, k]) for k in behaviour])
    return {"boxes": np.tile(np.array([LEFT, RIGHT]) * 0.9, (b, 1, 1)),
            "person_scores": np.full((b, 2), 0.9), "action_scores": 0.9 * action,
            "map_probs": maps}


def test_lesson_analyzer_writes_every_output(tmp_path):
    pytest.importorskip("av")
    levels = [50] * 16 + [200] * 16 + [50] * 16  # 6 s at 8 fps: hands up from 2 s to 4 s
    video = np.stack([np.full((24, 32, 3), v, np.uint8) for v in levels])
    path = video_io.write_video(str(tmp_path / "lesson.mp4"), video, fps=8.0)
    runner = lesson.LessonAnalyzer(
        predict=_fake_predict, class_names=NAMES, frame_size=(16, 16), num_frames=4,
        frame_stride=1, stride=4, batch_size=3, default_fps=5.0, map_size=(8, 8),
        meta={"workdir": "RUN"})
    out = runner.run(path, str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == sorted(lesson.OUTPUTS)
    analysis = out["analysis"]
    assert analysis["meta"]["num_frames"] == 48 and analysis["meta"]["workdir"] == "RUN"
    assert [t["seat_name"] for t in analysis["tracks"]] == ["row 1, seat 1", "row 1, seat 2"]
    hands = analysis["tracks"][0]["behaviours"]["raise_hand"]
    assert len(hands) == 1 and 1.5 <= hands[0]["start"] <= 2.5 and 3.0 <= hands[0]["end"] <= 4.0
    again = report.analyze(out["keyframes"], NAMES, 6.0, runner.settings)
    assert {k: v for k, v in analysis.items() if k != "meta"} == \
        {k: v for k, v in again.items() if k != "meta"}
    with np.load(tmp_path / "out" / "maps.npz") as maps:
        assert maps["behaviour"].shape == (12, 8, 8) and maps["person"].shape == (12, 8, 8)
        assert set(np.unique(maps["person"])) == {-1} | {t["id"] for t in analysis["tracks"]}
        raised = maps["time"][(maps["behaviour"] == 2).any(axis=(1, 2))]
        assert raised.min() >= 1.5 and raised.max() <= 4.0
    annotated = video_io.read_video(str(tmp_path / "out" / "annotated.mp4"))
    assert annotated.shape == video.shape
    assert np.abs(annotated.astype(int) - video).mean() > 5  # maps and boxes drawn in


def test_lesson_analyzer_without_maps_or_video(tmp_path):
    video = np.zeros((12, 16, 16, 3), np.uint8)
    np.save(tmp_path / "frames.npy", video)

    def predict(clips):
        out = _fake_predict(clips)
        del out["map_probs"]
        return out

    runner = lesson.LessonAnalyzer(predict=predict, class_names=NAMES, frame_size=(16, 16),
                                   num_frames=4, frame_stride=1, stride=2, batch_size=4,
                                   default_fps=4.0, video=False)
    out = runner.run(str(tmp_path / "frames.npy"), str(tmp_path / "out"))
    assert out["maps"] is None
    assert sorted(os.listdir(tmp_path / "out")) == ["analysis.json", "counts.csv", "counts.png",
                                                    "intervals.csv", "summary.txt", "timeline.png"]


def test_folder_videos_tells_video_folders_from_frame_folders(tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "0001.png").write_bytes(b"")
    (tmp_path / "frames" / "clip.mp4").write_bytes(b"")
    assert video_io.folder_videos(str(tmp_path / "frames")) is None  # any image: frames
    videos = tmp_path / "videos"
    (videos / "sub.mp4").mkdir(parents=True)  # a folder, not a video
    for name in ("b.mp4", "a.npy", "notes.txt", ".hidden.mp4"):
        (videos / name).write_bytes(b"")
    assert video_io.folder_videos(str(videos)) == [str(videos / "a.npy"), str(videos / "b.mp4")]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_bytes(b"")
    with pytest.raises(video_io.BadInputError, match="other.*neither videos"):
        video_io.folder_videos(str(tmp_path / "other"))


def test_output_names_keep_videos_apart():
    assert lesson._output_names(["x/a.mp4", "x/b.avi"]) == ["a", "b"]
    assert lesson._output_names(["x/a.mp4", "x/a.npy", "y/c/"]) == ["a_mp4", "a_npy", "c"]


def test_analyze_videos_resumes_and_skips_unreadable_videos(tmp_path):
    pytest.importorskip("av")
    folder = tmp_path / "lessons"
    folder.mkdir()
    levels = [50] * 8 + [200] * 8
    video = np.stack([np.full((16, 16, 3), v, np.uint8) for v in levels])
    np.save(folder / "monday.npy", video)
    video_io.write_video(str(folder / "tuesday.mp4"), video, fps=8.0)
    (folder / "broken.mp4").write_bytes(b"\x00" * 64)
    (folder / "notes.txt").write_text("not a video")

    def runner(workdir):
        return lesson.LessonAnalyzer(
            predict=_fake_predict, class_names=NAMES, frame_size=(16, 16), num_frames=4,
            frame_stride=1, stride=4, batch_size=2, default_fps=8.0, map_size=None, video=False,
            meta={"workdir": workdir})

    videos = video_io.folder_videos(str(folder))
    out = tmp_path / "out"
    first = lesson.analyze_videos(runner("RUN"), videos, str(out))
    status = {os.path.basename(v["video"]): v["status"] for v in first["videos"]}
    assert status == {"broken.mp4": "failed", "monday.npy": "analyzed", "tuesday.mp4": "analyzed"}
    broken = first["videos"][0]
    assert "broken.mp4" in broken["error"] and not os.path.exists(broken["output_dir"])
    assert sorted(os.listdir(out)) == ["index.json", "monday", "tuesday"]
    with open(out / "index.json") as f:
        assert json.load(f) == {"videos": first["videos"]}
    for row in first["videos"][1:]:
        assert row["students"] == 2 and row["duration"] == 2.0
        assert row["intervals"] == {"sit": 2, "raise_hand": 2}  # both raise at 1 s
        with open(os.path.join(row["output_dir"], "analysis.json")) as f:
            assert json.load(f)["meta"]["video"] == row["video"]
    stamp = os.path.getmtime(out / "monday" / "analysis.json")

    # Again: finished videos are kept as they are; the broken one is tried and reported again.
    second = lesson.analyze_videos(runner("RUN"), videos, str(out))
    assert [v["status"] for v in second["videos"]] == ["failed", "done before", "done before"]
    assert [v.get("students") for v in second["videos"]] == [None, 2, 2]
    assert os.path.getmtime(out / "monday" / "analysis.json") == stamp
    # Another run's detector analyses them anew; a process that does not write writes nothing.
    third = lesson.analyze_videos(runner("OTHER"), videos, str(out))
    assert [v["status"] for v in third["videos"]] == ["failed", "analyzed", "analyzed"]
    quiet = lesson.analyze_videos(runner("THIRD"), videos, str(tmp_path / "quiet"), write=False)
    assert quiet["written"] == {} and not (tmp_path / "quiet").exists()
    assert [v["status"] for v in quiet["videos"]] == ["failed", "analyzed", "analyzed"]
