"""`dst convert` against the public projects' own network definitions.

The reference modules below restate, from the facts of each project's published code (module names, layer order,
shapes, paddings, eps), the networks whose weights users download: DaSiamRPN `code/net.py`, siamfc-pytorch
`siamfc/backbones.py` + `heads.py` + `siamfc.py` (`Net`), pysot `models/backbone/alexnet.py` (AlexNetLegacy),
`resnet_atrous.py`, `neck/neck.py`, `head/rpn.py` and `model_builder.py`. Each test saves a reference's state_dict
the way that project does, converts it with `dst convert`, and checks that our network gives the same outputs on
the same inputs (eval mode, random batch-norm statistics). Full-size models whose numerics would be slow
(SiamRPNBIG, a full ResNet-50) are checked on shapes only, built on the `meta` device.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dst.cli import main
from dst.models.checkpoint import load_checkpoint
from dst.models.convert import convert_state_dict


# ---------------------------------------------------------------- reference modules
class RefDaSiamRPN(nn.Module):
    """DaSiamRPN SiamRPN(size, feature_out, anchor): `featureExtract` Sequential, conv_r1/r2, conv_cls1/2, regress_adjust."""

    def __init__(self, size=1, feature_out=256, anchor=5):
        super().__init__()
        c = [3] + [n * size for n in (96, 256, 384, 384, 256)]
        self.featureExtract = nn.Sequential(
            nn.Conv2d(c[0], c[1], 11, stride=2), nn.BatchNorm2d(c[1]), nn.MaxPool2d(3, 2), nn.ReLU(inplace=True),
            nn.Conv2d(c[1], c[2], 5), nn.BatchNorm2d(c[2]), nn.MaxPool2d(3, 2), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], 3), nn.BatchNorm2d(c[3]), nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], 3), nn.BatchNorm2d(c[4]), nn.ReLU(inplace=True),
            nn.Conv2d(c[4], c[5], 3), nn.BatchNorm2d(c[5]))
        self.anchor, self.feature_out = anchor, feature_out
        self.conv_r1 = nn.Conv2d(c[5], feature_out * 4 * anchor, 3)
        self.conv_r2 = nn.Conv2d(c[5], feature_out, 3)
        self.conv_cls1 = nn.Conv2d(c[5], feature_out * 2 * anchor, 3)
        self.conv_cls2 = nn.Conv2d(c[5], feature_out, 3)
        self.regress_adjust = nn.Conv2d(4 * anchor, 4 * anchor, 1)

    def temple(self, z):
        zf = self.featureExtract(z)
        r1, c1 = self.conv_r1(zf), self.conv_cls1(zf)
        k = r1.shape[-1]
        self.r1_kernel = r1.view(self.anchor * 4, self.feature_out, k, k)
        self.cls1_kernel = c1.view(self.anchor * 2, self.feature_out, k, k)

    def forward(self, x):   # (delta, score), batch 1 as in DaSiamRPN
        xf = self.featureExtract(x)
        return (self.regress_adjust(F.conv2d(self.conv_r2(xf), self.r1_kernel)),
                F.conv2d(self.conv_cls2(xf), self.cls1_kernel))


class BN6(nn.BatchNorm2d):
    """siamfc-pytorch's _BatchNorm2d: eps 1e-6, momentum 0.05."""

    def __init__(self, n):
        super().__init__(n, eps=1e-6, momentum=0.05)


class RefAlexNetV1(nn.Module):
    """siamfc-pytorch AlexNetV1: conv1..conv5 Sequentials (conv, BN, ReLU[, MaxPool]); conv5 a lone grouped conv."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 96, 11, 2), BN6(96), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.conv2 = nn.Sequential(nn.Conv2d(96, 256, 5, 1, groups=2), BN6(256), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.conv3 = nn.Sequential(nn.Conv2d(256, 384, 3, 1), BN6(384), nn.ReLU(inplace=True))
        self.conv4 = nn.Sequential(nn.Conv2d(384, 384, 3, 1, groups=2), BN6(384), nn.ReLU(inplace=True))
        self.conv5 = nn.Sequential(nn.Conv2d(384, 256, 3, 1, groups=2))

    def forward(self, x):
        return self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))


class RefAlexNetV3(nn.Module):
    """siamfc-pytorch AlexNetV3: 192/512/768/768/512, no groups, BN after conv5."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 192, 11, 2), BN6(192), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.conv2 = nn.Sequential(nn.Conv2d(192, 512, 5, 1), BN6(512), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.conv3 = nn.Sequential(nn.Conv2d(512, 768, 3, 1), BN6(768), nn.ReLU(inplace=True))
        self.conv4 = nn.Sequential(nn.Conv2d(768, 768, 3, 1), BN6(768), nn.ReLU(inplace=True))
        self.conv5 = nn.Sequential(nn.Conv2d(768, 512, 3, 1), BN6(512))


