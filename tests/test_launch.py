"""launch.py as a user runs it, in real subprocesses: one-line errors that create nothing, Ctrl-C
that saves and resumes, eval and predict that need nothing but the workdir."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxact.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch.py")
CLASSES = ("dark", "mid", "bright")


def launch(*args, timeout=300):
    return subprocess.run([sys.executable, LAUNCH, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def console_lines(stderr: str) -> list[str]:
    """What a person sees: progress-bar redraws collapse into their last state."""
    return [line.split("\r")[-1] for line in stderr.splitlines() if line.split("\r")[-1].strip()]


@pytest.mark.parametrize("args, message", [
    (["--config=configs/maneuvers_memory.py:smoke", "--config.memory.distnce=2"],
     r"--config.memory.distnce: the config has no field 'distnce' \(did you mean \"distance\""),
    (["--config=configs/no_such_config.py"], r"--config=configs/no_such_config.py: no such file"),
    (["--config=configs/maneuvers_memory.py:split=2"], r"unknown config variant 'split'"),
    (["--config=configs/maneuvers_memory.py:smoke", "--config.memory.distance=cosinus"],
     r"memory.distance='cosinus'"),
    (["--mode=eval"], r"no config.json there, so no run to eval; train first"),
    (["--mode=predict", "--video=clip.npy"], r"no config.json there"),
])
def test_user_mistakes_print_one_line_and_create_nothing(tmp_path, args, message):
    workdir = tmp_path / "run"
    out = launch(f"--workdir={workdir}", *args)
    assert out.returncode != 0
    lines = console_lines(out.stderr)
    assert len(lines) <= 2 and lines[-1].startswith("error: "), out.stderr[-3000:]
    assert re.search(message, lines[-1]), lines[-1]
    assert "Traceback" not in out.stderr
    assert not workdir.exists()


# ----------------------------------------------------------------------------- a run on clip files


def write_clips(root, split: str, count: int, seed: int) -> str:
    """`count` uint8 clips `[10, 24, 24, 3]` whose brightness gives the class; returns the list."""
    rng = np.random.default_rng(seed)
    rows = ["path,label"]
    for i in range(count):
        k = i % len(CLASSES)
        frames = np.clip(rng.normal(40 + 80 * k, 12, size=(10, 24, 24, 3)), 0, 255)
        name = f"{split}_{i}_{CLASSES[k]}.npy"
        np.save(root / name, frames.astype(np.uint8))
        rows.append(f"{name},{CLASSES[k]}")
    (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return str(root / f"{split}.csv")


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A video_files run stopped by Ctrl-C inside its memory phase, then the same command
    rerun to the end: (command, workdir, first run, saved step, rerun, clip folder)."""
    clips = tmp_path_factory.mktemp("clips")
    train, test = write_clips(clips, "train", 24, 0), write_clips(clips, "test", 6, 1)
    workdir = str(tmp_path_factory.mktemp("run"))
    command = [sys.executable, LAUNCH, "--config=configs/video_files_memory.py:smoke",
               f"--workdir={workdir}", f"--config.data.train_list={train}",
               f"--config.data.test_list={test}", "--config.train.num_steps=60",
               "--config.memory.aux_steps=6", "--config.train.log_every=1",
               "--config.train.checkpoint_every=100", "--config.memory.init_batches=3",
               "--config.eval.observation_ratios=(1.0,)"]
    metrics = os.path.join(workdir, "metrics.jsonl")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while not (os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 9):  # memory phase
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    first = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    saved = checkpoint.manager(os.path.join(workdir, "checkpoints", "memory")).latest_step()
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return command, workdir, first, saved, rerun, clips


def test_first_ctrl_c_saves_and_exits_and_the_rerun_resumes(interrupted_run):
    _, workdir, first, saved, rerun, _ = interrupted_run
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Ctrl-C: saving at the end of this step" in first.stderr
    assert f"[memory] stopped at step {saved}: checkpoint saved" in first.stderr
    assert "Traceback" not in first.stderr and 6 < saved < 60  # inside the memory phase
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        memory_steps = [r["step"] for r in map(json.loads, f) if r["phase"] == "memory"]
    # The rerun went on from the saved step: no memory step was trained twice after it.
    assert memory_steps[-1] == 60 and memory_steps.count(saved + 1) == 1
    assert os.path.exists(os.path.join(workdir, "results.json"))


