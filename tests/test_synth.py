"""The synthetic benchmark end to end: the default smoke split on disk in the GOT-10k and OTB-100 layouts, ground truth
that agrees with the flags, a static box that scores below 0.3, determinism, the CLI and bad input."""
import configparser
import hashlib
import json
import time

import cv2
import numpy as np
import pytest

from dst.cli import main
from dst.core import DSTError, iou_xywh
from dst.data import synth


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The default smoke split (generated once for this module) and what `generate` returned."""
    out = tmp_path_factory.mktemp("synth") / "smoke"
    t0 = time.perf_counter()
    res = synth.generate(out, progress=False)
    print(f"\ndefault smoke split: {res['sequences']}, {res['frames']} frames, {time.perf_counter() - t0:.1f} s")
    return out, res


def _digest(root):
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "synth.json"}


def test_smoke_split_sizes(smoke):
    out, res = smoke
    assert res["sequences"] == {"train": 8, "test": 6} and res["frames"] == 14 * 80
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "synth.json", "test", "train"]
    assert not list(out.glob(".synth-*")), "the temporary folder is removed"


def test_got10k_train_layout(smoke):
    out, _ = smoke
    names = (out / "train" / "list.txt").read_text().split()
    assert names == [f"SYNTH_Train_{i:06d}" for i in range(1, 9)]
    for name in names:
        d = out / "train" / name
        frames = sorted(d.glob("*.jpg"))
        assert [f.name for f in frames] == [f"{i:08d}.jpg" for i in range(1, 81)]
        assert cv2.imread(str(frames[0])).shape == (240, 320, 3)
        gt = np.loadtxt(d / "groundtruth.txt", delimiter=",")          # as the got10k toolkit reads it
        assert gt.shape == (80, 4)
        labels = {k: np.loadtxt(d / f"{k}.label") for k in ("absence", "cover", "cut_by_image")}
        assert all(v.shape == (80,) for v in labels.values())
        assert set(np.unique(labels["absence"])) <= {0, 1} and set(np.unique(labels["cut_by_image"])) <= {0, 1}
        assert labels["cover"].min() >= 0 and labels["cover"].max() <= 8 and labels["cover"][0] == 8
        lines = (d / "meta_info.ini").read_text().strip().split("\n")
        assert lines[0] == "[METAINFO]"
        meta = dict(l.split(": ", 1) for l in lines[1:])                # the toolkit's own parsing
        assert meta["resolution"] == "(320, 240)" and meta["object_class"]
        cfg = configparser.ConfigParser(delimiters=[":"]); cfg.read(d / "meta_info.ini")
        assert cfg["METAINFO"]["end_time"] == "79"


def test_otb_test_layout(smoke):
    out, _ = smoke
    names = sorted(p.name for p in (out / "test").iterdir() if p.is_dir())
    assert names == [f"Synth{i:03d}" for i in range(1, 7)]
    tags = json.loads((out / "test" / "attributes.json").read_text())
    assert sorted(tags) == names
    for name in names:
        d = out / "test" / name
        assert [f.name for f in sorted((d / "img").glob("*.jpg"))] == [f"{i:04d}.jpg" for i in range(1, 81)]
        gt = np.loadtxt(d / "groundtruth_rect.txt", delimiter=",")
        assert gt.shape == (80, 4) and np.array_equal(gt, gt.round())  # whole pixels
        assert set(tags[name]) <= set(synth.ABBREVIATIONS)
        head = (d / "attributes.csv").read_text().splitlines()[0].split(",")
        assert head == ["frame", *synth.FLAGS, "visible_ratio", "cover"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_boxes_inside_and_consistent_with_flags(smoke, split):
    out, _ = smoke
    for s in synth.load_synth(out, split):
        raw = np.loadtxt(out / split / s.name / ("groundtruth.txt" if split == "train" else "groundtruth_rect.txt"), delimiter=",")
        vis, cover = s.meta["visible_ratio"], s.meta["cover"]
        assert not s.absent[0] and vis[0] == 1.0, "the first frame shows the whole target"
        assert np.array_equal(s.absent, (raw == 0).all(1)), "absent frames, and only they, are written as 0,0,0,0"
        assert np.array_equal(s.absent, np.isnan(s.boxes).all(1))
        assert np.array_equal(s.absent, vis < 0.05) and (cover[s.absent] <= 1).all()
        b = s.boxes[~s.absent]
        assert (b[:, 2:] >= 1).all() and (b[:, :2] >= 0).all(), "boxes are non-empty, 0-based, inside"
        assert (b[:, 0] + b[:, 2] <= 320).all() and (b[:, 1] + b[:, 3] <= 240).all()
        touches = (b[:, 0] == 0) | (b[:, 1] == 0) | (b[:, 0] + b[:, 2] == 320) | (b[:, 1] + b[:, 3] == 240)
        assert np.array_equal(s.attrs["OV"][~s.absent], touches), "partly out of view exactly when the box touches a border"
        assert (vis[s.attrs["OCC"] & ~s.absent] < 1).all(), "occluded frames are not fully visible"
        assert np.array_equal(cover == 8, vis == 1.0)


def test_static_box_auc_below_0_3(smoke):
    out, _ = smoke
    test = synth.load_synth(out, "test")
    preds = {s.name: np.repeat(s.boxes[:1], len(s), 0) for s in test}
    thresholds = np.linspace(0, 1, 21)
    aucs = [np.mean([(iou_xywh(preds[s.name], s.boxes) > t).mean() for t in thresholds]) for s in test]
    assert np.mean(aucs) < 0.3, aucs
    from dst.eval.metrics import benchmark_metrics
    assert abs(benchmark_metrics(preds, {s.name: s.boxes for s in test}, "otb")["metrics"]["auc"] - np.mean(aucs)) < 1e-9


def test_same_seed_same_bytes(tmp_path):
    kw = dict(seed=3, sequences=(1, 2), frames=12, size=(96, 72), progress=False)
    for d in ("a", "b", "c"):
        synth.generate(tmp_path / d, **(kw | (dict(seed=4) if d == "c" else {})))
    a, b, c = (_digest(tmp_path / d) for d in "abc")
    assert a == b and len(a) == (12 + 6) + 2 * (12 + 2) + 4
    assert a.keys() == c.keys() and a != c, "another seed, other frames"
    # a sequence does not depend on how many others are generated
    synth.generate(tmp_path / "d", **(kw | dict(sequences=(0, 1), splits=("test",))))
    assert _digest(tmp_path / "d" / "test" / "Synth001") == {k[len("test/Synth001/"):]: v for k, v in a.items() if k.startswith("test/Synth001/")}


def test_difficulty_scales_the_challenge():
    def static_auc(d):
        aucs = []
        for i in range(6):
            c = synth.make_sequence(np.random.default_rng([11, i]), (160, 120), 40, d)
            ious = iou_xywh(np.repeat(c.boxes[:1], len(c), 0), c.boxes)
            aucs.append(np.mean([(ious > t).mean() for t in np.linspace(0, 1, 21)]))
        return np.mean(aucs)
    assert static_auc(0.0) > static_auc(1.0) + 0.1


def test_cli_writes_a_benchmark(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["data", "synth", "--out", str(out), "--sequences", "1,2", "--frames", "8", "--size", "96x64", "--seed", "5", "--quiet"]) == 0
    assert len(synth.load_synth(out, "train")) == 1 and len(synth.load_synth(out, "test")) == 2
    meta = json.loads((out / "synth.json").read_text())
    assert meta["seed"] == 5 and meta["size"] == [96, 64] and meta["sequences"] == {"train": 1, "test": 2}
    assert "--seed 5 --sequences 1,2 --frames 8 --size 96x64" in (out / "README.md").read_text()
    assert main(["data", "synth", "--out", str(out), "--sequences", "1", "--frames", "4", "--size", "64x64", "--overwrite", "--quiet"]) == 0
    assert "wrote 1 train + 1 test sequences, 8 frames" in capsys.readouterr().out
    assert len(synth.load_synth(out, "test")[0]) == 4, "--overwrite replaced the earlier split"


@pytest.mark.parametrize("args,message", [
    (["--size", "0x10"], "--size '0x10': expected WIDTHxHEIGHT in pixels, each at least 64"),
    (["--size", "320"], "--size '320'"),
    (["--sequences", "8;6"], "--sequences '8;6'"),
    (["--frames", "1"], "frames 1: expected a whole number >= 2"),
    (["--difficulty", "2"], "difficulty 2.0: expected a number in [0, 1]"),
    (["--seed", "-1"], "seed -1: expected a whole number >= 0"),
])
def test_bad_arguments_one_clear_error(tmp_path, capsys, args, message):
    out = tmp_path / "x"
    assert main(["data", "synth", "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists(), "nothing is written when an argument is bad"


def test_existing_benchmark_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "b"
    synth.generate(out, sequences=1, frames=4, size=(64, 64), progress=False)
    before = _digest(out)
    assert main(["data", "synth", "--out", str(out), "--sequences", "1", "--frames", "4", "--size", "64x64", "--quiet"]) == 2
    assert "already holds train, test, synth.json; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert _digest(out) == before


def test_load_synth_names_bad_files(tmp_path):
    out = tmp_path / "b"
    synth.generate(out, sequences=(0, 1), frames=4, size=(64, 64), splits=("test",), progress=False)
    with pytest.raises(DSTError, match="no such folder"):
        synth.load_synth(out, "train")
    gt = out / "test" / "Synth001" / "groundtruth_rect.txt"
    lines = gt.read_text().splitlines(); lines[2] = "1,2,3"; gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DSTError, match=r"groundtruth_rect.txt:3: 3 values, expected 4"):
        synth.load_synth(out, "test")
