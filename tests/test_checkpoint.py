"""Checkpoints: the round trip, atomic writes, and one clear error for every kind of bad file."""
import argparse

import pytest
import torch

from dst.models.checkpoint import CKPT_FORMAT, load_checkpoint, save_checkpoint, torch_load
from dst.models.refs import load_model
from dst.models.siamese import size_mb
from dst.models.zoo import build_model, get_spec


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = build_model("siamrpn@0.25").eval()
    for m in net.modules():   # non-trivial running statistics, so a lost buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    return net, save_checkpoint(tmp_path / "rpn.pt", net, meta={"run": "unit"}, epoch=7, optimizer={"lr": 0.01, "m": torch.ones(3)})


def test_round_trip(saved):
    net, path = saved
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CKPT_FORMAT and raw["arch"] == net.spec and raw["meta"]["run"] == "unit"
    assert raw["meta"]["provenance"]["versions"]["torch"]
    model, ck = load_checkpoint(path)
    assert not model.training and ck["epoch"] == 7 and torch.equal(ck["optimizer"]["m"], torch.ones(3))
    for k, v in net.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    z, x = torch.rand(1, 3, 127, 127) * 255, torch.rand(1, 3, 271, 271) * 255
    with torch.no_grad():
        a, b = net(z, x), model.template(z).track(x)
    assert torch.allclose(a["cls"], b[0]) and torch.allclose(a["loc"], b[1])
    assert 0 < path.stat().st_size / 1e6 - size_mb(net) < 0.05


def test_load_model_forms(saved, tmp_path):
    net, path = saved
    assert load_model(path).spec == net.spec
    assert load_model(str(path)).spec == net.spec
    assert load_model("siamrpn@0.25").spec == get_spec("siamrpn@0.25")
    assert load_model(get_spec("siamfc")).family == "siamfc"
    with pytest.raises(ValueError, match="no such file"):
        load_model(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="neither a checkpoint file nor a registered architecture"):
        load_model("resnet")
    with pytest.raises(ValueError, match="scale 'x' is not a number"):
        load_model("siamfc@x")


def test_save_is_atomic(saved, monkeypatch):
    net, path = saved
    before = path.read_bytes()

    def dies(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, build_model("siamfc@0.25"))
    monkeypatch.undo()
    assert path.read_bytes() == before                          # the old checkpoint survives
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # and no temporary file is left behind
    with pytest.raises(ValueError, match="meta must be JSON-able"):
        save_checkpoint(path, net, meta={"t": torch.ones(1)})
    with pytest.raises(ValueError, match="would overwrite the checkpoint's own fields"):
        save_checkpoint(path, net, arch={})


def test_bad_files(saved, tmp_path):
    net, path = saved
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("0.1 0.2 0.3\n")
    torch.save({"model": argparse.Namespace(a=1)}, tmp_path / "pickled.pt")
    cases = {"cut.pt": "is truncated or corrupt", "empty.pt": "is empty", "text.pt": "is not a PyTorch file",
             "pickled.pt": "holds pickled Python objects (argparse.Namespace), not a dst checkpoint or a state_dict",
             "missing.pt": "no such file"}
    for name, msg in cases.items():
        with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")) as e:
            load_checkpoint(tmp_path / name)
        assert name in str(e.value)


