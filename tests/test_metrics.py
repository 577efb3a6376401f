"""Benchmark metrics end to end: results written in the official layouts, read back, scored through `evaluate` and
`dst eval` on real fixture sequences and tiny copies of LaSOT, GOT-10k and TrackingNet; VOT's reset protocol on
the real rotated ground truth of `bag`; hand-computed cases; and one clear error for each kind of bad results file."""
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from dst.cli import main
from dst.core import DSTError
from dst.eval.cli import evaluate
from dst.eval.metrics import PROTOCOLS, benchmark_metrics, sequence_curves
from dst.data.fixtures import make_tiny_got10k, make_tiny_lasot, make_tiny_trackingnet
from dst.eval.vot import eao_curve, eao_score, vot_metrics
from dst.track.results import read_vot_trajectory, save_sequence, sequence_files, zip_results
from dst.track.supervised import failure_frames, region_overlap, run_supervised

datasets = pytest.importorskip("dst.data.datasets")


def _run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _otb(fixtures):
    return datasets.load_dataset("otb100", fixtures / "otb", sequences=["Crossing", "Football1"])


# ---------------------------------------------------------------- OTB: real sequences, CLI, bad files

def test_otb_oracle_and_shifted_through_the_cli(fixtures, tmp_path):
    seqs = _otb(fixtures)
    assert [len(s) for s in seqs] == [120, 74]  # Football1: 81 images, 74 annotated (OTB scores 1-74)
    for s in seqs:
        save_sequence(tmp_path / "OTB100" / "oracle", s.name, s.boxes, times=np.full(len(s), 0.02), layout="OTB100")
        half = s.boxes.copy()
        half[:, 0] += s.boxes[:, 2] / 2  # half a width to the right: IoU (w/2*h)/(3/2*w*h) = 1/3, centre error w/2
        save_sequence(tmp_path / "OTB100" / "half", s.name, half, layout="OTB100")
    # the files are 1-based like OTB's own ground truth: the first row equals groundtruth_rect.txt's first row
    first = (tmp_path / "OTB100" / "oracle" / "Crossing.txt").read_text().splitlines()[0]
    gt_first = (fixtures / "otb" / "Crossing" / "groundtruth_rect.txt").read_text().splitlines()[0]
    np.testing.assert_allclose([float(v) for v in first.split(",")], [float(v) for v in gt_first.replace(",", " ").split()])

    r = subprocess.run([sys.executable, "-m", "dst", "eval", "--dataset", "otb", "--root", str(fixtures / "otb"),
                        "--results", str(tmp_path / "OTB100" / "oracle"), "--sequences", "Crossing,Football1", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    assert js["protocol"] == "otb" and js["tracker"] == "oracle" and js["n_sequences"] == 2
    assert js["metrics"]["auc"] == pytest.approx(20 / 21) and js["metrics"]["precision"] == 1.0
    assert js["fps"] == pytest.approx(50.0)

    res = evaluate(seqs, tmp_path / "OTB100" / "half")
    # by hand: frame 1 is scored as the GT (IoU 1); every other frame has IoU 1/3: success 1 for t < 1/3 (t = 0..0.30,
    # 7 thresholds), 1/N for 0.35..0.95 (13 thresholds), 0 at 1
    for s in seqs:
        n = len(s)
        assert res["per_sequence"].loc[s.name, "auc"] == pytest.approx((7 + 13 / n) / 21)
        assert res["per_sequence"].loc[s.name, "op50"] == pytest.approx(1 / n)
        ce = s.boxes[1:, 2] / 2  # precision at 20 px: frames whose half-width is at most 20 px, plus frame 1
        assert res["per_sequence"].loc[s.name, "precision"] == pytest.approx((1 + (ce <= 20).sum()) / n)
    assert res["fps"] is None


def test_bad_results_files_give_one_clear_error(fixtures, tmp_path, capsys):
    seqs = _otb(fixtures)
    d = tmp_path / "OTB100" / "bad"
    base = ["eval", "--dataset", "otb100", "--root", str(fixtures / "otb"), "--results", str(d), "--sequences", "Crossing"]
    save_sequence(d, "Crossing", seqs[0].boxes, layout="OTB100")
    f = d / "Crossing.txt"
    lines = f.read_text().splitlines()
    cases = {
        "missing": (None, "Crossing.txt: results file is missing"),
        "rows": ("\n".join(lines[:-1]) + "\n", "119 rows for a sequence of 120 frames"),
        "nan": ("\n".join(lines[:5] + ["nan,1,2,3"] + lines[6:]) + "\n", "Crossing.txt:6: NaN or infinite value"),
        "text": ("\n".join(lines[:7] + ["12,13,oops,4"] + lines[8:]) + "\n", "Crossing.txt:8: 'oops' is not a number"),
        "three": ("\n".join(lines[:2] + ["1,2,3"] + lines[3:]) + "\n", "Crossing.txt:3: 3 values, expected 4"),
    }
    for name, (text, msg) in cases.items():
        if text is None: f.unlink()
        else: f.write_text(text)
        rc, out, err = _run(base, capsys)
        assert rc == 2, name
        assert msg in err and err.count("\n") == 1, (name, err)   # one line, no traceback
    rc, _, err = _run(["eval", "--dataset", "otb100", "--root", str(fixtures / "otb"), "--results", str(tmp_path / "nope")], capsys)
    assert rc == 2 and "results folder is missing" in err


# ---------------------------------------------------------------- LaSOT, GOT-10k, TrackingNet: tiny official layouts

def test_lasot_absent_frames_and_attributes(tmp_path, capsys):
    root = make_tiny_lasot(tmp_path / "lasot")
    seqs = datasets.load_dataset("lasot", root, split="all")
    assert [s.absent.tolist() for s in seqs][0] == [False, False, False, True, True, False]
    d = tmp_path / "out" / "LaSOT" / "oracle"
    for s in seqs:  # the oracle copies the GT, NaN included on frame 4 (the toolkit carries the previous box)
        save_sequence(d, s.name, s.boxes, layout="LaSOT")
    rc, out, err = _run(["eval", "--dataset", "lasot", "--root", str(root), "--split", "all", "--results", str(d), "--json"], capsys)
    assert rc == 0, err
    js = json.loads(out)
    # by hand: frames 4 and 5 (1-based) are absent, a miss in every curve, still in the denominator: 4 hits of 6
    assert js["metrics"]["auc"] == pytest.approx(20 / 21 * 4 / 6)
    assert js["metrics"]["precision"] == pytest.approx(4 / 6) and js["metrics"]["norm_precision"] == pytest.approx(4 / 6)
    att = {r["attribute"]: r for r in js["per_attribute"]}
    assert att["full_occlusion"]["auc"] == 0 and att["out_of_view"]["precision"] == 0
    # pysot-style rules (absent ignored, missing GT passes precision) give different numbers
    pysot = PROTOCOLS["otb"]
    r = benchmark_metrics({s.name: np.nan_to_num(s.boxes) for s in seqs}, {s.name: s.boxes for s in seqs}, pysot,
                          {s.name: s.absent for s in seqs})
    assert r["metrics"]["precision"] == pytest.approx(6 / 6)


def test_got10k_val_pools_runs_and_skips_absent_frames(tmp_path):
    root = make_tiny_got10k(tmp_path / "got")
    (seq,) = datasets.load_dataset("got10k", root, split="train")
    assert seq.absent.tolist() == [False, False, True, False, False]
    d = tmp_path / "out" / "GOT-10k" / "me"
    save_sequence(d, seq.name, seq.boxes, times=np.full(5, 0.1), layout="got10k", run=1)
    worse = seq.boxes.copy()
    worse[:, 3] /= 2  # half the height: IoU 1/2
    save_sequence(d, seq.name, worse, layout="got10k", run=2)
    r = evaluate([seq], d)
    # by hand: frame 1 dropped, frame 3 absent (skipped); run 1 gives IoU 1 x 3, run 2 IoU 1/2 x 3, pooled
    assert r["protocol"] == "got10k"
    assert r["metrics"]["ao"] == pytest.approx(0.75) and r["metrics"]["sr50"] == pytest.approx(0.5)
    assert r["metrics"]["sr75"] == pytest.approx(0.5) and r["fps"] == pytest.approx(10.0)
    names = zipfile.ZipFile(zip_results(d, tmp_path / "me.zip", layout="got10k")).namelist()
    assert sorted(names) == sorted(f"{seq.name}/{seq.name}_{x}.txt" for x in ("001", "002", "time"))


def test_withheld_test_ground_truth_is_refused(tmp_path):
    root = make_tiny_trackingnet(tmp_path / "tn")
    seqs = datasets.load_dataset("trackingnet", root, split="test")
    d = tmp_path / "out" / "TrackingNet" / "me"
    for s in seqs: save_sequence(d, s.name, np.tile(s.boxes[0], (len(s), 1)), layout="TrackingNet")
    with pytest.raises(DSTError, match="withheld"):
        evaluate(seqs, d)
    assert zipfile.ZipFile(zip_results(d, layout="trackingnet", sequences=[s.name for s in seqs])).namelist() == ["0-6LB4FqxoE_0.txt"]


def test_trackingnet_rules_by_hand():
    # a box 0.4 px off rounds onto the GT; TrackingNet's areas (trapezoids over 21 thresholds): a perfect success
    # curve (1 below t = 1, 0 at 1) has area 0.05 x 19.5 = 0.975
    gt = np.tile([10.0, 10, 20, 20], (3, 1))
    pred = gt + [[0, 0, 0, 0], [0.4, 0, 0, 0], [0, 0.4, 0.3, 0]]
    r = benchmark_metrics({"s": pred}, {"s": gt}, "trackingnet")["metrics"]
    assert r == pytest.approx(dict(auc=0.975, precision=1.0, norm_precision=1.0))


def test_uav_missing_ground_truth_rule_by_hand():
    # UAV123 marks frames without a target with NaN: they fail success and pass precision (OTB MATLAB toolkit)
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [np.nan] * 4, [0, 0, 10, 10.0]])
    pred = np.array([[0, 0, 10, 10], [30, 0, 10, 10], [0, 0, 10, 10], [3, 4, 10, 10.0]])
    c = sequence_curves(pred, gt, "uav123")
    # IoU: 1, 0, (missing), 42/158 (7 x 6 px in common); centre errors 0, 30, (pass), 5
    assert c["success"][0] == pytest.approx(2 / 4) and c["success"][7] == pytest.approx(1 / 4)  # t = 0 and t = 0.35
    assert c["precision"][20] == pytest.approx(3 / 4) and c["precision"][4] == pytest.approx(2 / 4)
    assert c["precision"][5] == pytest.approx(3 / 4)