class RefSiamFCHead(nn.Module):
    """siamfc-pytorch heads.SiamFC: out_scale * batched cross-correlation (the batch folded into groups)."""

    def __init__(self, out_scale=0.001):
        super().__init__()
        self.out_scale = out_scale

    def forward(self, z, x):
        nz = z.size(0)
        nx, c, h, w = x.size()
        out = F.conv2d(x.view(-1, nz * c, h, w), z, groups=nz)
        return self.out_scale * out.view(nx, -1, out.size(-2), out.size(-1))


class RefSiamFCNet(nn.Module):
    """siamfc-pytorch siamfc.Net: backbone + head."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, z, x):
        return self.head(self.backbone(z), self.backbone(x))


class RefAlexNetLegacy(nn.Module):
    """pysot AlexNetLegacy: one `features` Sequential with DaSiamRPN's layout (BN, then pool, then ReLU)."""

    def __init__(self, width_mult=1):
        super().__init__()
        c = [3] + [int(n * width_mult) for n in (96, 256, 384, 384, 256)]
        self.features = nn.Sequential(
            nn.Conv2d(c[0], c[1], kernel_size=11, stride=2), nn.BatchNorm2d(c[1]), nn.MaxPool2d(3, 2), nn.ReLU(inplace=True),
            nn.Conv2d(c[1], c[2], kernel_size=5), nn.BatchNorm2d(c[2]), nn.MaxPool2d(3, 2), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], kernel_size=3), nn.BatchNorm2d(c[3]), nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], kernel_size=3), nn.BatchNorm2d(c[4]), nn.ReLU(inplace=True),
            nn.Conv2d(c[4], c[5], kernel_size=3), nn.BatchNorm2d(c[5]))

    def forward(self, x):
        return self.features(x)


class RefAlexNetPysot(nn.Module):
    """pysot's newer AlexNet: layer1..layer5 Sequentials (conv, BN[, pool], ReLU)."""

    def __init__(self, width_mult=1):
        super().__init__()
        c = [3] + [int(n * width_mult) for n in (96, 256, 384, 384, 256)]
        self.layer1 = nn.Sequential(nn.Conv2d(c[0], c[1], 11, 2), nn.BatchNorm2d(c[1]), nn.MaxPool2d(3, 2), nn.ReLU(inplace=True))
        self.layer2 = nn.Sequential(nn.Conv2d(c[1], c[2], 5), nn.BatchNorm2d(c[2]), nn.MaxPool2d(3, 2), nn.ReLU(inplace=True))
        self.layer3 = nn.Sequential(nn.Conv2d(c[2], c[3], 3), nn.BatchNorm2d(c[3]), nn.ReLU(inplace=True))
        self.layer4 = nn.Sequential(nn.Conv2d(c[3], c[4], 3), nn.BatchNorm2d(c[4]), nn.ReLU(inplace=True))
        self.layer5 = nn.Sequential(nn.Conv2d(c[4], c[5], 3), nn.BatchNorm2d(c[5]))


