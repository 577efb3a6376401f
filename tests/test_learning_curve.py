"""The learning curve at test size: a few hundred pairs through the engine in chunks, tracking AUC on the synthetic
test split after each chunk, training and validation loss beside it (`dst.eval.curve`)."""
import json

import numpy as np
import pytest
import torch

from dst.data.datasets import load_dataset
from dst.data.pairs import FrameFilter
from dst.data.synth import generate
from dst.eval.curve import learning_curve, plot_learning_curve, student_at, tracking_auc
from dst.models.zoo import get_spec
from dst.select.candidate import make_pairs
from dst.train.config import TrainConfig
from dst.train.engine import read_metrics


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """8 training videos (7 train, 1 for validation pairs) and 3 test videos, 40 frames at 256x192."""
    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0, sequences=(8, 3), frames=40, size=(256, 192), progress=False)
    return root


@pytest.fixture
def one_thread():
    "One torch thread for this test, restored after it (other tests compare runs across processes)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_learning_curve_runs_and_training_helps(synth, tmp_path, one_thread):
    tr, te = load_dataset("synth", synth, split="train"), load_dataset("synth", synth, split="test")
    cfg = TrainConfig(students=["siamfc@0.25"], losses=["gt"], epochs=2, pairs_per_epoch=160, batch_size=8,
                      data=[dict(dataset="synth", root=str(synth), split="train", sequences=[s.name for s in tr[:7]])],
                      device="cpu", out=str(tmp_path/"run"), seed=0, frame_filter="permissive")
    val = make_pairs(tr[7:], get_spec("siamfc@0.25"), 24, seed=5, train=False, frame_filter=FrameFilter.permissive())
    with open(tmp_path/"curve.jsonl", "w") as log:
        rows = learning_curve(cfg, [10, 40], dict(synth=te), val, max_frames=30, log=log)
    assert [r["pairs"] for r in rows] == [0, 80, 320]                     # "a few hundred pairs"
    assert [json.loads(l)["pairs"] for l in (tmp_path/"curve.jsonl").read_text().splitlines()] == [0, 80, 320]
    assert [r["step"] for r in read_metrics(tmp_path/"run/metrics.jsonl")] == list(range(1, 41))   # one run, resumed per chunk
    assert rows[1]["train_loss"] > rows[2]["train_loss"] and rows[2]["val_loss"] < rows[0]["val_loss"]
    end = tracking_auc(student_at(tmp_path/"run"), te, max_frames=30)["mean"]
    assert end == pytest.approx(rows[-1]["auc_synth"])
    from dst.track.trackers import StaticTracker
    from dst.track.runners import track_ope
    from dst.eval.curve import head
    from dst.eval.metrics import curve_scores, sequence_curves
    static = np.mean([curve_scores(sequence_curves(track_ope(StaticTracker(), head(s, 30))[0], s.boxes[:30], "otb"), "otb")["auc"] for s in te])
    assert rows[-1]["auc_synth"] > static, (rows, static)                   # trained tracks: better than standing still
    # Not asserted: beating the random initialisation. At 320 pairs it does not (0.444 against 0.476 here): random
    # SiamFC features already match templates on these videos, and a network this under-trained is worse (notebook 66).
    fig = plot_learning_curve(rows, "test", tmp_path/"curve.png")
    assert (tmp_path/"curve.png").stat().st_size > 5000 and len(fig.axes) == 2