# ---------------------------------------------------------------- VOT2019 on the real rotated ground truth

def _bag(fixtures):
    (seq,) = datasets.load_dataset("vot2019", fixtures / "vot2019")
    return seq


def test_polygon_overlap_matches_a_pixel_raster(fixtures):
    """Exact clipping against an independent oracle: count points of a fine grid inside both regions (the VOT
    toolkit rasterises the same way, on the pixel grid)."""
    seq = _bag(fixtures)
    polys = seq.meta["polygons"]
    rng = np.random.default_rng(0)
    for i in rng.choice(len(seq), 8, replace=False):
        poly = polys[i].reshape(-1, 2)
        box = seq.boxes[i] + np.r_[rng.normal(0, 5, 2), rng.normal(0, 3, 2)]
        x0, y0 = np.minimum(poly.min(0), box[:2]) - 1
        x1, y1 = np.maximum(poly.max(0), box[:2] + box[2:]) + 1
        xs, ys = np.meshgrid(np.arange(x0, x1, 0.125) + 1 / 16, np.arange(y0, y1, 0.125) + 1 / 16)
        pts = np.stack([xs.ravel(), ys.ravel()], 1)
        in_box = (pts[:, 0] >= box[0]) & (pts[:, 0] <= box[0] + box[2]) & (pts[:, 1] >= box[1]) & (pts[:, 1] <= box[1] + box[3])
        in_poly = np.ones(len(pts), bool)
        cross = lambda a, b: a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
        orient = np.sign(cross(poly[1] - poly[0], poly[2] - poly[1]))
        for k in range(len(poly)):  # convex quadrilateral: inside = on the same side of every edge
            e0, e1 = poly[k], poly[(k + 1) % len(poly)]
            in_poly &= orient * cross(e1 - e0, pts - e0) >= 0
        raster = (in_box & in_poly).sum() / (in_box | in_poly).sum()
        assert region_overlap(box, polys[i]) == pytest.approx(raster, abs=0.01)


