"""AVA-format CSV reader: grouping into keyframes, multi-hot merging, per-row validation."""

import os

import numpy as np
import pytest

from jaxact.data import ava
from jaxact.data.video_io import BadInputError

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ava_sample")


def write(tmp_path, text, name="ann.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_groups_keyframes_and_merges_actions_per_person(tmp_path):
    path = write(tmp_path, "\n".join([
        "vid_b,0902,0.1,0.2,0.5,0.9,3,7",
        "vid_a,0905,0.0,0.0,1.0,1.0,1,0",
        "vid_b,0902,0.1,0.2,0.5,0.9,5,7",  # same person: merges into one multi-hot row
        "vid_b,0902,0.6,0.1,0.9,0.8,5,2",
        "vid_b,0902,0.1,0.2,0.5,0.9,1,7",
        "",  # blank lines are not rows
    ]))
    annotations, problems = ava.read_ava_csv(path, actions=5)
    assert problems == []
    assert list(annotations) == [("vid_a", 905), ("vid_b", 902)]  # sorted keys
    kf = annotations[("vid_b", 902)]
    np.testing.assert_allclose(kf.boxes, [[0.1, 0.2, 0.5, 0.9], [0.6, 0.1, 0.9, 0.8]])
    np.testing.assert_array_equal(kf.actions, [[1, 0, 1, 0, 1], [0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(kf.person_ids, [7, 2])
    assert kf.boxes.dtype == np.float32 and kf.actions.dtype == np.uint8
    assert kf.person_ids.dtype == np.int64
    np.testing.assert_array_equal(annotations[("vid_a", 905)].actions, [[1, 0, 0, 0, 0]])


def test_without_person_column_people_are_told_apart_by_box(tmp_path):
    path = write(tmp_path, "v,1,0.1,0.1,0.4,0.4,2\nv,1,0.5,0.5,0.9,0.9,2\nv,1,0.1,0.1,0.4,0.4,4\n")
    annotations, problems = ava.read_ava_csv(path, actions=4)
    kf = annotations[("v", 1)]
    assert problems == []
    np.testing.assert_array_equal(kf.actions, [[0, 1, 0, 1], [0, 1, 0, 0]])
    np.testing.assert_array_equal(kf.person_ids, [-1, -1])


def test_label_map_picks_and_orders_columns(tmp_path):
    box = "0.1,0.1,0.4,0.4"
    path = write(tmp_path, f"v,1,{box},80,0\nv,1,{box},12,0\nv,1,{box},2,0\n")
    annotations, problems = ava.read_ava_csv(path, actions=[12, 80])
    np.testing.assert_array_equal(annotations[("v", 1)].actions, [[1, 1]])
    assert [(p.row, p.field) for p in problems] == [(3, "action_id")]
    assert "label map" in problems[0].reason


@pytest.mark.parametrize("line, field, words", [
    ("v,1,0.1,0.1,0.4,0.4", None, "6 fields"),
    ("v,1,0.1,0.1,0.4,0.4,2,0,9", None, "9 fields"),
    (",1,0.1,0.1,0.4,0.4,2,0", "video_id", "empty"),
    ("v,12.5,0.1,0.1,0.4,0.4,2,0", "timestamp", "integer"),
    ("v,-3,0.1,0.1,0.4,0.4,2,0", "timestamp", "integer"),
    ("v,1,abc,0.1,0.4,0.4,2,0", "x1", "not a number"),
    ("v,1,0.1,nan,0.4,0.4,2,0", "y1", "not a number"),
    ("v,1,0.1,0.1,1.5,0.4,2,0", "x2", "outside [0, 1]"),
    ("v,1,0.1,0.1,0.4,-0.01,2,0", "y2", "outside [0, 1]"),
    ("v,1,0.4,0.1,0.1,0.4,2,0", "x2", "inverted"),
    ("v,1,0.1,0.3,0.4,0.3,2,0", "y2", "empty or inverted"),
    ("v,1,0.1,0.1,0.4,0.4,0,0", "action_id", "outside 1..5"),
    ("v,1,0.1,0.1,0.4,0.4,6,0", "action_id", "outside 1..5"),
    ("v,1,0.1,0.1,0.4,0.4,2.0,0", "action_id", "not an integer"),
    ("v,1,0.1,0.1,0.4,0.4,2,-1", "person_id", "negative"),
    ("v,1,0.1,0.1,0.4,0.4,2,x", "person_id", "not an integer"),
    ('v,"1,0.1,0.1,0.4,0.4,2,0', None, "fields"),  # an unclosed quote swallows the line
])
def test_bad_row_is_reported_and_skipped(tmp_path, line, field, words):
    good = "v,1,0.2,0.2,0.6,0.6,1,3"
    path = write(tmp_path, f"{good}\n{line}\n{good.replace(',1,3', ',4,3')}\n")
    annotations, problems = ava.read_ava_csv(path, actions=5)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert (problem.path, problem.row, problem.field) == (path, 2, field)
    assert words in problem.reason
    assert "row 2" in str(problem) and path in str(problem)
    np.testing.assert_array_equal(annotations[("v", 1)].actions, [[1, 0, 0, 1, 0]])  # both good rows
    with pytest.raises(BadInputError, match=r"ann\.csv: row 2") as err:
        ava.read_ava_csv(path, actions=5, strict=True)
    assert (err.value.row, err.value.field) == (2, field)


def test_small_overshoot_is_clipped_not_rejected(tmp_path):
    path = write(tmp_path, "v,1,-0.0005,0.1,1.0008,0.4,2,0\n")
    annotations, problems = ava.read_ava_csv(path, actions=5)
    assert problems == []
    np.testing.assert_allclose(annotations[("v", 1)].boxes, [[0.0, 0.1, 1.0, 0.4]])


def test_duplicates_and_conflicting_person_boxes(tmp_path):
    path = write(tmp_path, "\n".join([
        "v,1,0.1,0.1,0.4,0.4,2,0",
        "v,1,0.10,0.1,0.4,0.400,2,0",  # the same values: an exact duplicate
        "v,1,0.5,0.5,0.9,0.9,3,0",  # person 0 again, with another box
        "v,2,0.5,0.5,0.9,0.9,3,0",  # another keyframe: people may move
    ]))
    annotations, problems = ava.read_ava_csv(path, actions=5)
    assert [(p.row, p.field) for p in problems] == [(2, None), (3, "person_id")]
    assert "duplicate of row 1" in problems[0].reason
    assert "row 1" in problems[1].reason
    np.testing.assert_allclose(annotations[("v", 1)].boxes, [[0.1, 0.1, 0.4, 0.4]])
    np.testing.assert_allclose(annotations[("v", 2)].boxes, [[0.5, 0.5, 0.9, 0.9]])


def test_excluded_timestamps_drop_keyframes(tmp_path):
    path = write(tmp_path, "v,1,0.1,0.1,0.4,0.4,2,0\nv,2,0.1,0.1,0.4,0.4,2,0\nw,1,0.1,0.1,0.4,0.4,2,0\n")
    excluded = write(tmp_path, "v,0002\nw,x\nbad\n", "excluded.csv")
    annotations, problems = ava.read_ava_csv(path, actions=5, excluded_path=excluded)
    assert list(annotations) == [("v", 1), ("w", 1)]
    assert [(p.path, p.row, p.field) for p in problems] == [(excluded, 2, "timestamp"),
                                                             (excluded, 3, None)]
    assert ava.read_excluded_timestamps(write(tmp_path, "", "none.csv")) == (set(), [])


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        ava.read_ava_csv(str(tmp_path / "missing.csv"))
    with pytest.raises(BadInputError, match="empty.csv: empty file"):
        ava.read_ava_csv(write(tmp_path, "", "empty.csv"))
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"v,1,0.1,0.1,0.4,0.4,2,0\n\xff\xfe\x00garbage\nv,1,0.1,0.1,0.4,0.4,3,0\n")
    annotations, problems = ava.read_ava_csv(str(binary), actions=5)
    assert [(p.row, p.reason) for p in problems] == [(2, "not UTF-8 text")]
    np.testing.assert_array_equal(annotations[("v", 1)].actions, [[0, 1, 1, 0, 0]])


def sample(name):
    path = os.path.join(SAMPLE, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not present (real data lives in ../shared/data)")
    return path


def test_real_ava_rows():
    path = sample("ava_sample.csv")
    annotations, problems = ava.read_ava_csv(path, actions=80)
    assert problems == []
    assert list(annotations) == [("0f39OWEqJ24", 902), ("0f39OWEqJ24", 903), ("_-Z6wFjXtGQ", 902)]
    kf = annotations[("0f39OWEqJ24", 902)]
    np.testing.assert_allclose(kf.boxes, [[0.031, 0.162, 0.670, 0.995]], rtol=1e-6)
    assert np.flatnonzero(kf.actions[0]).tolist() == [11, 16, 78]  # ids 12, 17, 79
    np.testing.assert_array_equal(kf.person_ids, [0])
    assert np.flatnonzero(annotations[("_-Z6wFjXtGQ", 902)].actions[0]).tolist() == [11, 73, 79]

    excluded, problems = ava.read_excluded_timestamps(sample("ava_excluded_timestamps_sample.csv"))
    assert excluded == {("0f39OWEqJ24", 903), ("_-Z6wFjXtGQ", 902)} and problems == []
    annotations, problems = ava.read_ava_csv(
        path, excluded_path=sample("ava_excluded_timestamps_sample.csv"))
    assert list(annotations) == [("0f39OWEqJ24", 902)] and problems == []
    # Fewer classes than the file uses: rows with ids 74, 79, 80 are reported, the rest kept.
    annotations, problems = ava.read_ava_csv(path, actions=60)
    assert [p.row for p in problems] == [3, 7, 8]
    assert all(p.field == "action_id" for p in problems)


def test_real_multisports_rows():
    annotations, problems = ava.read_ava_csv(sample("multisports_sample.csv"), actions=66)
    assert problems == []
    assert len(annotations) == 9  # one person per frame
    kf = annotations[("aerobic_gymnastics/v_yaKOumdXwbU_c019.mp4", 443)]
    np.testing.assert_allclose(kf.boxes, [[0.109, 0.669, 0.345, 0.768]], rtol=1e-6)
    assert np.flatnonzero(kf.actions[0]).tolist() == [0]
    assert all(k.actions.shape == (1, 66) for k in annotations.values())
