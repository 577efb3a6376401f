"""A corpus of bad inputs and faults, as a careful user meets them on the command line: each case asserts the exact
outcome (exit status, the one line's key words, and that nothing already written was lost).

Groups: datasets, checkpoints, command line, faults (kills, interrupts), disk (unwritable and full outputs, modes).
Commands run in-process through `dst.cli.main` (fast); the kill cases run `dst` as a real process."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dst.cli import main
from dst.data import fixtures as F
from dst.models.checkpoint import save_checkpoint
from dst.models.zoo import build_model

DST = str(Path(sys.executable).parent / "dst")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
pytestmark = pytest.mark.filterwarnings("ignore:tracker .* randomly initialised")


def dst(capsys, *argv):
    """`dst ARGV` in-process: (exit status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    o = capsys.readouterr()
    return rc, o.out, o.err


def one_error(err: str, cmd: str, *words):
    """stderr is exactly one line `dst CMD: error: ...` holding every one of `words`."""
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dst {cmd}: error: "), lines[0]
    for w in words:
        assert str(w) in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def dtb(tmp_path):
    """A tiny DTB70 copy: Animal1 and Animal2, 6 frames of 32x24 each, boxes 10x8 inside the frame."""
    return F.make_tiny_dtb70(tmp_path / "DTB70", names=("Animal1", "Animal2"), n=6)


def track(capsys, root, out, *extra, model="static", seqs=("Animal1", "Animal2")):
    return dst(capsys, "track", "--model", model, "--dataset", "dtb70", "--root", root, "--out", out,
               "--sequences", *seqs, "--quiet", *extra)


def files(d: Path) -> dict:
    """Every file under `d` with its bytes (to show that nothing was lost or changed)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A good tiny checkpoint and its broken variants."""
    d = tmp_path_factory.mktemp("ckpt")
    good = save_checkpoint(d / "good.pt", build_model("siamfc@0.25"))
    ck = torch.load(good, weights_only=True)
    raw = good.read_bytes()
    (d / "cut.pt").write_bytes(raw[:30000])                     # a copy stopped early (inside the zip's data)
    (d / "empty.pt").write_bytes(b"")
    (d / "text.pt").write_text("these are not weights")
    torch.save(dict(ck, state_dict={k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                    for k, v in ck["state_dict"].items()}), d / "nan.pt")
    torch.save(dict(ck, arch="my_net"), d / "strarch.pt")
    torch.save(dict(ck, arch="siamfc@0.25"), d / "namedarch.pt")
    torch.save(ck["state_dict"], d / "bare.pt")
    torch.save(dict(ck, state_dict=build_model("siamfc@0.5").state_dict()), d / "shapes.pt")
    import argparse
    torch.save({"net": ck["state_dict"], "args": argparse.Namespace(lr=0.1)}, d / "pickled.pt")
    return d


# ================================================================ datasets

def test_truncated_jpeg_is_refused_by_track(capsys, dtb, tmp_path):
    f = dtb / "Animal2/img/00003.jpg"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 2
    one_error(err, "track", str(f), "truncated image", "no JPEG end-of-image marker", "download or extract it again")
    assert (tmp_path / "res/DTB70/static/Animal1.txt").is_file()           # the sequence before it is kept
    assert not (tmp_path / "res/DTB70/static/Animal2.txt").exists()


def test_truncated_jpeg_is_a_problem_for_verify_decode_all(capsys, dtb):
    f = dtb / "Animal1/img/00004.jpg"
    f.write_bytes(f.read_bytes()[:-40])
    rc, out, err = dst(capsys, "data", "verify", "dtb70", "--root", dtb, "--sequences", "Animal1,Animal2", "--decode", "all")
    assert rc == 1
    assert f"FAIL Animal1: 1 frame(s) truncated (first: {f}: truncated image" in out
    assert "ok   Animal2: 6 frames" in out and "PROBLEMS FOUND" in out


def test_truncated_png_is_refused(tmp_path):
    import cv2
    from dst.core import DSTError
    from dst.data.sequences import read_image
    p = tmp_path / "f.png"
    cv2.imwrite(str(p), np.zeros((20, 20, 3), np.uint8))
    p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(DSTError, match="truncated image .* no PNG IEND chunk"):
        read_image(p)


def test_first_box_outside_the_image_is_refused_by_track(capsys, dtb, tmp_path):
    gt = dtb / "Animal1/groundtruth_rect.txt"
    gt.write_text("400,300,10,8\n" + "".join(gt.read_text().splitlines(keepends=True)[1:]))
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 2
    one_error(err, "track", "sequence 'Animal1', frame 1", "lies outside the 32x24 image", str(gt))


def test_boxes_outside_the_image_are_a_problem_for_verify(capsys, dtb):
    gt = dtb / "Animal2/groundtruth_rect.txt"
    rows = gt.read_text().splitlines()
    gt.write_text("\n".join(rows[:3] + ["-50,-50,10,8"] + rows[4:]) + "\n")
    rc, out, err = dst(capsys, "data", "verify", "dtb70", "--root", dtb, "--sequences", "Animal1", "Animal2")
    assert rc == 1
    assert "FAIL Animal2: 1 box(es) lie entirely outside the 32x24 image (first: frame 4, x,y,w,h [-51.0, -51.0, 10.0, 8.0]" in out


def test_a_box_of_1e200_names_the_file_and_line(capsys, dtb, tmp_path):
    gt = dtb / "Animal2/groundtruth_rect.txt"
    rows = gt.read_text().splitlines()
    gt.write_text("\n".join(rows[:1] + ["4,5,1e200,8"] + rows[2:]) + "\n")
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 2
    one_error(err, "track", f"{gt}:2", "is far beyond any image", "expected x,y,w,h in pixels")


@pytest.mark.parametrize("row, words", [
    ("4,5,10", [":3: 3 values, expected 4"]),
    ("4,5,ten,8", [":3: 'ten' is not a number"]),
    ("4,5,-10,8", [":3: negative width or height"]),
    ("4,nan,10,8", [":3: NaN or infinite value"]),
])
def test_malformed_annotation_rows_are_named_by_file_and_line(capsys, dtb, tmp_path, row, words):
    gt = dtb / "Animal1/groundtruth_rect.txt"
    rows = gt.read_text().splitlines()
    gt.write_text("\n".join(rows[:2] + [row] + rows[3:]) + "\n")
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 2
    one_error(err, "track", str(gt), *words)


def test_annotation_with_a_byte_order_mark_and_crlf_is_read(capsys, dtb, tmp_path):
    gt = dtb / "Animal1/groundtruth_rect.txt"
    gt.write_bytes(b"\xef\xbb\xbf" + gt.read_text().replace("\n", "\r\n").encode())   # as a Windows editor saves it
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 0 and "2 sequences tracked" in out
    assert (tmp_path / "res/DTB70/static/Animal1.txt").read_text().splitlines()[0] == "3.0000,4.0000,10.0000,8.0000"   # its first row, 1-based as read


def test_fewer_rows_than_frames(capsys, dtb, tmp_path):
    gt = dtb / "Animal1/groundtruth_rect.txt"
    gt.write_text("".join(gt.read_text().splitlines(keepends=True)[:4]))
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 2
    one_error(err, "track", str(gt), "4 annotation rows but", "holds 6 frames")


def test_empty_annotation_file(capsys, dtb, tmp_path):
    gt = dtb / "Animal2/groundtruth_rect.txt"
    gt.write_text("\n")
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 2
    one_error(err, "track", str(gt), "annotation file is empty")


def test_missing_frame(capsys, dtb, tmp_path):
    f = dtb / "Animal1/img/00002.jpg"
    f.unlink()
    (dtb / "Animal1/img/00007.jpg").write_bytes((dtb / "Animal1/img/00001.jpg").read_bytes())  # same count, a gap
    rc, out, err = track(capsys, dtb, tmp_path / "res", seqs=("Animal1",))
    assert rc == 0                                        # the folder's frames are what the sequence is: 6 frames, tracked
    rc, out, err = dst(capsys, "data", "verify", "dtb70", "--root", dtb, "--sequences", "Animal1", "--decode", "all")
    assert rc == 0


def test_garbage_frame(capsys, dtb, tmp_path):
    f = dtb / "Animal2/img/00005.jpg"
    f.write_bytes(b"<html>404 not found</html>")
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 2
    one_error(err, "track", str(f), "cannot decode the image")


def test_missing_dataset_root(capsys, tmp_path):
    rc, out, err = track(capsys, tmp_path / "nowhere", tmp_path / "res")
    assert rc == 2
    one_error(err, "track", str(tmp_path / "nowhere"), "dataset root folder is missing")


def test_unknown_sequence_name(capsys, dtb, tmp_path):
    rc, out, err = track(capsys, dtb, tmp_path / "res", seqs=("Animal1", "Aminal2"))
    assert rc == 2
    one_error(err, "track", "unknown sequence(s) ['Aminal2']")


def test_partial_copy_points_at_the_command_line_flag(capsys, dtb, tmp_path):
    rc, out, err = dst(capsys, "track", "--model", "static", "--dataset", "dtb70", "--root", dtb, "--out", tmp_path / "r", "--quiet")
    assert rc == 2
    line = one_error(err, "track", "68 of 70 sequences missing", "--sequences NAME")
    assert line.index("--sequences") < line.index("sequences=[...]")


# ================================================================ checkpoints

@pytest.mark.parametrize("name, words", [
    ("nan.pt", ["weight tensor(s) hold NaN or inf", "first: backbone.layers.0.conv.weight", "expected finite numbers"]),
    ("cut.pt", ["is truncated or corrupt", "zip archive without its end (30000 bytes)", "copy it again"]),
    ("empty.pt", ["is empty (0 bytes)"]),
    ("text.pt", ["is not a PyTorch file"]),
    ("strarch.pt", ["its 'arch' is the string 'my_net', expected an architecture spec"]),
    ("bare.pt", ["holds a bare state_dict"]),
    ("shapes.pt", ["does not fit the", "first shape mismatch"]),
    ("pickled.pt", ["holds pickled Python objects", "argparse.Namespace"]),
])
def test_broken_checkpoints_are_refused_before_tracking(capsys, dtb, tmp_path, ckpts, name, words):
    rc, out, err = track(capsys, dtb, tmp_path / "res", model=ckpts / name)
    assert rc == 2
    one_error(err, "track", name, *words)
    assert not (tmp_path / "res").exists()                 # refused before anything is written


def test_arch_given_as_a_registered_name_is_rebuilt(capsys, dtb, tmp_path, ckpts):
    rc, out, err = track(capsys, dtb, tmp_path / "res", model=ckpts / "namedarch.pt")
    assert rc == 0 and "namedarch on DTB70: 2 sequences tracked" in out
    assert "confidence" in out.splitlines()[1] and "reports no score" not in out    # a Siamese tracker has scores


def test_a_baseline_without_scores_says_it_cannot_tell(capsys, dtb, tmp_path):
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 0 and "confidence: static reports no score, so a lost target cannot be detected" in out


def test_missing_checkpoint_and_a_folder_as_checkpoint(capsys, dtb, tmp_path):
    rc, out, err = track(capsys, dtb, tmp_path / "res", model=tmp_path / "nothere.pt")
    assert rc == 2
    one_error(err, "track", "--model", "nothere.pt': no such checkpoint file")
    (tmp_path / "dir.pt").mkdir()
    rc, out, err = track(capsys, dtb, tmp_path / "res", model=tmp_path / "dir.pt")
    assert rc == 2
    one_error(err, "track", "dir.pt' is a folder, expected a checkpoint file")


# ================================================================ command line

@pytest.mark.parametrize("hp, words", [
    ("scale_num=abc", ["--hp scale_num='abc' is text, expected an integer like its default scale_num=3"]),
    ("scale_num=2.5", ["--hp scale_num=2.5 is a number, expected an integer"]),
    ("window_influence=nan", ["--hp window_influence=nan is not finite"]),
    ("windw_influence=0.2", ["unknown hyper-parameter(s) ['windw_influence']"]),
    ("window_influence", ["hyper-parameter 'window_influence': expected NAME=VALUE"]),
])
def test_bad_tracker_settings(capsys, dtb, tmp_path, hp, words):
    rc, out, err = track(capsys, dtb, tmp_path / "res", "--hp", hp, model="siamfc@0.25")
    assert rc == 2
    one_error(err, "track", *words)


def test_hp_given_to_a_baseline_is_an_error(capsys, dtb, tmp_path):
    rc, out, err = track(capsys, dtb, tmp_path / "res", "--hp", "lr=0.3")
    assert rc == 2
    one_error(err, "track", "--hp lr=0.3", "the static baseline has no settings")
    assert not (tmp_path / "res").exists()


def test_train_resume_with_overwrite_is_an_error(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/keep.txt").write_text("x")
    rc, out, err = dst(capsys, "train", "--students", "siamfc@0.1", "--out", tmp_path / "run", "--resume", "--overwrite")
    assert rc == 2
    one_error(err, "train", "--resume and --overwrite contradict each other")
    assert files(tmp_path / "run") == {"keep.txt": b"x"}


def test_unknown_dataset_and_the_aliases(capsys, fixtures, tmp_path):
    rc, out, err = dst(capsys, "track", "--model", "static", "--dataset", "kitti", "--root", fixtures / "otb", "--out", tmp_path)
    assert rc == 2
    one_error(err, "track", "unknown dataset 'kitti'", "otb=otb100")
    runs = {}
    for name, seqs in (("otb", ["Crossing,Football1"]), ("OTB100", ["Crossing", "Football1"])):
        rc, out, err = dst(capsys, "track", "--model", "static", "--dataset", name, "--root", fixtures / "otb",
                           "--out", tmp_path / name, "--sequences", *seqs, "--quiet")
        assert rc == 0, err
        runs[name] = files(tmp_path / name / "OTB100/static")
    drop = lambda d: {k: v for k, v in d.items() if not k.endswith("_time.txt")}
    assert drop(runs["otb"]) == drop(runs["OTB100"]) and "Crossing.txt" in runs["otb"]
    for name in ("otb", "otb100"):                          # eval takes the same spellings, --sequences spaced or with commas
        rc, out, err = dst(capsys, "eval", "--dataset", name, "--root", fixtures / "otb", "--results", tmp_path / "otb/OTB100/static",
                           "--sequences", "Crossing", "Football1")
        assert rc == 0 and "static on otb100 (2 sequences, otb protocol)" in out
    rc, out, err = dst(capsys, "data", "verify", "otb", "--root", fixtures / "otb", "--sequences", "Crossing", "Football1")
    assert rc == 0


def test_workers_zero_and_a_bad_precision(capsys, dtb, tmp_path):
    rc, out, err = track(capsys, dtb, tmp_path / "res", "--workers", "0")
    assert rc == 2
    one_error(err, "track", "--workers 0: expected 1 or more processes")
    with pytest.raises(SystemExit) as e:                  # argparse: usage and exit status 2
        track(capsys, dtb, tmp_path / "res", "--precision", "fp16")
    assert e.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


def test_results_of_another_model_are_never_kept_silently(capsys, dtb, tmp_path, ckpts):
    res = tmp_path / "res"
    (tmp_path / "a").mkdir(); (tmp_path / "b").mkdir()
    a, b = tmp_path / "a/s0.pt", tmp_path / "b/s0.pt"         # two students with the same file name
    a.write_bytes((ckpts / "good.pt").read_bytes())
    save_checkpoint(b, build_model("siamfc@0.25"))
    assert track(capsys, dtb, res, model=a)[0] == 0
    before = files(res / "DTB70/s0")
    rc, out, err = track(capsys, dtb, res, model=b)
    assert rc == 2
    one_error(err, "track", "holds results of another model", str(a), "another --name or --out", "--overwrite")
    assert files(res / "DTB70/s0") == before                  # the first model's results are untouched
    rc, out, err = track(capsys, dtb, res, "--name", "s0_b", model=b)
    assert rc == 0 and "2 sequences tracked" in out
    rc, out, err = track(capsys, dtb, res, "--overwrite", model=b)
    assert rc == 0 and "2 sequences tracked, 0 already done" in out
    assert json.loads((res / "DTB70/s0/tracker.json").read_text())["model"] == str(b)


def test_eval_of_a_missing_results_folder(capsys, dtb, tmp_path):
    rc, out, err = dst(capsys, "eval", "--dataset", "dtb70", "--root", dtb, "--results", tmp_path / "nope")
    assert rc == 2
    one_error(err, "eval", "results folder is missing")


def test_eval_of_the_out_folder_instead_of_the_tracker_folder(capsys, dtb, tmp_path):
    assert track(capsys, dtb, tmp_path / "res")[0] == 0
    rc, out, err = dst(capsys, "eval", "--dataset", "dtb70", "--root", dtb, "--results", tmp_path / "res", "--sequences", "Animal1,Animal2")
    assert rc == 2
    one_error(err, "eval", "results file is missing, as are those of all 2 sequence(s)", "OUT/BENCHMARK/TRACKER", "this folder holds DTB70")
    (tmp_path / "r.txt").write_text("x")
    rc, out, err = dst(capsys, "eval", "--dataset", "dtb70", "--root", dtb, "--results", tmp_path / "r.txt", "--sequences", "Animal1")
    assert rc == 2
    one_error(err, "eval", "r.txt' is a file, expected the tracker's results folder")


def test_a_name_that_is_a_path_is_refused(capsys, dtb, tmp_path):
    rc, out, err = track(capsys, dtb, tmp_path / "res", "--name", "../../elsewhere")
    assert rc == 2
    one_error(err, "track", "--name '../../elsewhere': expected a plain folder name")
    assert not (tmp_path / "res").exists()


# ================================================================ faults

def _children(pid: int) -> list:
    """Pids of the live (not zombie) processes whose parent is `pid`."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return ""


def _workers(pid: int) -> tuple:
    """(worker pids, helper pids) of a `dst track --workers N` process: forked by multiprocessing's fork server, or spawned."""
    workers, helpers = [], []
    for k in _children(pid):
        if "forkserver" in _cmdline(k):
            helpers.append(k); workers += _children(k)
        elif "spawn_main" in _cmdline(k):
            workers.append(k)
    return workers, helpers


def _start_parallel_track(fixtures, out):
    p = subprocess.Popen([DST, "track", "--model", "siamfc", "--dataset", "otb", "--root", str(fixtures / "otb"),   # the full teacher: seconds of work
                          "--out", str(out), "--sequences", "Crossing", "Football1", "--workers", "2", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # as from a terminal, even when
    t0 = time.time()                                          # the test itself runs as a background job (SIGINT ignored)
    while time.time() - t0 < 90:                              # until both workers are up (they import torch)
        kids, helpers = _workers(p.pid)
        if len(kids) == 2 and (out / "OTB100/siamfc/tracker.json").is_file():
            return p, kids + helpers
        time.sleep(0.2)
    p.kill()
    pytest.fail("the workers did not start in 90 s")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_killing_the_parent_ends_the_workers(fixtures, tmp_path):
    p, kids = _start_parallel_track(fixtures, tmp_path / "res")
    time.sleep(1.0)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    t0 = time.time()
    while any(_alive(k) for k in kids) and time.time() - t0 < 15:
        time.sleep(0.2)
    assert not any(_alive(k) for k in kids), "a worker outlived its killed parent"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_worker_that_dies_ends_the_run_with_one_line(fixtures, tmp_path):
    p, kids = _start_parallel_track(fixtures, tmp_path / "res")
    time.sleep(1.0)
    os.kill(kids[0], signal.SIGKILL)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2
    lines = [l for l in err.splitlines() if l.startswith("dst track:")]
    assert lines == ["dst track: error: a tracking worker process died (killed, or out of memory); the sequences finished "
                     "before are kept: rerun the same command to resume (fewer --workers if memory ran out)"]
    time.sleep(0.5)
    assert not _alive(kids[1])
    assert not list((tmp_path / "res").rglob("*.tmp"))        # no half-written file


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_ctrl_c_on_a_parallel_run_ends_it_and_its_workers(fixtures, tmp_path):
    p, kids = _start_parallel_track(fixtures, tmp_path / "res")
    time.sleep(2.0)                                            # mid-tracking: the full teacher needs tens of seconds here
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert err.strip().splitlines()[-1] == "dst track: interrupted; files written before are intact, rerun the same command to resume"
    time.sleep(1.5)
    assert not any(_alive(k) for k in kids[:2])


def test_interrupt_keeps_finished_sequences_and_resumes(capsys, dtb, tmp_path, monkeypatch):
    from dst.track import runners
    real, calls = runners.track_ope, []
    def interrupted(tracker, seq, **kw):
        calls.append(seq.name)
        if len(calls) == 2: raise KeyboardInterrupt
        return real(tracker, seq, **kw)
    monkeypatch.setattr(runners, "track_ope", interrupted)
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 130 and err.strip() == "dst track: interrupted; files written before are intact, rerun the same command to resume"
    monkeypatch.setattr(runners, "track_ope", real)
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 0 and "1 sequences tracked, 1 already done" in out


def test_a_half_written_result_is_tracked_again(capsys, dtb, tmp_path):
    assert track(capsys, dtb, tmp_path / "res")[0] == 0
    f = tmp_path / "res/DTB70/static/Animal2.txt"
    f.write_text(f.read_text()[:25])                           # a results file cut by a crash outside dst's atomic writes
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 0 and "1 sequences tracked, 1 already done" in out
    assert len(f.read_text().splitlines()) == 6


def test_corrupt_model_record_is_refused(capsys, dtb, tmp_path):
    assert track(capsys, dtb, tmp_path / "res")[0] == 0
    (tmp_path / "res/DTB70/static/tracker.json").write_text("{not json")
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 2
    one_error(err, "track", "holds results of another model")


# ================================================================ disk

def test_out_is_a_file(capsys, dtb, tmp_path):
    (tmp_path / "res").write_text("not a folder")
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 2
    one_error(err, "track", f"{tmp_path / 'res'} is a file, expected a folder")
    assert (tmp_path / "res").read_text() == "not a folder"


def test_out_under_a_file(capsys, dtb, tmp_path):
    (tmp_path / "f").write_text("x")
    rc, out, err = track(capsys, dtb, tmp_path / "f/res")
    assert rc == 2
    one_error(err, "track", f"{tmp_path / 'f'} is a file, expected a folder")


def test_a_folder_where_a_result_goes(capsys, dtb, tmp_path, monkeypatch):
    (tmp_path / "res/DTB70/static/Animal2.txt").mkdir(parents=True)
    from dst.track import runners
    seen = []
    monkeypatch.setattr(runners, "track_ope", lambda *a, **k: seen.append(1))   # must not be reached
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 2 and not seen
    one_error(err, "track", "Animal2.txt is a folder where the results file of 'Animal2' goes")


def test_full_disk_keeps_finished_sequences(capsys, dtb, tmp_path, monkeypatch):
    from dst.data import boxfiles
    real = boxfiles.atomic_write
    def full(path, *a, **k):
        if Path(path).name == "Animal2.txt":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *a, **k)
    monkeypatch.setattr(boxfiles, "atomic_write", full)
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 2
    one_error(err, "track", "No space left on device", "Animal2.txt", "the 1 sequence(s) finished before are kept", "resume")
    assert len((tmp_path / "res/DTB70/static/Animal1.txt").read_text().splitlines()) == 6
    monkeypatch.setattr(boxfiles, "atomic_write", real)
    rc, out, err = track(capsys, dtb, tmp_path / "res")
    assert rc == 0 and "1 sequences tracked, 1 already done" in out


def test_any_os_error_is_one_line(capsys, monkeypatch):
    from dst.data import verify
    def boom(args): raise IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp/x.json")
    monkeypatch.setattr(verify, "_cli_manifests", boom)       # add_cli looks it up when the parser is built
    rc, out, err = dst(capsys, "data", "manifests")
    assert rc == 2
    one_error(err, "data", "/tmp/x.json: it is a folder, expected a file (Is a directory)", "files written before are intact")


@pytest.mark.parametrize("argv", [["data", "synth"], ["select", "--scale", "smoke"], ["export-onnx", "--model", "siamfc@0.1"]])
def test_every_out_folder_is_checked_before_the_command_runs(capsys, tmp_path, argv):
    (tmp_path / "f").write_text("x")
    rc, out, err = dst(capsys, *argv, "--out", tmp_path / "f/sub")
    assert rc == 2 and out == ""
    one_error(err, argv[0], f"--out '{tmp_path / 'f/sub'}': {tmp_path / 'f'} is a file, expected a folder")


def test_train_out_is_a_file_before_any_work(capsys, tmp_path):
    (tmp_path / "run").write_text("x")
    rc, out, err = dst(capsys, "train", "--students", "siamfc@0.1", "--data", f"synth:{tmp_path}", "--out", tmp_path / "run/sub")
    assert rc == 2
    one_error(err, "train", f"{tmp_path / 'run'} is a file, expected a folder")


@pytest.mark.parametrize("where, words", [("folder", ["is a folder, expected a JSON file name"]),
                                          ("under_file", ["is a file, expected a folder"])])
def test_eval_save_is_checked_before_scoring(capsys, dtb, tmp_path, where, words):
    assert track(capsys, dtb, tmp_path / "res")[0] == 0
    (tmp_path / "f").write_text("x"); (tmp_path / "d").mkdir()
    save = tmp_path / ("d" if where == "folder" else "f/scores.json")
    rc, out, err = dst(capsys, "eval", "--dataset", "dtb70", "--root", dtb, "--results", tmp_path / "res/DTB70/static",
                       "--sequences", "Animal1,Animal2", "--save", save)
    assert rc == 2
    one_error(err, "eval", *words)


def test_written_files_follow_the_umask(capsys, dtb, tmp_path):
    old = os.umask(0o022)
    try:
        assert track(capsys, dtb, tmp_path / "res")[0] == 0
        save_checkpoint(tmp_path / "m.pt", build_model("siamfc@0.1"))
    finally:
        os.umask(old)
    for p in [*(f for f in (tmp_path / "res/DTB70/static").rglob("*") if f.is_file()), tmp_path / "m.pt"]:
        assert p.stat().st_mode & 0o777 == 0o644, p