class _Tracker:
    """Answers with the axis-aligned GT box, except that it stays frozen from `freeze` on (it then drifts off)."""
    def __init__(self, boxes, freeze=None):
        self.boxes, self.freeze, self.last = boxes, freeze, None

    def init(self, i, box):
        self.last = np.asarray(box, float)

    def update(self, i):
        if self.freeze is None or i < self.freeze: self.last = self.boxes[i]
        return self.last


def test_vot_reset_protocol_on_bag(fixtures, tmp_path, capsys):
    seq = _bag(fixtures)
    n, polys = len(seq), seq.meta["polygons"]
    oracle = _Tracker(seq.boxes)
    traj = run_supervised(n, oracle.init, oracle.update, polys, init_boxes=seq.boxes, bounds=(480, 360))
    assert failure_frames(traj) == []
    d = tmp_path / "VOT2019" / "oracle"
    save_sequence(d, seq.name, traj, times=np.full(n, 0.005), layout="VOT2019")
    assert sequence_files(d, "bag", "vot")["boxes"] == d / "baseline" / "bag" / "bag_001.txt"
    assert (d / "baseline" / "bag" / "bag_001.txt").read_text().splitlines()[0] == "1"
    rc, out, err = _run(["eval", "--dataset", "vot2019", "--root", str(fixtures / "vot2019"), "--results", str(d), "--json"], capsys)
    assert rc == 0, err
    js = json.loads(out)
    # the axis-aligned box around a rotated rectangle: IoU = polygon area / box area, averaged over frames 11..196
    area = lambda p: 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))
    ratio = [area(polys[i].reshape(-1, 2)) / np.prod(seq.boxes[i, 2:]) for i in range(10, n)]
    assert js["metrics"]["accuracy"] == pytest.approx(np.mean(ratio), abs=1e-6)
    assert js["metrics"]["lost"] == 0 and js["metrics"]["robustness"] == 0 and js["fps"] == pytest.approx(200)
    assert js["eao_range"] == [46, 291]  # bag has 196 frames, the curve is computed to 291 and scored there

    frozen = _Tracker(seq.boxes, freeze=60)  # stops following on frame 60: fails, is reset, fails again, ...
    traj = run_supervised(n, frozen.init, frozen.update, polys, init_boxes=seq.boxes, bounds=(480, 360))
    fails = failure_frames(traj)
    assert fails and all(traj[f + 5] == [1] for f in fails if f + 5 < n)
    assert all(traj[f + k] == [0] for f in fails for k in range(1, 5) if f + k < n)
    save_sequence(tmp_path / "VOT2019" / "frozen", seq.name, traj, layout="VOT2019")
    back = read_vot_trajectory(tmp_path / "VOT2019" / "frozen" / "baseline" / "bag" / "bag_001.txt", n)
    r = vot_metrics({"bag": back}, {"bag": list(polys)}, {"bag": (480, 360)})
    assert r["metrics"]["lost"] == len(fails) and r["metrics"]["robustness"] == pytest.approx(100 * len(fails) / n)
    # a tracker that keeps failing has an EAO below the one that never fails
    ok = vot_metrics({"bag": read_vot_trajectory(d / "baseline" / "bag" / "bag_001.txt", n)}, {"bag": list(polys)}, {"bag": (480, 360)})
    assert r["metrics"]["eao"] < ok["metrics"]["eao"]


def test_eao_of_a_never_failing_run_is_its_running_mean():
    # by hand: no failure, overlaps 0.5 then 1.0 alternating; Phi(Ns) is the mean of positions 2..Ns; over the
    # lengths 2..5 that is mean(.5, (.5+1)/2, (.5+1+.5)/3, (.5+1+.5+1)/4) = mean(.5, .75, 2/3, .75)
    o = [np.nan, .5, 1, .5, 1]
    assert eao_score(eao_curve([(o, [])]), 2, 5) == pytest.approx(np.mean([.5, .75, 2 / 3, .75]))