class RefBottleneck(nn.Module):
    """pysot resnet_atrous.Bottleneck: padding 2 - stride; dilation halved in a stage's first (downsampling) block."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        padding = 2 - stride
        if downsample is not None and dilation > 1:
            dilation = dilation // 2
            padding = dilation
        if dilation > 1:
            padding = dilation
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=padding, bias=False, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class RefResNetAtrous(nn.Module):
    """pysot resnet_atrous.ResNet (Bottleneck): unpadded 7x7 stem, layer2 stride 2, layer3/4 dilation 2/4.

    `widths` = (stem, planes of layer1..4) is (64, 64, 128, 256, 512) in pysot; the tests shrink it to stay fast,
    which changes only channel counts, never names or the computation's form."""

    def __init__(self, layers=(3, 4, 6, 3), used_layers=(2, 3, 4), widths=(64, 64, 128, 256, 512)):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(widths[1], layers[0])
        self.layer2 = self._make_layer(widths[2], layers[1], stride=2)
        self.layer3 = self._make_layer(widths[3], layers[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(widths[4], layers[3], stride=1, dilation=4)
        self.used_layers = list(used_layers)

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            if stride == 1 and dilation == 1:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                                           nn.BatchNorm2d(planes * 4))
            else:
                dd, padding = (dilation // 2, dilation // 2) if dilation > 1 else (1, 0)
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, kernel_size=3, stride=stride, bias=False,
                                                     padding=padding, dilation=dd), nn.BatchNorm2d(planes * 4))
        layers = [RefBottleneck(self.inplanes, planes, stride, downsample, dilation=dilation)]
        self.inplanes = planes * 4
        layers += [RefBottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x_ = self.relu(self.bn1(self.conv1(x)))
        p1 = self.layer1(self.maxpool(x_))
        p2 = self.layer2(p1)
        p3 = self.layer3(p2)
        p4 = self.layer4(p3)
        out = [x_, p1, p2, p3, p4]
        return [out[i] for i in self.used_layers]


class RefAdjustLayer(nn.Module):
    """pysot neck.AdjustLayer: 1x1 conv + BN; maps narrower than 20 pixels (the template's) are cropped to 7x7."""

    def __init__(self, cin, cout, center_size=7):
        super().__init__()
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, bias=False), nn.BatchNorm2d(cout))
        self.center_size = center_size

    def forward(self, x):
        x = self.downsample(x)
        if x.size(3) < 20:
            l = (x.size(3) - self.center_size) // 2
            x = x[:, :, l:l + self.center_size, l:l + self.center_size]
        return x


class RefAdjustAllLayer(nn.Module):
    """pysot neck.AdjustAllLayer: one AdjustLayer per used layer, named downsample2, downsample3, ..."""

    def __init__(self, cins, couts):
        super().__init__()
        self.num = len(couts)
        for i in range(self.num):
            self.add_module(f"downsample{i + 2}", RefAdjustLayer(cins[i], couts[i]))

    def forward(self, feats):
        return [getattr(self, f"downsample{i + 2}")(f) for i, f in enumerate(feats)]


def xcorr_depthwise_ref(x, kernel):
    b, c = kernel.shape[:2]
    out = F.conv2d(x.reshape(1, b * c, x.size(2), x.size(3)), kernel.reshape(b * c, 1, kernel.size(2), kernel.size(3)), groups=b * c)
    return out.reshape(b, c, out.size(2), out.size(3))