def test_console_is_short_and_the_log_is_whole(interrupted_run):
    _, workdir, _, _, rerun, _ = interrupted_run
    lines = console_lines(rerun.stderr)
    assert len(lines) < 40, "\n".join(lines)
    assert lines[0].startswith("jaxact train: memory_classifier (video_files_memory:smoke)")
    assert any(line.startswith("test top-1: memory") for line in lines)
    assert not any("orbax" in line or line.startswith("I1") for line in lines)  # no chatter
    with open(os.path.join(workdir, "launch.INFO")) as f:
        log = f.read()
    assert "[memory] step 60/60" in log and "test top-1: memory" in log


def test_eval_needs_no_data_flags_and_notes_overrides(interrupted_run):
    _, workdir, _, _, _, _ = interrupted_run
    with open(os.path.join(workdir, "results.json")) as f:
        trained = json.load(f)
    out = launch(f"--workdir={workdir}", "--mode=eval")
    assert out.returncode == 0, out.stderr[-3000:]
    with open(os.path.join(workdir, "results.json")) as f:
        again = json.load(f)
    assert again["top1"] == trained["top1"] and again["num_examples"] == 6
    # Overrides need no --config: the run's own config file defines the flags.
    out = launch(f"--workdir={workdir}", "--mode=eval", "--config.eval.flip_view=False")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "override: eval.flip_view: True -> False" in out.stderr
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["eval_views"] == 3


def test_predict_a_folder_writes_an_answer_per_clip(interrupted_run, tmp_path):
    _, workdir, _, _, _, clips = interrupted_run
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name in ("test_0_dark.npy", "test_2_bright.npy"):
        (folder / name).write_bytes((clips / name).read_bytes())
    (folder / "broken.npy").write_bytes(b"not an array")
    (folder / "notes.txt").write_text("not a clip")
    out_dir = tmp_path / "answers"
    out = launch(f"--workdir={workdir}", "--mode=predict", f"--video={folder}",
                 f"--output_dir={out_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(os.listdir(out_dir)) == ["broken.json", "test_0_dark.json",
                                           "test_2_bright.json"]
    assert "answers for 2 of 3 clips" in out.stderr and "broken.npy" in out.stderr
    answer = json.loads((out_dir / "test_0_dark.json").read_text())
    assert answer["class"] in CLASSES and answer["baseline"]["class"] in CLASSES
    assert set(answer["votes"]) <= set(CLASSES) and sum(answer["votes"].values()) > 0
    assert set(answer["domain"]) == {"nearest_reference_distance", "bank_threshold",
                                     "ood_score", "out_of_domain"}
    assert "error" in json.loads((out_dir / "broken.json").read_text())


def test_predict_inputs_that_hold_no_clip_fail_in_one_line(interrupted_run, tmp_path):
    _, workdir, _, _, _, _ = interrupted_run
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a clip")
    (tmp_path / "list.csv").write_text("path\n# nothing listed\n")
    for video, message in [(tmp_path / "empty", "no clips"), (tmp_path / "list.csv", "lists no clips")]:
        out = launch(f"--workdir={workdir}", "--mode=predict", f"--video={video}",
                     f"--output_dir={tmp_path / 'answers'}")
        lines = console_lines(out.stderr)
        assert out.returncode == 1 and lines[-1].startswith("error: "), out.stderr[-3000:]
        assert str(video) in lines[-1] and message in lines[-1]
        assert not (tmp_path / "answers").exists()


def test_overrides_without_config_use_the_runs_config_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config_name": "classroom_detector:lessons"}))
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"config_name": "no_such_config"}))
    cases = [[f"--workdir={run}", "--mode=eval", "--config.eval.split=validation"],
             [f"--workdir={run}", "--mode=eval"],
             [f"--workdir={run}", "--config=configs/x.py", "--config.eval.split=validation"],
             [f"--workdir={other}", "--config.eval.split=validation"],
             [f"--workdir={tmp_path}", "--config.eval.split=validation"]]
    code = ("import json, sys, launch; "
            "print(json.dumps([launch.with_run_config(['launch.py', *a]) for a in json.loads("
            "sys.argv[1])]))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True,
                          text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    config = os.path.join(root, "configs", "classroom_detector.py")
    assert got[0] == ["launch.py", f"--config={config}:lessons", *cases[0]]
    for case, argv in zip(cases[1:], got[1:], strict=True):
        assert argv == ["launch.py", *case]  # nothing to add, or nothing it could add
