"""The JupyterLab explorers (dst.explore.tracker, dst.explore.str_maps) driven from code: on the real fixtures, on a tiny
synthetic sequence, and on a run folder."""
import json

import cv2
import numpy as np
import pytest

from dst.core import DSTError, iou_xywh
from dst.data.synth import generate, load_synth
from dst.explore.str_maps import str_explorer
from dst.explore.tracker import GREEN, RED, YELLOW, TrackRun, draw_frame, explorer_models, tracker_explorer
from dst.models.checkpoint import save_checkpoint
from dst.models.zoo import build_model
from dst.runs import run_checkpoints
from dst.track.trackers import StaticTracker


def decode(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


@pytest.fixture
def no_shipped(tmp_path, monkeypatch):
    """No trained models installed: the explorers fall back to untrained networks (what the default-choice tests check)."""
    monkeypatch.setenv("DST_WEIGHTS", str(tmp_path/"no-weights"))


@pytest.fixture
def toy_weights(tmp_path, monkeypatch):
    """A shipped-weights folder with a toy teacher and dull student, as `dst run ship` writes it."""
    w = tmp_path/"weights"; w.mkdir()
    idx = {}
    for name, role, arch in (("toy-teacher", "teacher", "siamfc@0.25"), ("toy-dull", "dull", "siamfc@0.125")):
        save_checkpoint(w/f"{name}.pt", build_model(arch))
        idx[name] = dict(file=f"{name}.pt", role=role, family="siamfc")
    (w/"index.json").write_text(json.dumps(idx))
    monkeypatch.setenv("DST_WEIGHTS", str(w))
    return idx


@pytest.fixture(scope="module")
def fixture_seqs(fixtures):
    from dst.explore.tracker import fixture_sequences
    return fixture_sequences()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One synthetic OTB-layout sequence of 8 frames at 128x96."""
    d = tmp_path_factory.mktemp("synth")
    generate(d, seed=3, sequences=(0, 1), frames=8, size=(128, 96), splits=("test",), progress=False)
    return load_synth(d, "test")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny):
    """A run folder in the pipeline's layout: a teacher, two named students and one the metrics do not name."""
    run = tmp_path_factory.mktemp("run")
    for rel, arch in (("1_teacher/teacher.pt", "siamfc@0.25"), ("3_students/runs/TSsKD/students/s0.pt", "siamfc@0.125"),
                      ("3_students/runs/NOKD/students/s0.pt", "siamfc@0.125"), ("3_students/runs/n3/students/s1.pt", "siamfc@0.125")):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(run / rel, build_model(arch))
    (run / "3_students/metrics.json").write_text(json.dumps({"runs": {
        "TSsKD": {"students": [{"role": "dull", "checkpoint": "3_students/runs/TSsKD/students/s0.pt"}]},
        "NOKD": {"students": [{"role": "dull", "checkpoint": "3_students/runs/NOKD/students/s0.pt"}]}}}))
    generate(run / "data/synth", seed=1, sequences=(0, 1), frames=6, size=(128, 96), splits=("test",), progress=False)
    return run


class CountingTracker(StaticTracker):
    """The static baseline, counting its calls."""
    def __init__(self):
        self.inits = self.updates = 0

    def init(self, image, box):
        self.inits += 1
        super().init(image, box)

    def update(self, image):
        self.updates += 1
        return super().update(image)


def test_draw_frame_pixels():
    img = np.zeros((50, 70, 3), np.uint8)
    out = draw_frame(img, gt=[5, 6, 20, 10], pred=[30, 30, 15, 12], region=[1, 1, 68, 48], thickness=1)
    assert out.shape == img.shape and img.max() == 0
    assert (out[6, 5] == GREEN).all() and (out[15, 24] == GREEN).all() and (out[10, 5] == GREEN).all()
    assert (out[7, 6] == 0).all() and (out[5, 5] == 0).all()                 # one pixel thick, nothing outside
    assert (out[30, 30] == RED).all() and (out[41, 44] == RED).all()
    assert (out[1, 1] == YELLOW).all() and (out[48, 68] == YELLOW).all()


def test_track_run_caches(tiny):
    seq, made = tiny[0], []
    run = TrackRun(seq, lambda: made.append(CountingTracker()) or made[-1])
    r = run.frame(4)
    t = made[0]
    assert (t.inits, t.updates, run.updates, len(run)) == (1, 4, 4, 5)
    run.frame(1); run.frame(4)
    assert t.updates == 4 and len(made) == 1                                  # back and again: no tracking
    run.frame(7)
    assert t.updates == 7                                                     # forward: only frames 5..7
    assert r["iou"] == pytest.approx(iou_xywh(seq.boxes[0], seq.boxes[4]))
    with pytest.raises(DSTError, match="has frames 0..7"):
        run.frame(8)


def test_tracker_explorer_on_tiny_synthetic(tiny, no_shipped):
    ex = tracker_explorer(sequences=tiny)
    assert ex.model.value == "untrained siamfc_half" and ex.error is None
    ex.frame.value = 3
    run = ex.run
    assert run.updates == 3 and run.responses[3].score.shape == (17, 17)
    assert decode(ex.image.value).shape == (96, 128, 3) and decode(ex.map.value).shape == (256, 256, 3)
    ex.frame.value = 0
    assert run.updates == 3 and "IoU 1.000" in ex.info.value
    ex.model.value = "untrained siamrpn_half"
    ex.frame.value = 2
    assert ex.error is None and ex.run.responses[2].score.shape == (19, 19) and ex.run.updates == 2
    assert 0 <= ex.run.responses[2].score.min() <= ex.run.responses[2].score.max() <= 1


def test_tracker_explorer_on_fixtures_draws_boxes(fixture_seqs):
    ex = tracker_explorer()
    assert {"otb/Crossing", "otb/Football1", "vot2019/bag"} <= set(ex.sequences)
    ex.seq.value, ex.model.value = "otb/Crossing", "static"
    seq = ex.sequences["otb/Crossing"]
    g0 = seq.boxes[0]
    # the first frame whose true box is well clear of the (static) first box, so that no outline covers another
    k = next(i for i in range(1, len(seq)) if abs(seq.boxes[i][0] - g0[0]) > g0[2] + 4)
    ex.frame.value = k
    assert ex.error is None and ex.run.updates == k
    img = decode(ex.image.value)
    assert img.shape == (240, 360, 3)
    x, y, w, h = (int(round(v)) for v in seq.boxes[k])
    assert (img[y, x] == GREEN).all() and (img[y + h - 1, x + w - 1] == GREEN).all()
    x, y, w, h = (int(round(v)) for v in g0)
    assert (img[y, x] == RED).all() and (img[y + h - 1, x + w - 1] == RED).all()
    assert f"IoU {iou_xywh(g0, seq.boxes[k]):.3f}" in ex.info.value
    ex.frame.value = 1
    assert ex.run.updates == k                                                # cached
    ex.seq.value = "vot2019/bag"
    assert (ex.frame.value, ex.frame.max, ex.play.max) == (0, 195, 195)
    ex.model.value = "untrained siamfc_half"
    ex.play.value = 2                                                         # Play drives the slider
    assert ex.frame.value == 2 and ex.run.updates == 2 and ex.error is None
    resp = ex.run.responses[2]
    assert resp.score.shape == (17, 17)
    img = decode(ex.image.value)
    # the search region is drawn around the centre the tracker had before frame 3
    rx, ry, side = (int(round(v)) for v in resp.region()[:3])
    assert 0 <= rx < 480                                                      # its left edge is inside this frame
    assert (img[max(ry, 0):min(ry + side, 360), rx] == YELLOW).all(-1).sum() > side // 3


def test_str_explorer_on_fixtures(fixture_seqs, no_shipped):
    sx = str_explorer(sequence="otb/Crossing", frame=40)
    assert (sx.teacher.value, sx.student.value) == ("untrained siamfc", "untrained siamfc_half") and sx.error is None
    assert len(sx.layer.options) == 5 and sx.layer.value == 4
    t, s = sx.out(sx.teacher.value), sx.out(sx.student.value)
    for j in range(5):
        c = sx.compare(j)
        for k in ("z", "x", "w", "wx"):
            src = t["zf"] if k == "z" else t["xf"]
            assert c["teacher"][k].shape == tuple(src[j].shape[2:])
        assert c["student"]["x"].shape == tuple(s["xf"][j].shape[2:])
        assert all(v > 0 for v in c["mse"].values())                         # different networks differ
    assert decode(sx.image.value).ndim == 3
    n = len(sx.outs)
    sx.layer.value = 1
    assert len(sx.outs) == n                                                  # no network run for a layer change
    sx.student.value = "untrained siamfc"
    assert sx.compare()["mse"] == {"z": 0.0, "x": 0.0, "wx": 0.0}
    sx.frame.value = 41
    assert len(sx.outs) == n + 1                                              # one network (teacher = student), one new frame
    sx.seq.value = "vot2019/bag"
    assert sx.error is None and sx.frame.value == 41 and sx.out(sx.teacher.value)["x"].shape == (255, 255, 3)


def test_explorers_default_to_the_shipped_models(tiny, toy_weights):
    ex = tracker_explorer(sequences=tiny)
    assert ex.model.value == "toy-teacher" and list(ex.model.options)[:2] == ["toy-teacher", "toy-dull"] and ex.error is None
    sx = str_explorer(sequences=tiny, frame=4)
    assert (sx.teacher.value, sx.student.value) == ("toy-teacher", "toy-dull") and sx.error is None


def test_run_folder(run_dir, tiny):
    ck = run_checkpoints(run_dir)
    assert list(ck) == ["teacher", "NOKD/dull", "TSsKD/dull", "n3/s1"]
    assert list(explorer_models(run_dir=run_dir))[:4] == list(ck)
    ex = tracker_explorer(run_dir=str(run_dir))
    assert list(ex.sequences)[0] == "synth/Synth001" and ex.model.value == "teacher"
    ex.frame.value = 3
    assert ex.error is None and ex.run.updates == 3 and ex.run.responses[3].score.shape == (17, 17)
    sx = str_explorer(run_dir=run_dir, frame=2)
    assert (sx.teacher.value, sx.student.value) == ("teacher", "TSsKD/dull") and sx.error is None
    assert sx.compare()["teacher"]["z"].shape == tuple(sx.out("teacher")["zf"][-1].shape[2:])
    # networks given directly, and an explicit sequence
    net = build_model("siamfc@0.125").eval()
    sx = str_explorer(teacher=str(ck["teacher"]), student=net, sequence=tiny[0], frame=1)
    assert sx.student.value == "student (siamfc@0.125)" and sx.seq.value == tiny[0].name and sx.error is None


def test_bad_input(tiny, tmp_path):
    with pytest.raises(DSTError, match="no such folder"):
        tracker_explorer(run_dir=tmp_path / "missing")
    with pytest.raises(DSTError, match="expected a Sequence"):
        tracker_explorer(sequences=[])
    with pytest.raises(DSTError, match="neither a checkpoint file nor a registered architecture"):
        str_explorer(teacher="no_such_net", sequences=tiny)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    ex = tracker_explorer(sequences=tiny, models={"broken": str(bad), "static": "static"})
    assert isinstance(ex.error, DSTError) and "bad.pt" in str(ex.error)     # shown in the widget, not raised
    assert "color:red" in ex.info.value and "bad.pt" in ex.info.value
    ex.model.value = "static"
    assert ex.error is None