class RefDepthwiseXCorr(nn.Module):
    """pysot head.rpn.DepthwiseXCorr: conv_kernel / conv_search (3x3 conv, BN, ReLU), depth-wise xcorr, 1x1 head."""

    def __init__(self, cin, hidden, cout, kernel_size=3):
        super().__init__()
        self.conv_kernel = nn.Sequential(nn.Conv2d(cin, hidden, kernel_size, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.conv_search = nn.Sequential(nn.Conv2d(cin, hidden, kernel_size, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Conv2d(hidden, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, cout, 1))

    def forward(self, kernel, search):
        return self.head(xcorr_depthwise_ref(self.conv_search(search), self.conv_kernel(kernel)))


class RefDepthwiseRPN(nn.Module):
    def __init__(self, anchor_num=5, in_channels=256, out_channels=256):
        super().__init__()
        self.cls = RefDepthwiseXCorr(in_channels, out_channels, 2 * anchor_num)
        self.loc = RefDepthwiseXCorr(in_channels, out_channels, 4 * anchor_num)

    def forward(self, z_f, x_f):
        return self.cls(z_f, x_f), self.loc(z_f, x_f)


class RefMultiRPN(nn.Module):
    """pysot head.rpn.MultiRPN: rpn2, rpn3, ... and, when weighted, softmax-normalised cls_weight / loc_weight."""

    def __init__(self, anchor_num, in_channels, weighted=False):
        super().__init__()
        self.weighted = weighted
        for i, c in enumerate(in_channels):
            self.add_module(f"rpn{i + 2}", RefDepthwiseRPN(anchor_num, c, c))
        if weighted:
            self.cls_weight = nn.Parameter(torch.ones(len(in_channels)))
            self.loc_weight = nn.Parameter(torch.ones(len(in_channels)))

    def forward(self, z_fs, x_fs):
        cls, loc = zip(*[getattr(self, f"rpn{i + 2}")(z, x) for i, (z, x) in enumerate(zip(z_fs, x_fs))])
        if not self.weighted:
            return sum(cls) / len(cls), sum(loc) / len(loc)
        wc, wl = F.softmax(self.cls_weight, 0), F.softmax(self.loc_weight, 0)
        return sum(c * w for c, w in zip(cls, wc)), sum(l * w for l, w in zip(loc, wl))


class RefModelBuilder(nn.Module):
    """pysot ModelBuilder: backbone, optional neck, rpn_head; template(z) then track(x) -> {'cls', 'loc'}."""

    def __init__(self, backbone, neck, rpn_head):
        super().__init__()
        self.backbone = backbone
        if neck is not None:
            self.neck = neck
        self.rpn_head = rpn_head

    def template(self, z):
        zf = self.backbone(z)
        self.zf = self.neck(zf) if hasattr(self, "neck") else zf

    def track(self, x):
        xf = self.backbone(x)
        xf = self.neck(xf) if hasattr(self, "neck") else xf
        cls, loc = self.rpn_head(self.zf, xf)
        return {"cls": cls, "loc": loc}


# ---------------------------------------------------------------- helpers
def randomize(m, seed=0):
    """Random weights, biases, affine BN parameters and running statistics; eval mode."""
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            fan_in = mod.weight[0].numel()
            mod.weight.data = torch.randn(mod.weight.shape, generator=g) * math.sqrt(2.0 / fan_in)
            if mod.bias is not None:
                mod.bias.data = 0.1 * torch.randn(mod.bias.shape, generator=g)
        elif isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.weight.data = 1 + 0.2 * torch.randn(n, generator=g)
            mod.bias.data = 0.1 * torch.randn(n, generator=g)
            mod.running_mean = 0.2 * torch.randn(n, generator=g)
            mod.running_var = 0.5 + torch.rand(n, generator=g)
    for name, p in m.named_parameters():
        if name.endswith(("cls_weight", "loc_weight")):
            p.data = torch.randn(p.shape, generator=g)
    return m.eval()


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def convert(src, out, *extra):
    assert main(["convert", str(src), str(out), *extra]) == 0
    return load_checkpoint(out)


# ---------------------------------------------------------------- DaSiamRPN
def test_dasiamrpn_vot_outputs_match(tmp_path, capsys):
    torch.manual_seed(0)
    ref = randomize(RefDaSiamRPN(size=1, feature_out=256))
    sd = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}   # PyTorch 0.3 had none
    src = tmp_path / "SiamRPNVOT.model"
    torch.save(sd, src, _use_new_zipfile_serialization=False)   # the legacy serialization of the released files
    net, ck = convert(src, tmp_path / "vot.pt")
    out = capsys.readouterr().out
    assert "dasiamrpn SiamRPNvot" in out and "siamrpn_half" in out
    meta = ck["meta"]["source"]
    assert meta["variant"] == "SiamRPNvot" and meta["tracker"]["penalty_k"] == 0.04 and meta["tracker"]["lr"] == 0.45
    assert meta["tracker"]["window_influence"] == 0.44 and meta["tracker"]["adaptive"] is False
    assert meta["input"]["channels"] == "BGR" and len(meta["sha256"]) == 64
    z, x = 255 * torch.rand(1, 3, 127, 127), 255 * torch.rand(1, 3, 271, 271)
    with torch.no_grad():
        ref.temple(z)
        delta, score = ref(x)
        cls, loc = net.template(z).track(x)
    assert cls.shape == score.shape == (1, 10, 19, 19)
    assert rel_diff(cls, score) < 1e-4 and rel_diff(loc, delta) < 1e-4


def test_dasiamrpn_big_recognised_from_shapes():
    with torch.device("meta"):
        big = RefDaSiamRPN(size=2, feature_out=512).state_dict()
    spec, ours, meta, pairs = convert_state_dict(big, "dasiamrpn", hint="SiamRPNBIG.model")
    assert spec["name"] == "siamrpn" and meta["source"]["variant"] == "SiamRPNBIG"
    t = meta["source"]["tracker"]
    assert (t["lr"], t["window_influence"], t["penalty_k"], t["instance_size"], t["adaptive"]) == (0.295, 0.42, 0.055, 271, True)
    assert len(pairs) == len(big)
    assert abs(sum(v.numel() * 4 for v in ours.values() if v.is_floating_point()) / 1e6 - 361.8) < 0.05


def test_dasiamrpn_otb_by_name_and_variant_flag(tmp_path):
    with torch.device("meta"):
        sd = RefDaSiamRPN().state_dict()
    assert convert_state_dict(sd, hint="SiamRPNOTB.model")[2]["source"]["tracker"]["penalty_k"] == 0.22
    assert convert_state_dict(sd, variant="SiamRPNotb")[2]["source"]["variant"] == "SiamRPNotb"
    amb = convert_state_dict(sd, hint="weights.model")[2]["source"]
    assert amb["variant"] == "SiamRPNvot|SiamRPNotb" and amb["tracker"] is None and "--variant" in amb["note"]


# ---------------------------------------------------------------- siamfc-pytorch
def test_siamfc_pytorch_outputs_match(tmp_path):
    torch.manual_seed(1)
    ref = randomize(RefSiamFCNet(RefAlexNetV1(), RefSiamFCHead(0.001)), seed=1)
    src = tmp_path / "siamfc_alexnet_e50.pth"
    torch.save(ref.state_dict(), src)
    net, ck = convert(src, tmp_path / "siamfc.pt")
    assert net.spec["name"] == "siamfc" and ck["meta"]["source"]["variant"] == "AlexNetV1"
    assert ck["meta"]["source"]["tracker"]["scale_step"] == 1.0375 and ck["meta"]["source"]["input"]["channels"] == "RGB"
    z, x = 255 * torch.rand(2, 3, 127, 127), 255 * torch.rand(2, 3, 255, 255)
    with torch.no_grad():
        want = ref(z, x)
        got = net(z, x)["cls"]
    assert got.shape == want.shape == (2, 1, 17, 17)
    assert rel_diff(got, want) < 1e-4


def test_siamfc_pytorch_v3_and_v2():
    with torch.device("meta"):
        v3 = RefSiamFCNet(RefAlexNetV3(), RefSiamFCHead()).state_dict()
    spec, _, meta, _ = convert_state_dict(v3)
    assert meta["source"]["variant"] == "AlexNetV3" and spec["backbone"]["layers"][4]["bn"] and spec["backbone"]["bn_eps"] == 1e-6
    v2 = {k: (torch.empty(32, 192, 3, 3, device="meta") if k == "backbone.conv5.0.weight" else
              torch.empty(32, device="meta") if k == "backbone.conv5.0.bias" else v)
          for k, v in RefSiamFCNet(RefAlexNetV1(), RefSiamFCHead()).to("meta").state_dict().items()}
    with pytest.raises(ValueError, match="AlexNetV2"):
        convert_state_dict(v2)


# ---------------------------------------------------------------- pysot
def test_pysot_alex_dwxcorr_outputs_match(tmp_path):
    torch.manual_seed(2)
    ref = randomize(RefModelBuilder(RefAlexNetLegacy(), None, RefDepthwiseRPN(5, 256, 256)), seed=2)
    src = tmp_path / "model.pth"
    # a training snapshot of a DataParallel model: wrapped and prefixed
    torch.save({"epoch": 20, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "optimizer": {}}, src)
    net, ck = convert(src, tmp_path / "alex.pt", "--format", "pysot")
    assert net.spec["name"] == "siamrpn_alex_dw"
    src_meta = ck["meta"]["source"]
    assert src_meta["variant"] == "siamrpn_alex_dwxcorr" and src_meta["backbone"] == "alexnetlegacy"
    assert src_meta["tracker"]["instance_size"] == 287 and src_meta["tracker"]["penalty_k"] == 0.16
    z, x = 255 * torch.rand(1, 3, 127, 127), 255 * torch.rand(1, 3, 287, 287)   # pysot tracks this model at 287
    with torch.no_grad():
        ref.template(z)
        want = ref.track(x)
        cls, loc = net.template(z).track(x)
    assert cls.shape == want["cls"].shape == (1, 10, 21, 21)
    assert rel_diff(cls, want["cls"]) < 1e-4 and rel_diff(loc, want["loc"]) < 1e-4


def test_pysot_alexnet_layered_names():
    with torch.device("meta"):
        sd = RefModelBuilder(RefAlexNetPysot(), None, RefDepthwiseRPN()).state_dict()
    spec, _, meta, pairs = convert_state_dict(sd, "pysot")
    assert spec["name"] == "siamrpn_alex_dw" and meta["source"]["backbone"] == "alexnet"
    assert ("backbone.layer2.1.running_var", "backbone.layers.1.bn.running_var") in pairs


def _r50(widths, neck_out, weighted=True):
    chans = [w * 4 for w in widths[2:]]
    return RefModelBuilder(RefResNetAtrous(widths=widths), RefAdjustAllLayer(chans, neck_out),
                           RefMultiRPN(5, neck_out, weighted=weighted))


def test_pysot_r50_l234_outputs_match(tmp_path):
    torch.manual_seed(3)
    widths, neck = (8, 8, 16, 32, 64), [16, 16, 16]   # pysot's r50 at an eighth of its width
    ref = randomize(_r50(widths, neck), seed=3)
    src = tmp_path / "model.pth"
    torch.save(ref.state_dict(), src)                     # released models are plain state_dicts
    net, ck = convert(src, tmp_path / "r50.pt")
    assert net.used == [2, 3, 4] and net.spec["neck"]["out"] == neck and net.spec["backbone"]["widths"] == list(widths)
    assert ck["meta"]["source"]["variant"] == "siamrpn_r50_l234_dwxcorr"
    z, x = 255 * torch.rand(1, 3, 127, 127), 255 * torch.rand(1, 3, 255, 255)
    with torch.no_grad():
        ref.template(z)
        want = ref.track(x)
        cls, loc = net.template(z).track(x)
        feats = net.backbone(x)
        ref_feats = ref.backbone.forward(x)
    assert cls.shape == want["cls"].shape == (1, 10, 25, 25)
    for a, b in zip(feats[2:], ref_feats):
        assert rel_diff(a, b) < 1e-4                          # stages 2-4, including the dilated ones
    assert rel_diff(cls, want["cls"]) < 1e-4 and rel_diff(loc, want["loc"]) < 1e-4


@pytest.mark.parametrize("neck,weighted,variant,name", [
    ([256, 256, 256], True, "siamrpn_r50_l234_dwxcorr", "siamrpnpp_r50"),
    ([256, 256, 256], False, "siamrpn_r50_l234_dwxcorr_otb", None),
    ([128, 256, 512], True, "siamrpn_r50_l234_dwxcorr_lt", None)])
def test_pysot_r50_full_size_recognised(neck, weighted, variant, name):
    with torch.device("meta"):
        sd = _r50((64, 64, 128, 256, 512), neck, weighted).state_dict()
    spec, ours, meta, pairs = convert_state_dict(sd, "pysot")
    assert meta["source"]["variant"] == variant and meta["source"]["backbone"] == "resnet50"
    assert spec["name"] == (name or f"pysot:{variant}")
    assert spec["neck"]["out"] == neck and spec["head"]["hidden"] == neck and spec["head"]["weighted"] is weighted
    assert ("neck.downsample3.downsample.1.weight", "neck.layers.1.1.weight") in pairs
    assert ("rpn_head.rpn4.loc.head.3.bias", "head.rpns.2.loc.head.3.bias") in pairs
    assert len(pairs) == len(sd) and meta["source"]["tracker"]["exemplar_size"] == 127


# ---------------------------------------------------------------- bad input
def test_bad_inputs(tmp_path, capsys):
    import argparse
    torch.save({"args": argparse.Namespace(lr=0.1), "w": torch.zeros(1)}, tmp_path / "pickled.pth")
    assert main(["convert", str(tmp_path / "pickled.pth"), str(tmp_path / "o.pt")]) == 2
    assert "holds pickled Python objects (argparse.Namespace)" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "nope.model"), str(tmp_path / "o.pt")]) == 2
    assert "nope.model': no such file" in capsys.readouterr().err
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    assert main(["convert", str(tmp_path / "other.pth"), str(tmp_path / "o.pt")]) == 2
    assert "weights not recognised" in capsys.readouterr().err
    with torch.device("meta"):
        sd = RefModelBuilder(RefAlexNetLegacy(), None, RefDepthwiseRPN()).state_dict()
    mask = dict(sd, **{"mask_head.conv.weight": torch.empty(1, device="meta")})
    with pytest.raises(ValueError, match="SiamMask"):
        convert_state_dict(mask, "pysot")
    extra = dict(sd, **{"rpn_head.extra.weight": torch.empty(1, device="meta")})
    with pytest.raises(ValueError, match=r"1 tensors belong to no part .*rpn_head.extra.weight"):
        convert_state_dict(extra, "pysot")
    wrong = dict(sd, **{"rpn_head.cls.conv_search.0.weight": torch.empty(128, 256, 3, 3, device="meta")})
    with pytest.raises(ValueError, match=r"first shape mismatch: head.rpns.0.cls.conv_search.0.weight is \[128, 256, 3, 3\]"):
        convert_state_dict(wrong, "pysot")
    assert not (tmp_path / "o.pt").exists()                   # nothing written on failure


