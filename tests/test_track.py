"""Trackers and runners on real frames: OPE on the OTB fixture, VOT's reset protocol on the VOT fixture,
resuming, a target that leaves the image, and clear errors from `dst track`."""
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from dst.core import DSTError
from dst.data.sequences import Sequence
from dst.track.runners import run_benchmark, track_ope, track_vot
from dst.track.trackers import StaticTracker, Tracker, make_tracker

DST = str(Path(sys.executable).parent / "dst")


def _otb_crossing(fixtures, n=10):
    d = fixtures / "otb" / "Crossing"
    rows = [list(map(float, l.replace(",", " ").split())) for l in (d / "groundtruth_rect.txt").read_text().splitlines()]
    boxes = np.array(rows[:n]); boxes[:, :2] -= 1  # OTB is 1-based
    return Sequence("Crossing", sorted((d / "img").glob("*.jpg"))[:n], boxes)


@pytest.mark.parametrize("model", ["siamfc_half", "siamrpn_half", "static", "mil"])
def test_ope_on_a_real_sequence(fixtures, model):
    seq = _otb_crossing(fixtures)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boxes, times = track_ope(make_tracker(model), seq)
    assert boxes.shape == (10, 4) and np.isfinite(boxes).all() and (boxes[:, 2:] > 0).all()
    np.testing.assert_allclose(boxes[0], seq.boxes[0])
    assert (times > 0).all()


class _Jumper(Tracker):
    """Follows the ground truth except on frame `bad`, where it reports a box far away (a failure)."""
    name = "jumper"

    def __init__(self, seq, bad):
        self.seq, self.bad, self.i = seq, bad, 0

    def init(self, image, box):  # the frame is the first at or after the last one whose box this is
        self.i = int(next(i for i in np.flatnonzero((self.seq.boxes == box).all(1)) if i >= self.i))

    def update(self, image):
        self.i += 1
        return (np.array([-500.0, -500, 10, 10]) if self.i == self.bad else self.seq.boxes[self.i]), 1.0


def test_vot_reset_protocol_on_the_real_vot_fixture(fixtures):
    from dst.data.datasets import load_dataset
    seq = load_dataset("vot2019", fixtures / "vot2019", sequences=["bag"])[0]
    seq = Sequence(seq.name, seq.frames[:20], seq.boxes[:20], meta={"polygons": seq.meta["polygons"][:20]})
    traj, times = track_vot(_Jumper(seq, bad=6), seq)
    codes = [t[0] if len(t) == 1 else None for t in traj]
    # init at 0, tracked 1-5, failure at 6, frames 7-10 skipped, re-initialised 5 frames after the failure (11)
    assert codes[0] == 1 and codes[6] == 2 and codes[7:11] == [0, 0, 0, 0] and codes[11] == 1
    assert all(c is None for c in codes[1:6] + codes[12:])


def test_resume_redoes_only_missing_or_broken_sequences(tmp_path, fixtures):
    seqs = [_otb_crossing(fixtures, 6)]
    seqs.append(Sequence("Crossing2", seqs[0].frames, seqs[0].boxes))
    s = run_benchmark("static", seqs, tmp_path, "OTB100", progress=False)
    assert (s["tracked"], s["skipped"]) == (2, 0)
    f = tmp_path / "OTB100" / "static" / "Crossing2.txt"
    f.write_text("\n".join(f.read_text().splitlines()[:3]) + "\n")  # a half-written file from a killed run
    s = run_benchmark("static", seqs, tmp_path, "OTB100", progress=False)
    assert (s["tracked"], s["skipped"]) == (1, 1)
    assert len(f.read_text().splitlines()) == 6


def test_a_target_leaving_the_image_never_crashes(tmp_path):
    frames, boxes = [], []
    for i in range(12):  # a bright square that slides out of the right edge
        img = np.full((120, 160, 3), 60, np.uint8)
        x = 100 + 12 * i
        img[50:80, x:x + 30] = (30, 200, 240)
        cv2.imwrite(str(tmp_path / f"{i:04d}.jpg"), img)
        frames.append(tmp_path / f"{i:04d}.jpg"); boxes.append([x, 50, 30, 30])
    seq = Sequence("exit", frames, boxes)
    for model in ["siamfc_half", "siamrpn_half", "mil"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, _ = track_ope(make_tracker(model), seq)
        cx, cy = out[:, 0] + (out[:, 2] - 1) / 2, out[:, 1] + (out[:, 3] - 1) / 2
        assert np.isfinite(out).all() and (cx >= -1).all() and (cx <= 160).all() and (cy >= -1).all() and (cy <= 120).all()


def test_bad_input_errors():
    with pytest.raises(DSTError, match="unknown hyper-parameter"):
        make_tracker("siamfc_half", {"windw_influence": 0.1})
    with pytest.raises(DSTError, match="positive width and height"):
        StaticTracker().init(np.zeros((10, 10, 3), np.uint8), [0, 0, 0, 5])
    r = subprocess.run([DST, "track", "--model", "static", "--dataset", "kitti", "--root", "."], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown dataset 'kitti'" in r.stderr
    r = subprocess.run([DST, "track", "--model", "nonet", "--dataset", "otb", "--root", "/nonexistent"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_fast_path_records_what_it_did(fixtures):
    """`make_tracker(model, hp, device, name, precision)`; `.precision`; `.last` with the map, the score and the stage times."""
    import torch
    from dst.core import resolve_precision
    seq = _otb_crossing(fixtures, 3)
    for model, extra in (("siamfc_half", "scale_index"), ("siamrpn_half", "index")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tr = make_tracker(model, None, "cpu", None, "fp32")
        assert tr.precision == "fp32"
        w = next(p for p in tr.infer.parameters() if p.dim() == 4)     # what runs: the folded, channels-last copy
        assert w.is_contiguous(memory_format=torch.channels_last)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in tr.infer.modules())
        tr.init(seq.image(0), seq.boxes[0])
        box, score = tr.update(seq.image(1))
        last = tr.last
        assert {"response", "score", "t_crop", "t_net", "t_post", extra} <= set(last)
        assert last["response"].dtype == np.float32 and last["score"] == score
        assert all(last[k] > 0 for k in ("t_crop", "t_net", "t_post"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert make_tracker("siamfc_half").precision == resolve_precision("auto", "cpu")
        with pytest.raises(DSTError, match="--precision 'fp16'"):
            make_tracker("siamfc_half", precision="fp16")


def test_bf16_tracks_close_to_fp32(fixtures):
    """bf16 forward passes (slow on a CPU without native bf16, so a tiny network) give float32 maps and nearly the same box."""
    import torch
    from dst.models.zoo import build_model
    from dst.track.trackers import tracker_for
    seq = _otb_crossing(fixtures, 2)
    out = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(0)
        tr = tracker_for(build_model("siamfc@0.25"), precision=prec)
        tr.init(seq.image(0), seq.boxes[0])
        out[prec] = tr.update(seq.image(1))[0]
        assert tr.precision == prec and tr.last["response"].dtype == np.float32
    assert np.abs(out["fp32"] - out["bf16"]).max() < 8, out
