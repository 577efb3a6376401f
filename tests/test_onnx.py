"""The ONNX Runtime backend: exported models track the real fixtures within 0.5 px of PyTorch, through the
trackers, `dst track` and `dst bench`; a static (template-baked) graph tracks the target it was exported for."""
import numpy as np
import pytest
import torch

from dst.cli import main
from dst.data.datasets import load_dataset
from dst.eval.bench import bench
from dst.models.checkpoint import save_checkpoint
from dst.models.export import export_onnx
from dst.models.zoo import build_model
from dst.track.onnx_backend import OnnxNet, export_static
from dst.track.runners import track_ope
from dst.track.trackers import make_tracker


def _head(seq, n):
    """The first `n` frames of a sequence (a shorter copy for the slower checks)."""
    from dst.data.sequences import Sequence
    return Sequence(seq.name, seq.frames[:n], seq.boxes[:n], meta=seq.meta)


@pytest.fixture(scope="module")
def seqs(fixtures):
    return load_dataset("otb100", fixtures / "otb", sequences=["Crossing", "Football1"]) + load_dataset("vot2019", fixtures / "vot2019")


def lockstep(a, b, seq):
    """Largest per-frame box difference of trackers `a` and `b` when both start every frame from `a`'s state.

    A free run compounds: with untrained weights the response maps are flat, and one near-tie that float32
    rounding breaks differently sends the two runs to different (equally good) places for the rest of the
    sequence. Each frame here both backends update from the same state, so the check measures the backend."""
    a.init(seq.image(0), seq.boxes[0]); b.init(seq.image(0), seq.boxes[0])
    worst = 0.0
    for i in range(1, len(seq)):
        img = seq.image(i)
        vars(b).update({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(a).items() if isinstance(v, (np.ndarray, float))})
        worst = max(worst, float(np.abs(a.update(img)[0] - b.update(img)[0]).max()))
    return worst


# the first frames of each fixture (the full sequences cost minutes of CI; `dst track` below runs one whole sequence on both backends)
@pytest.mark.parametrize("arch,frames", [("siamrpn@0.25", 30), ("siamfc@0.25", 20), ("siamrpnpp_r18@0.25", 10)])
def test_boxes_match_pytorch_on_real_fixtures(tmp_path, seqs, arch, frames):
    torch.manual_seed(0)
    net = build_model(arch)
    export_onnx(net, tmp_path / "onnx", check=False)
    worst = {s.name: lockstep(make_tracker(net), make_tracker(tmp_path / "onnx"), _head(s, frames)) for s in seqs}
    assert max(worst.values()) <= 0.5, worst
    assert type(make_tracker(tmp_path / "onnx").net) is OnnxNet


def test_static_graph_tracks_its_target(tmp_path, seqs):
    torch.manual_seed(0)
    net, s = build_model("siamfc@0.25"), _head(seqs[0], 30)
    man = export_static(net, s.image(0), s.boxes[0], tmp_path / "static")
    import onnx
    g = onnx.load(str(tmp_path / "static" / "search.onnx")).graph
    assert [i.name for i in g.input] == ["x"] and man["search_batch"] == 3 and man["static"]
    ref, _ = track_ope(make_tracker(net), s)
    got, _ = track_ope(make_tracker(tmp_path / "static"), s)
    assert np.abs(got - ref).max() <= 0.5
    other = seqs[1]
    with pytest.raises(Exception, match="only the target it was exported for"):
        track_ope(make_tracker(tmp_path / "static"), _head(other, 2))


def test_dst_track_and_bench_take_an_export(tmp_path, fixtures, capsys):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "rpn.pt", build_model("siamrpn@0.25").eval())
    assert main(["export-onnx", "--model", str(ckpt), "--out", str(tmp_path / "rpn_onnx"), "--no-check"]) == 0
    for model, name in ((ckpt, "torch"), (tmp_path / "rpn_onnx", "onnx")):
        assert main(["track", "--model", str(model), "--dataset", "otb", "--root", str(fixtures / "otb"), "--sequences", "Football1",
                     "--out", str(tmp_path / "res"), "--name", name]) == 0
    a = np.loadtxt(tmp_path / "res" / "OTB100" / "torch" / "Football1.txt", delimiter=",")
    b = np.loadtxt(tmp_path / "res" / "OTB100" / "onnx" / "Football1.txt", delimiter=",")
    assert a.shape == (74, 4) and np.abs(a - b).max() <= 0.5
    rows = bench([str(ckpt), str(tmp_path / "rpn_onnx")], frames=3, warmup=1)
    assert rows[1]["fps"] > 0 and rows[1]["params"] > 0.99 * rows[0]["params"]
    assert abs(rows[1]["size_mb"] - rows[0]["size_mb"]) <= 0.01 * rows[0]["size_mb"]


def test_missing_search_size_is_one_clear_error(tmp_path):
    export_onnx(build_model("siamrpn@0.25"), tmp_path / "e", check=False)
    net = OnnxNet(tmp_path / "e")
    with pytest.raises(Exception, match="--search-size 271 287"):
        net.search(torch.zeros(1, 3, 287, 287), *net.template_kernels(torch.zeros(1, 3, 127, 127)))
    export_onnx(build_model("siamrpn@0.25"), tmp_path / "f", check=False, search_sizes=[271, 287])
    net = OnnxNet(tmp_path / "f")
    cls, loc = net.search(torch.zeros(1, 3, 287, 287), *net.template_kernels(torch.zeros(1, 3, 127, 127)))
    assert cls.shape[-1] == 21 and loc.shape[1] == 20
    with pytest.raises(Exception, match="not an ONNX export"):
        OnnxNet(tmp_path)