def test_converted_meta_carries_the_reference_tracker():
    """`meta['tracker']`: each reference's crop rule, box convention, clipping, colour order and hyper-parameters (dst names)."""
    from dst.track.trackers import SIAMFC_HP, SIAMRPN_HP, SIAMRPNPP_HP
    with torch.device("meta"):
        big = RefDaSiamRPN(size=2, feature_out=512).state_dict()
        fc = RefSiamFCNet(RefAlexNetV1(), RefSiamFCHead()).state_dict()
        alex = RefModelBuilder(RefAlexNetLegacy(), None, RefDepthwiseRPN(5, 256, 256)).state_dict()
    t = convert_state_dict(big, hint="SiamRPNBIG.model")[2]["tracker"]
    assert (t["crop"], t["box"], t["clip"], t["input"]["channels"]) == ("dasiamrpn", "corner", "edge", "BGR")
    assert (t["hp"]["instance_size"], t["hp"]["adaptive"], t["hp"]["small_instance"], t["hp"]["penalty_k"]) == (271, True, 287, 0.055)
    t = convert_state_dict(fc)[2]["tracker"]
    assert (t["crop"], t["box"], t["clip"], t["input"]["channels"]) == ("siamfc-pytorch", "pixel-centre", "none", "RGB")
    assert set(t["hp"]) <= set(SIAMFC_HP) and t["hp"]["scale_step"] == 1.0375
    t = convert_state_dict(alex, "pysot")[2]["tracker"]
    assert (t["crop"], t["box"], t["clip"]) == ("pysot", "pysot", "edge")
    assert {k: t["hp"][k] for k in ("penalty_k", "window_influence", "lr", "instance_size", "adaptive")} == \
        dict(penalty_k=0.16, window_influence=0.40, lr=0.30, instance_size=287, adaptive=False)
    assert set(t["hp"]) <= set(SIAMRPNPP_HP) == set(SIAMRPN_HP)
    ambiguous = convert_state_dict(RefDaSiamRPN().to("meta").state_dict(), "dasiamrpn")[2]["tracker"]
    assert ambiguous["crop"] == "dasiamrpn" and ambiguous["hp"] == {}     # SiamRPNvot|SiamRPNotb: conventions, dst's hp
