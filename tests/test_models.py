"""The model zoo from the outside: `dst models --json`, every architecture's shapes, inference == training
pass, and clear errors for impossible specs."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dst.core import DSTError
from dst.models.siamese import SiamNet
from dst.models.zoo import ARCHS, build_model, get_spec, shrink

DST = str(Path(sys.executable).parent / "dst")


def test_dst_models_json_gives_the_papers_sizes():
    r = subprocess.run([DST, "models", "--json"], capture_output=True, text=True, check=True)
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(ARCHS) <= set(rows)
    for name, paper in {"siamrpn": 361.8, "siamrpn_half": 90.6, "siamfc": 9.4, "siamfc_half": 2.4}.items():
        assert rows[name]["paper_size_mb"] == paper
        assert abs(rows[name]["size_mb"] - paper) <= 0.1, (name, rows[name]["size_mb"])
    # the halved teachers are about a quarter of the teachers (channels^2)
    assert 0.24 < rows["siamrpn_half"]["size_mb"] / rows["siamrpn"]["size_mb"] < 0.26


EXPECTED = {  # response size and cls/loc channels for 5 anchors
    "siamfc": (17, 1, None), "siamfc_half": (17, 1, None), "siamrpn": (19, 10, 20), "siamrpn_half": (19, 10, 20),
    "siamrpn_alex_dw": (17, 10, 20), "siamrpnpp_r18": (25, 10, 20), "siamrpnpp_r50": (25, 10, 20),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_and_inference_equals_training(name):
    torch.manual_seed(0)
    m = build_model(name).eval()
    r, c, l = EXPECTED[name]
    z = torch.randn(2, 3, 127, 127)
    x = torch.randn(2, 3, m.spec["search_size"], m.spec["search_size"])
    with torch.inference_mode():
        out = m(z, x)
        cls, loc = m.template(z).track(x)
    assert out["cls"].shape == (2, c, r, r) and m.response_size == r
    assert (loc is None) == (l is None) and (l is None or loc.shape == (2, l, r, r))
    torch.testing.assert_close(cls, out["cls"], rtol=1e-4, atol=1e-4)
    # every backbone layer's features on both branches, for the STR loss
    assert len(out["zf"]) == len(out["xf"]) == len(m.backbone.channels)
    assert [f.shape[1] for f in out["xf"]] == m.backbone.channels


def test_big_variant_has_four_times_the_rpn_channels():
    big, base = build_model("siamrpnpp_big"), build_model("siamrpnpp_r50")
    assert big.head.rpns[0].cls.conv_kernel[0].out_channels == 4 * base.head.rpns[0].cls.conv_kernel[0].out_channels
    assert big.backbone.channels == base.backbone.channels


def test_students_are_shrunken_teachers():
    t, s = get_spec("siamfc"), get_spec("siamfc@0.5")
    assert [l["out"] for l in s["backbone"]["layers"]] == [l["out"] // 2 for l in t["backbone"]["layers"]]
    assert [l["kernel"] for l in s["backbone"]["layers"]] == [l["kernel"] for l in t["backbone"]["layers"]]
    r50 = shrink(get_spec("siamrpnpp_r50"), 0.5)
    assert r50["backbone"]["widths"] == [32, 32, 64, 128, 256] and r50["head"]["hidden"] == [128] * 3
    SiamNet(r50)  # builds


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["backbone"]["layers"][0].update(kernel=200), "layer 1: a 127x127 input leaves no output"),
    (lambda s: s["backbone"]["layers"][1].update(out=255), "groups=2 must divide"),
    (lambda s: s["backbone"]["layers"][2].update(out=0), "`out` must be a positive integer"),
    (lambda s: s.update(search_size=120), "larger than search features"),
    (lambda s: s["head"].update(type="uprpn"), "needs head type 'fc'"),
    (lambda s: s["backbone"].update(type="vgg"), "backbone type 'vgg' is unknown"),
    (lambda s: s.update(template_size=object()), "not JSON-able"),
])
def test_impossible_specs_get_one_clear_error(edit, message):
    spec = copy.deepcopy(get_spec("siamfc"))
    edit(spec)
    with pytest.raises(DSTError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SiamNet(spec)


def test_unknown_names_and_scales():
    with pytest.raises(DSTError, match="unknown architecture 'alexnet'"):
        get_spec("alexnet")
    with pytest.raises(DSTError, match="scale must be in"):
        get_spec("siamfc@0")
    r = subprocess.run([DST, "models", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("dst models: error: unknown architecture 'nope'")