def test_wrong_architecture(saved, tmp_path):
    net, path = saved
    raw = torch.load(path, weights_only=True)
    with pytest.raises(ValueError, match=r"different architecture than siamrpn@0.5: arch.backbone.layers\[0\].out: 48 != 96"):
        load_checkpoint(path, arch="siamrpn@0.5")
    # a state_dict that does not match its own spec
    torch.save(dict(raw, state_dict=build_model("siamrpn@0.5").state_dict()), tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match=r"mixed.pt'.s state_dict does not fit.*first shape mismatch: "
                                         r"backbone.layers.0.conv.weight is \[96, 3, 11, 11\] in the file, \[48, 3, 11, 11\]"):
        load_checkpoint(tmp_path / "mixed.pt")
    sd = dict(raw["state_dict"])
    sd.pop("head.loc_adjust.weight")
    sd["head.extra.weight"] = torch.zeros(1)
    torch.save(dict(raw, state_dict=sd), tmp_path / "keys.pt")
    with pytest.raises(ValueError, match=r"1 missing keys: head.loc_adjust.weight; 1 unexpected keys: head.extra.weight"):
        load_checkpoint(tmp_path / "keys.pt")
    # an impossible spec is reported with the file's name
    bad = dict(raw, arch=dict(raw["arch"], template_size=40))
    torch.save(bad, tmp_path / "impossible.pt")
    # 40 -> conv1 (11/2) 15 -> pool 7 -> conv2 (5) 3 -> pool 1 -> conv3 (3) nothing
    with pytest.raises(ValueError, match=r"impossible.pt': its architecture spec is impossible: backbone layer 3: a 1x1 input leaves no output"):
        load_checkpoint(tmp_path / "impossible.pt")
    torch.save(dict(raw, arch={"family": "siamfc"}), tmp_path / "malformed.pt")
    with pytest.raises(ValueError, match="malformed.pt'"):
        load_checkpoint(tmp_path / "malformed.pt")


def test_bare_state_dict_and_foreign_dicts(saved, tmp_path):
    net, path = saved
    torch.save(net.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="holds a bare state_dict"):
        load_checkpoint(tmp_path / "bare.pth")
    model, ck = load_checkpoint(tmp_path / "bare.pth", arch="siamrpn@0.25")
    assert ck["format"] == "state_dict" and torch.equal(model.state_dict()["head.loc_adjust.weight"], net.state_dict()["head.loc_adjust.weight"])
    torch.save({"epoch": 1, "state_dict": net.state_dict()}, tmp_path / "snapshot.pth")
    with pytest.raises(ValueError, match="not a dst checkpoint: it holds a dict with keys epoch, state_dict"):
        load_checkpoint(tmp_path / "snapshot.pth")
    assert set(torch_load(tmp_path / "snapshot.pth")) == {"epoch", "state_dict"}


def test_tracker_conventions_in_meta(saved, tmp_path):
    """A model dst saved records dst's own tracker conventions; a file without them reads as dst's; bad ones are refused."""
    from dst.core import DSTError
    from dst.models.checkpoint import DST_TRACKER, tracker_meta
    from dst.track.trackers import make_tracker
    net, path = saved
    ck = torch.load(path, weights_only=True)
    assert ck["meta"]["tracker"] == DST_TRACKER and ck["meta"]["tracker"]["crop"] == "subpixel"
    del ck["meta"]["tracker"]                                   # a checkpoint written before the field existed
    old = tmp_path / "old.pt"
    torch.save(ck, old)
    assert tracker_meta(load_checkpoint(old)[1]) == DST_TRACKER
    p = save_checkpoint(tmp_path / "rgb.pt", net, meta={"tracker": {"input": {"channels": "RGB"}, "hp": {"lr": 0.2}}})
    t = make_tracker(str(p), precision="fp32")
    assert (t.conventions["input"]["channels"], t.conventions["crop"], t.hp["lr"], t.precision) == ("RGB", "subpixel", 0.2, "fp32")
    assert make_tracker(str(p), {"lr": 0.5}).hp["lr"] == 0.5   # --hp wins over the checkpoint
    with pytest.raises(DSTError, match=r"meta\['tracker'\]\['crop'\] is 'warp'"):
        save_checkpoint(tmp_path / "bad.pt", net, meta={"tracker": {"crop": "warp"}})
    bad = save_checkpoint(tmp_path / "badhp.pt", net, meta={"tracker": {"hp": {"windw": 1}}})
    with pytest.raises(DSTError, match=r"unknown hyper-parameter\(s\) \['windw'\]"):
        make_tracker(str(bad))
