"""`dst export-onnx`: two graphs per tracker, checked against PyTorch with onnxruntime on the CPU."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dst.cli import main
from dst.models.checkpoint import save_checkpoint
from dst.models.export import export_onnx
from dst.models.zoo import build_model


def _run(folder, z, x):
    """The ONNX pipeline: template graph, then its kernels into the search graph."""
    st = ort.InferenceSession(str(folder / "template.onnx"), providers=["CPUExecutionProvider"])
    ss = ort.InferenceSession(str(folder / "search.onnx"), providers=["CPUExecutionProvider"])
    ks = st.run(None, {"z": z.numpy()})
    names = [i.name for i in ss.get_inputs()]
    return ss.run(None, dict(zip(names, [x.numpy(), *ks])))


def test_cli_from_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    net = build_model("siamrpn@0.25").eval()
    ckpt = save_checkpoint(tmp_path / "rpn.pt", net)
    assert main(["export-onnx", "--model", str(ckpt), "--out", str(tmp_path / "onnx")]) == 0
    out = capsys.readouterr().out
    assert "max abs diff: kernel_cls" in out and "template.onnx" in out and "search.onnx" in out
    man = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    assert man["opset"] == 17 and man["search"]["outputs"] == {"cls": [1, 10, 19, 19], "loc": [1, 20, 19, 19]}
    # our own comparison, independent of the one the command printed
    z, x = torch.rand(1, 3, 127, 127) * 255, torch.rand(1, 3, 271, 271) * 255
    cls, loc = _run(tmp_path / "onnx", z, x)
    with torch.no_grad():
        want = net.template(z).track(x)
    for got, ref in zip((cls, loc), want):
        assert np.abs(got - ref.numpy()).max() <= 1e-4 * max(1.0, ref.abs().max().item())
    m = onnx.load(str(tmp_path / "onnx" / "template.onnx"))
    assert m.opset_import[0].version == 17
    assert json.loads({p.key: p.value for p in m.metadata_props}["dst_arch"]) == net.spec


@pytest.mark.parametrize("name,kernels,outputs", [("siamfc@0.25", 1, 1), ("siamrpn_alex_dw@0.25", 2, 2), ("siamrpnpp_r18@0.25", 6, 2)])
def test_every_family(tmp_path, name, kernels, outputs):
    man = export_onnx(name, tmp_path)
    diffs = {k: v for k, v in man["check"].items() if "rel_diff" in v}
    assert len(diffs) == kernels + outputs and all(v["rel_diff"] < 1e-5 for v in diffs.values()), diffs
    assert len(man["template"]["outputs"]) == kernels and len(man["search"]["outputs"]) == outputs


def test_export_leaves_model_untouched(tmp_path):
    net = build_model("siamrpn_alex_dw@0.25")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    export_onnx(net, tmp_path, check=False)
    assert not net.training
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_bad_input(tmp_path, capsys):
    assert main(["export-onnx", "--model", "nosuchnet", "--out", str(tmp_path)]) == 2
    assert "neither a checkpoint file nor a registered architecture" in capsys.readouterr().err
    assert main(["export-onnx", "--model", str(tmp_path / "gone.pt"), "--out", str(tmp_path)]) == 2
    assert "gone.pt': no such file" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_text("not weights")
    assert main(["export-onnx", "--model", str(tmp_path / "junk.pt"), "--out", str(tmp_path)]) == 2
    assert "is not a PyTorch file" in capsys.readouterr().err
