"""The benchmark runner's machinery: one tracker per worker process (built once), frames counted as they are
tracked, parallel runs that write what a serial run writes, confidence files and the lost-target summary,
precision passed through to the tracker."""
import multiprocessing as mp
import signal

import numpy as np
import pytest
import torch

from dst.cli import main
from dst.core import DSTError
from dst.data import datasets as D, fixtures as F
from dst.track.results import load_confidence
from dst.track import runners
from dst.track.runners import run_benchmark
from dst.track.trackers import Tracker

pytestmark = pytest.mark.filterwarnings("ignore:tracker .* randomly initialised")


@pytest.fixture
def seqs(tmp_path):
    root = F.make_tiny_dtb70(tmp_path / "DTB70", names=("Animal1", "Animal2", "Animal3"), n=7)
    return D.load_dataset("dtb70", root, sequences=["Animal1", "Animal2", "Animal3"])


def test_a_worker_builds_its_tracker_once_and_counts_frames(seqs, tmp_path, monkeypatch):
    """`_worker_init` then `_worker_run` per sequence, in this process: one tracker for all, one count per frame."""
    built = []
    real = runners._tracker
    monkeypatch.setattr(runners, "_tracker", lambda *a: built.append(a) or real(*a))
    monkeypatch.setattr(runners, "_die_with_parent", lambda ppid: None)    # not in the test process itself
    handler, threads = signal.getsignal(signal.SIGINT), torch.get_num_threads()
    counter = mp.get_context("spawn").Value("q", 0)
    try:
        runners._worker_init("siamfc@0.25", None, "cpu", "w", None, 1, counter, 0)
        tracker = runners._W["tracker"]
        results = [runners._worker_run(s, "ope", tmp_path / "out", runners.results_layout("DTB70")) for s in seqs]
    finally:
        signal.signal(signal.SIGINT, handler); torch.set_num_threads(threads); runners._W.clear()
    assert len(built) == 1 and tracker is not None
    assert counter.value == 21                                   # 3 sequences x 7 frames
    assert [r[:2] for r in results] == [("Animal1", 7), ("Animal2", 7), ("Animal3", 7)]
    assert (tmp_path / "out/Animal3.txt").is_file() and (tmp_path / "out/Animal3_confidence.txt").is_file()


def test_parallel_writes_what_serial_writes(seqs, tmp_path):
    from dst.models.checkpoint import save_checkpoint
    from dst.models.zoo import build_model
    ck = save_checkpoint(tmp_path / "m.pt", build_model("siamfc@0.25"))
    s1 = run_benchmark(ck, seqs, tmp_path / "one", "DTB70", progress=False)
    s2 = run_benchmark(ck, seqs, tmp_path / "two", "DTB70", workers=2, progress=False)
    assert (s1["tracked"], s2["tracked"]) == (3, 3) and s1["fingerprint"] == s2["fingerprint"]
    for s in ("Animal1", "Animal2", "Animal3"):                  # same boxes and scores (threads may move the last digit)
        for suffix in (".txt", "_confidence.txt"):
            a, b = (np.genfromtxt(tmp_path / f"{d}/DTB70/m/{s}{suffix}", delimiter=",") for d in ("one", "two"))
            np.testing.assert_allclose(a, b, atol=2e-3)
    s3 = run_benchmark(ck, seqs, tmp_path / "two", "DTB70", workers=2, progress=False)   # resumed: nothing to do
    assert (s3["tracked"], s3["skipped"]) == (0, 3)


def test_workers_share_the_random_weights_of_an_architecture_name(seqs, tmp_path):
    """An architecture name has random weights: the parent draws them once and every worker tracks with those."""
    run_benchmark("siamfc@0.25", seqs, tmp_path, "DTB70", workers=3, progress=False)
    rows = [(tmp_path / f"DTB70/siamfc@0.25/{s}.txt").read_text().splitlines() for s in ("Animal1", "Animal2", "Animal3")]
    # the three tiny sequences have the same frames and boxes (make_tiny_dtb70): the same weights give the same boxes
    assert rows[0] == rows[1] == rows[2]


class _Fader(Tracker):
    """Stays on the ground truth with score 0.9, then from frame `lost` (0-based) scores 0.1: a lost target."""
    name = "fader"

    def __init__(self, lost):
        self.lost, self.i = lost, 0

    def init(self, image, box):
        self.i, self.box = 0, np.asarray(box, dtype=np.float64)

    def update(self, image):
        self.i += 1
        return self.box, (0.9 if self.i < self.lost else 0.1)


def test_a_lost_target_is_written_and_said(seqs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runners, "make_tracker", lambda *a, **k: _Fader(lost=5))
    s = run_benchmark("fader", seqs[:2], tmp_path, "DTB70", progress=False)
    assert s["low_confidence"] == {"Animal1": {"frames": 2, "of": 7, "first": 6}, "Animal2": {"frames": 2, "of": 7, "first": 6}}
    c = load_confidence(tmp_path / "DTB70/fader", "Animal1", "DTB70", 7)
    assert np.isnan(c[0]) and np.allclose(c[1:], [0.9, 0.9, 0.9, 0.9, 0.1, 0.1])
    rc = main(["track", "--model", "fader", "--dataset", "dtb70", "--root", str(seqs[0].frames[0].parents[2]), "--out",
               str(tmp_path / "cli"), "--sequences", "Animal1", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "low confidence (target probably lost) in 1 sequence(s): Animal1 2 of 7 frames from frame 6" in out


def test_vot_protocol_writes_confidence_beside_the_trajectory(tmp_path, monkeypatch):
    root = F.make_tiny_vot(tmp_path / "vot", names=("ants1",), n=6)
    seqs = D.load_dataset("vot2019", root, sequences=["ants1"]) if (root / "list.txt").is_file() else None
    if seqs is None:
        pytest.skip("tiny VOT layout without list.txt")
    s = run_benchmark("static", seqs, tmp_path / "out", "VOT2019", protocol="vot", progress=False)
    assert s["tracked"] == 1
    c = load_confidence(tmp_path / "out/VOT2019/static", "ants1", "vot", 6)
    assert np.isnan(c[0]) and (tmp_path / "out/VOT2019/static/baseline/ants1/ants1_001_confidence.value").is_file()


def test_precision_reaches_the_tracker(seqs, tmp_path, monkeypatch):
    seen = []
    def fake(model, hp=None, device="cpu", name=None, precision=None):
        seen.append(precision)
        return _Fader(lost=99)
    monkeypatch.setattr(runners, "make_tracker", fake)
    s = run_benchmark("fader", seqs[:1], tmp_path, "DTB70", precision="fp32", progress=False)
    assert seen == ["fp32"] and s["precision"] == "fp32"
    with pytest.raises(DSTError, match="--precision 'fp16': expected one of auto, fp32, bf16"):
        run_benchmark("fader", seqs[:1], tmp_path, "DTB70", precision="fp16", progress=False)
    seen.clear()
    assert run_benchmark("fader", seqs[:1], tmp_path / "c", "DTB70", progress=False)["tracked"] == 1
    assert seen == ["auto"]                                   # no --precision: the machine's choice


def test_the_fingerprint_follows_weights_settings_and_precision(tmp_path):
    from dst.models.zoo import build_model
    fp = runners.model_fingerprint
    torch.manual_seed(0); a = build_model("siamfc@0.1")
    torch.manual_seed(1); b = build_model("siamfc@0.1")
    assert fp(a) == fp(a) and fp(a) != fp(b)
    assert fp("static") != fp("mil") and fp("siamfc") != fp("siamfc", {"window_influence": 0.3}) != fp("siamfc", None, "bf16")
