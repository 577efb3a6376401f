"""Converted public checkpoints track as their reference trackers do (issue 13).

Each test takes a reference network (the restatements in `test_convert.py`) with seeded random weights and
non-identity batch-norm statistics, saves it in its project's own checkpoint format, converts it with
`dst convert`, and runs dst's tracker (`make_tracker(checkpoint)`) beside an independent restatement of the
reference tracker on a real fixture, from the same first box. The boxes must agree within 0.5 px on every frame.

The reference trackers below are written from reading the public code for its facts (never copied):
DaSiamRPN `code/run_SiamRPN.py` + `code/utils.py` (a Python 2.7 program: `round` breaks ties away from zero and
`score_size / 2` is an integer division), siamfc-pytorch `siamfc/siamfc.py` + `siamfc/ops.py` (RGB frames, 1-based
boxes), pysot `pysot/tracker/siamrpn_tracker.py` + `base_tracker.py` + `pysot/utils/anchor.py`. They pad the whole
frame before cutting a window, as the references do, where dst cuts the window and pads only what falls outside:
the two must still give the same pixels. The networks are run the way the references run them (NCHW weights,
the input tensor made by permuting an HxWxC array).

`run_pair` and the `REFERENCES` table are also what the measurement for the issue's table uses (full sequences,
full widths, fps of both trackers measured frame by frame in the same run).
"""
import math
import time

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dst.cli import main
from dst.core import iou_xywh
from dst.data.datasets import load_dataset
from dst.track.trackers import make_tracker
from test_convert import (RefAlexNetLegacy, RefAlexNetV1, RefDaSiamRPN, RefDepthwiseRPN, RefModelBuilder,
                          RefSiamFCHead, RefSiamFCNet, randomize)


# ---------------------------------------------------------------- shared facts
def py2_round(v):
    """Python 2's round: halves go away from zero."""
    return math.copysign(math.floor(abs(v) + 0.5), v)


def padded_frame(im, top, bottom, left, right, value):
    """The whole frame inside a border of `value` (what DaSiamRPN/pysot build with np.zeros and slice assignment)."""
    out = np.empty((im.shape[0] + top + bottom, im.shape[1] + left + right, 3), np.uint8)
    out[...] = np.asarray(value).astype(np.uint8)          # a float mean stored in uint8: truncated
    out[top:top + im.shape[0], left:left + im.shape[1]] = im
    return out


def integer_window(im, x0, y0, side, value):
    """Rows/cols [y0, y0+side) x [x0, x0+side) of the frame padded on every side it overhangs."""
    h, w = im.shape[:2]
    l, t = int(max(0, -x0)), int(max(0, -y0))
    r, b = int(max(0, x0 + side - w)), int(max(0, y0 + side - h))
    if l or t or r or b:
        im = padded_frame(im, t, b, l, r, value)
    return im[int(y0) + t:int(y0) + t + int(side), int(x0) + l:int(x0) + l + int(side)]


def rpn_anchors(S, stride=8, ratios=(0.33, 0.5, 1, 2, 3), scales=(8,)):
    """(K*S*S, 4) cx, cy, w, h float32, anchor-major; grid origin -(S // 2) * stride (Python 2 `/` on ints, pysot `//`)."""
    shapes = []
    for r in ratios:
        ws = int(np.sqrt(stride * stride / r))
        hs = int(ws * r)
        shapes += [(ws * s, hs * s) for s in scales]
    grid = -(S // 2) * stride + stride * np.arange(S)
    xx, yy = np.meshgrid(grid, grid)
    return np.array([(x, y, w, h) for (w, h) in shapes for x, y in zip(xx.ravel(), yy.ravel())], np.float32)


def change(r):
    return np.maximum(r, 1.0 / r)


def sz(w, h):
    pad = (w + h) * 0.5
    return np.sqrt((w + pad) * (h + pad))


def to_input(patch):
    """HxWx3 uint8 -> (1,3,H,W) float32 the way the references build it (a permuted view, then .float())."""
    return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float()[None]


def rpn_step(cls, loc, anchors, window, size, scale_z, penalty_k, window_influence, lr_k):
    """One RPN decision as both DaSiamRPN and pysot make it: (displacement, new size, score)."""
    delta = loc.permute(1, 2, 3, 0).contiguous().view(4, -1).numpy().copy()
    score = F.softmax(cls.permute(1, 2, 3, 0).contiguous().view(2, -1), dim=0)[1].numpy()
    delta[0] = delta[0] * anchors[:, 2] + anchors[:, 0]
    delta[1] = delta[1] * anchors[:, 3] + anchors[:, 1]
    delta[2] = np.exp(delta[2]) * anchors[:, 2]
    delta[3] = np.exp(delta[3]) * anchors[:, 3]
    t = size * scale_z
    s_c = change(sz(delta[2], delta[3]) / sz(t[0], t[1]))
    r_c = change((t[0] / t[1]) / (delta[2] / delta[3]))
    penalty = np.exp(-(r_c * s_c - 1.0) * penalty_k)
    pscore = penalty * score
    pscore = pscore * (1 - window_influence) + window * window_influence
    best = int(np.argmax(pscore))
    target = delta[:, best] / scale_z
    lr = penalty[best] * score[best] * lr_k
    return target[:2], size * (1 - lr) + target[2:] * lr, float(score[best])


# ---------------------------------------------------------------- DaSiamRPN (run_SiamRPN.py, utils.py)
class RefDaSiamTracker:
    """SiamRPN_init / SiamRPN_track with the SiamRPNBIG cfg; boxes through rect_2_cxy_wh / cxy_wh_2_rect (0-based)."""
    cfg = dict(lr=0.295, window_influence=0.42, penalty_k=0.055, instance_size=271, adaptive=True)

    def __init__(self, net):
        self.net = net

    def subwindow(self, im, pos, model_sz, original_sz):
        c = (original_sz + 1) / 2.0                         # original_sz is a float in Python 2 (round returns one)
        x0, y0 = py2_round(pos[0] - c), py2_round(pos[1] - c)
        patch = integer_window(im, x0, y0, original_sz, self.avg)
        if model_sz != original_sz:
            patch = cv2.resize(patch, (model_sz, model_sz))
        return to_input(patch)

    def init(self, im, box):
        x, y, w, h = box
        self.pos, self.size = np.array([x + w / 2, y + h / 2]), np.array([w, h], dtype=np.float64)
        self.instance = self.cfg["instance_size"]
        if self.cfg["adaptive"]:
            self.instance = 287 if w * h / float(im.shape[0] * im.shape[1]) < 0.004 else 271
        S = (self.instance - 127) // 8 + 1
        self.anchors = rpn_anchors(S)
        self.avg = np.mean(im, axis=(0, 1))
        ctx = 0.5 * (w + h)
        s_z = py2_round(np.sqrt((w + ctx) * (h + ctx)))
        with torch.no_grad():
            self.net.temple(self.subwindow(im, self.pos, 127, s_z))
        self.window = np.tile(np.outer(np.hanning(S), np.hanning(S)).flatten(), 5)

    def update(self, im):
        w, h = self.size
        ctx = 0.5 * (w + h)
        s_z = np.sqrt((w + ctx) * (h + ctx))
        scale_z = 127 / s_z
        s_x = s_z + 2 * ((self.instance - 127) // 2) / scale_z
        with torch.no_grad():
            delta, score = self.net(self.subwindow(im, self.pos, self.instance, py2_round(s_x)))
        step, size, best = rpn_step(score, delta, self.anchors, self.window, self.size, scale_z,
                                    self.cfg["penalty_k"], self.cfg["window_influence"], self.cfg["lr"])
        H, W = im.shape[:2]
        pos = self.pos + step
        self.pos = np.array([max(0, min(W, pos[0])), max(0, min(H, pos[1]))])
        self.size = np.array([max(10, min(W, size[0])), max(10, min(H, size[1]))])
        return np.r_[self.pos - self.size / 2, self.size], best


# ---------------------------------------------------------------- siamfc-pytorch (siamfc.py, ops.py)
class RefSiamFCTracker:
    """TrackerSiamFC.init/update: (y, x) float32 centre, RGB frames, 1-based boxes, no clipping."""
    def __init__(self, net):
        self.net = net

    def crop(self, img, center, size, out_size):
        size = round(size)
        first = np.round(center - (size - 1) / 2).astype(int)            # (y, x)
        corners = np.concatenate([first, first + size])
        npad = max(0, int(np.concatenate([-corners[:2], corners[2:] - img.shape[:2]]).max()))
        if npad > 0:
            img = cv2.copyMakeBorder(img, npad, npad, npad, npad, cv2.BORDER_CONSTANT, value=self.avg)
        corners = corners + npad
        patch = img[corners[0]:corners[2], corners[1]:corners[3]]
        return cv2.resize(patch, (out_size, out_size), interpolation=cv2.INTER_LINEAR)

    def init(self, img, box):
        b = np.array([box[1] - 1 + (box[3] - 1) / 2, box[0] - 1 + (box[2] - 1) / 2, box[3], box[2]], dtype=np.float32)
        self.center, self.target_sz = b[:2], b[2:]
        self.up = 16 * 17
        hann = np.outer(np.hanning(self.up), np.hanning(self.up))
        self.hann = hann / hann.sum()
        self.scales = 1.0375 ** np.linspace(-1, 1, 3)
        context = 0.5 * np.sum(self.target_sz)
        self.z_sz = np.sqrt(np.prod(self.target_sz + context))
        self.x_sz = self.z_sz * 255 / 127
        self.avg = np.mean(img, axis=(0, 1))
        z = torch.from_numpy(self.crop(img, self.center, self.z_sz, 127)).permute(2, 0, 1).unsqueeze(0).float()
        with torch.no_grad():
            self.kernel = self.net.backbone(z)

    def update(self, img):
        x = np.stack([self.crop(img, self.center, self.x_sz * f, 255) for f in self.scales])
        x = torch.from_numpy(x).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            resp = self.net.head(self.kernel, self.net.backbone(x)).squeeze(1).numpy()
        resp = np.stack([cv2.resize(u, (self.up, self.up), interpolation=cv2.INTER_CUBIC) for u in resp])
        resp[:1] *= 0.9745
        resp[2:] *= 0.9745
        i = int(np.argmax(np.amax(resp, axis=(1, 2))))
        r = resp[i]
        best = float(r.max())
        r -= r.min()
        r /= r.sum() + 1e-16
        r = (1 - 0.176) * r + 0.176 * self.hann
        loc = np.unravel_index(r.argmax(), r.shape)
        disp = (np.array(loc) - (self.up - 1) / 2) * 8 / 16 * self.x_sz * self.scales[i] / 255
        self.center += disp
        s = (1 - 0.59) * 1.0 + 0.59 * self.scales[i]
        self.target_sz *= s
        self.z_sz *= s
        self.x_sz *= s
        c, t = self.center, self.target_sz
        return np.array([c[1] + 1 - (t[1] - 1) / 2, c[0] + 1 - (t[0] - 1) / 2, t[1], t[0]]), best


# ---------------------------------------------------------------- pysot (siamrpn_tracker.py, base_tracker.py)
class RefPysotTracker:
    """SiamRPNTracker with experiments/siamrpn_alex_dwxcorr/config.yaml: instance 287, base size 0."""
    penalty_k, window_influence, lr, instance = 0.16, 0.40, 0.30, 287

    def __init__(self, model):
        self.model = model
        S = (self.instance - 127) // 8 + 1
        self.window = np.tile(np.outer(np.hanning(S), np.hanning(S)).flatten(), 5)
        self.anchors = rpn_anchors(S)

    def subwindow(self, im, pos, model_sz, original_sz):
        c = (original_sz + 1) / 2
        x0, y0 = np.floor(pos[0] - c + 0.5), np.floor(pos[1] - c + 0.5)
        patch = integer_window(im, x0, y0, original_sz, self.avg)
        if model_sz != original_sz:
            patch = cv2.resize(patch, (model_sz, model_sz))
        return torch.from_numpy(patch.transpose(2, 0, 1)[np.newaxis].astype(np.float32))

    def _s_z(self):
        w, h = self.size
        return np.sqrt((w + 0.5 * (w + h)) * (h + 0.5 * (w + h)))

    def init(self, img, bbox):
        self.center = np.array([bbox[0] + (bbox[2] - 1) / 2, bbox[1] + (bbox[3] - 1) / 2])
        self.size = np.array([bbox[2], bbox[3]], dtype=np.float64)
        self.avg = np.mean(img, axis=(0, 1))
        with torch.no_grad():
            self.model.template(self.subwindow(img, self.center, 127, round(self._s_z())))

    def update(self, img):
        s_z = self._s_z()
        scale_z = 127 / s_z
        with torch.no_grad():
            out = self.model.track(self.subwindow(img, self.center, self.instance, round(s_z * (self.instance / 127))))
        step, size, best = rpn_step(out["cls"], out["loc"], self.anchors, self.window, self.size, scale_z,
                                    self.penalty_k, self.window_influence, self.lr)
        H, W = img.shape[:2]
        cx, cy = self.center + step
        cx, cy = max(0, min(cx, W)), max(0, min(cy, H))
        width, height = max(10, min(size[0], W)), max(10, min(size[1], H))
        self.center, self.size = np.array([cx, cy]), np.array([width, height])
        return np.array([cx - width / 2, cy - height / 2, width, height]), best


# ---------------------------------------------------------------- the harness
def calibrate(net, run, finals, seed):
    """Trained-like scales for random weights, so the trackers behave as trackers (no exp overflow, no saturated softmax).

    Batch-norm statistics are measured on real crops (`run` makes one template and one search pass), then perturbed
    so they are not what the data gives (non-identity, not the batch's); each `finals` (conv, target std) is rescaled
    so that the output it ends has that spread (RPN logits of std 2, regression deltas of std 0.3)."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                                    # cumulative: the statistics of exactly what `run` shows
    net.train()
    with torch.no_grad():
        run()
    net.eval()
    g = torch.Generator().manual_seed(seed)
    for m in bns:
        m.momentum = 0.1
        m.running_mean += 0.1 * m.running_var.sqrt() * torch.randn(m.num_features, generator=g)
        m.running_var *= 0.8 + 0.4 * torch.rand(m.num_features, generator=g)
    for conv, which, std in finals:
        with torch.no_grad():
            got = run()[which].std().item()
            conv.weight *= std / got
            conv.bias *= std / got
    return net


def calibration_crops(im, box, sizes):
    """The first frame's template crop and search crops of the given sizes around box `box` (SiamFC's context rule)."""
    x, y, w, h = box
    s_z = np.sqrt((w + (w + h) / 2) * (h + (w + h) / 2))
    avg = np.mean(im, axis=(0, 1))

    def crop(side, n):
        return to_input(cv2.resize(integer_window(im, round(x + w / 2 - side / 2), round(y + h / 2 - side / 2), round(side), avg), (n, n)))
    return crop(s_z, 127), [crop(s_z * n / 127, n) for n in sizes]


def _dasiam(size, im, box):
    net = randomize(RefDaSiamRPN(size=size, feature_out=256 * size), seed=11)
    z, (x,) = calibration_crops(im, box, [271])

    def run():
        net.temple(z)
        d, s = net(x)
        return dict(loc=d, cls=s)
    return calibrate(net, run, [(net.conv_cls1, "cls", 2.0), (net.regress_adjust, "loc", 0.3)], 11)


def _siamfc(_, im, box):
    net = randomize(RefSiamFCNet(RefAlexNetV1(), RefSiamFCHead(0.001)), seed=12)
    z, (x,) = calibration_crops(im, box, [255])
    return calibrate(net, lambda: dict(cls=net(z, x)), [], 12)


def _pysot(_, im, box):
    net = randomize(RefModelBuilder(RefAlexNetLegacy(), None, RefDepthwiseRPN(5, 256, 256)), seed=13)
    z, (x,) = calibration_crops(im, box, [287])

    def run():
        net.template(z)
        return net.track(x)
    return calibrate(net, run, [(net.rpn_head.cls.head[3], "cls", 2.0), (net.rpn_head.loc.head[3], "loc", 0.3)], 13)


# name -> (reference network builder, its file name, extra `dst convert` flags, reference tracker, colour order it reads)
REFERENCES = {
    "DaSiamRPN SiamRPNBIG": (_dasiam, "SiamRPNBIG.model", ["--variant", "SiamRPNBIG"], RefDaSiamTracker, "BGR"),
    "siamfc-pytorch AlexNetV1": (_siamfc, "siamfc_alexnet_e50.pth", [], RefSiamFCTracker, "RGB"),
    "pysot siamrpn_alex_dwxcorr": (_pysot, "model.pth", ["--format", "pysot"], RefPysotTracker, "BGR"),
}


def convert_reference(name, folder, im, box, size=1):
    """(reference network, dst checkpoint path): the reference (calibrated on frame `im` around `box`) saved in its own format, then `dst convert`ed."""
    build, fname, flags, _, _ = REFERENCES[name]
    net = build(size, im, box)
    src, out = folder / fname, folder / (fname.split(".")[0] + "_dst.pt")
    if fname.endswith(".model"):   # DaSiamRPN's files: a bare state_dict in the legacy (non-zip) format
        torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}, src,
                   _use_new_zipfile_serialization=False)
    else:
        torch.save(net.state_dict(), src)
    assert main(["convert", str(src), str(out), *flags]) == 0
    return net, out


def run_pair(name, net, ckpt, seq, n=None, precision="fp32"):
    """Both trackers over the first `n` frames of `seq` from its first box: boxes (N, 4) each and seconds per update each."""
    _, _, _, Ref, colour = REFERENCES[name]
    ref, ours = Ref(net), make_tracker(str(ckpt), precision=precision)
    n = len(seq) if n is None else min(n, len(seq))
    one_based = Ref is RefSiamFCTracker
    box0 = np.asarray(seq.boxes[0], dtype=np.float64)
    out_ref, out_dst, t_ref, t_dst = [box0], [box0], [], []
    for i in range(n):
        bgr = seq.image(i)
        img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if colour == "RGB" else bgr
        if i == 0:
            ref.init(img, box0 + [1, 1, 0, 0] if one_based else box0)
            ours.init(bgr, box0)
            continue
        for who in ((0, 1) if i % 2 else (1, 0)):     # alternate which runs first, so neither always finds the caches warm
            t = time.perf_counter()
            if who == 0:
                b_ref = ref.update(img)[0]
                t_ref.append(time.perf_counter() - t)
            else:
                b_dst = ours.update(bgr)[0]
                t_dst.append(time.perf_counter() - t)
        out_ref.append(np.asarray(b_ref, dtype=np.float64) - ([1, 1, 0, 0] if one_based else 0))
        out_dst.append(np.asarray(b_dst, dtype=np.float64))
    return np.array(out_ref), np.array(out_dst), np.array(t_ref), np.array(t_dst)


def agreement(a, b):
    """The issue's columns: max px apart, first frame (0-based) more than 0.5 px apart (None: none), mean IoU."""
    d = np.abs(a - b).max(1)
    far = np.flatnonzero(d > 0.5)
    return dict(max_px=float(d.max()), first_over_half_px=int(far[0]) if len(far) else None,
                mean_iou=float(np.mean([iou_xywh(x, y) for x, y in zip(a, b)])))


def fixture_sequence(fixtures, which):
    if which == "bag":
        return load_dataset("vot2019", fixtures / "vot2019", sequences=["bag"])[0]
    return load_dataset("otb100", fixtures / "otb", sequences=[which])[0]


# ---------------------------------------------------------------- the tests
FRAMES = 24   # a few dozen frames keep the tests short; the full sequences are measured for the note


@pytest.mark.parametrize("name,seq_name", [("DaSiamRPN SiamRPNBIG", "bag"), ("siamfc-pytorch AlexNetV1", "Crossing"),
                                           ("pysot siamrpn_alex_dwxcorr", "bag")])
def test_converted_checkpoint_tracks_as_its_reference(tmp_path, fixtures, name, seq_name):
    torch.manual_seed(0)
    seq = fixture_sequence(fixtures, seq_name)
    net, ckpt = convert_reference(name, tmp_path, seq.image(0), seq.boxes[0])   # DaSiamRPN at SiamRPNvot width: SiamRPNBIG's cfg, 1/4 the compute
    ref, ours, _, _ = run_pair(name, net, ckpt, seq, FRAMES)
    a = agreement(ref, ours)
    assert a["first_over_half_px"] is None, (name, a)
    moved = np.abs(ref[1:] - ref[0]).max()
    assert moved > 2, f"{name}: the reference tracker never moved ({moved:.2f} px), so the comparison shows little"


def test_reference_crops_equal_dst_crops_at_the_edges(fixtures):
    """The three reference windows (whole-frame padding) and dst's named crop rules (window-only padding) agree, pixel for pixel."""
    from dst.data.crops import crop_image, pad_color
    im = fixture_sequence(fixtures, "Crossing").image(0)
    H, W = im.shape[:2]
    rng = np.random.default_rng(0)
    for _ in range(40):
        pos = rng.uniform([-40, -40], [W + 40, H + 40])
        s = float(rng.uniform(20, 400))
        fc = RefSiamFCTracker(None)
        fc.avg = np.mean(im, axis=(0, 1))
        want = fc.crop(im, pos[::-1].astype(np.float32), s, 255)
        np.testing.assert_array_equal(crop_image(im, pos.astype(np.float32), s, 255, "siamfc-pytorch", pad_color(im, "siamfc-pytorch")), want)
        da = RefDaSiamTracker(None)
        da.avg = np.mean(im, axis=(0, 1))
        got = crop_image(im, pos, py2_round(s), 271, "dasiamrpn", pad_color(im, "dasiamrpn"))
        np.testing.assert_array_equal(got, da.subwindow(im, pos, 271, py2_round(s))[0].permute(1, 2, 0).numpy().astype(np.uint8))
        ps = RefPysotTracker.__new__(RefPysotTracker)
        ps.avg = np.mean(im, axis=(0, 1))
        got = crop_image(im, pos, round(s), 287, "pysot", pad_color(im, "pysot"))
        np.testing.assert_array_equal(got, ps.subwindow(im, pos, 287, round(s))[0].permute(1, 2, 0).numpy().astype(np.uint8))


def test_hp_override_still_wins_over_the_checkpoint(tmp_path):
    net, ckpt = convert_reference("pysot siamrpn_alex_dwxcorr", tmp_path, np.full((240, 320, 3), 99, np.uint8), [100, 100, 40, 30])
    t = make_tracker(str(ckpt))
    assert (t.hp["penalty_k"], t.hp["instance_size"], t.conventions["crop"], t.conventions["box"]) == (0.16, 287, "pysot", "pysot")
    assert make_tracker(str(ckpt), {"penalty_k": 0.05}).hp["penalty_k"] == 0.05
    assert t.precision == "fp32" or t.precision == "bf16"


if __name__ == "__main__":   # the table on whole sequences: python tests/test_parity.py [threads] [row,...]
    import json
    import sys
    import tempfile
    from pathlib import Path

    from dst.core import fixtures_dir
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    rows = [("DaSiamRPN SiamRPNBIG", "bag", 2), ("siamfc-pytorch AlexNetV1", "Crossing", 1),
            ("siamfc-pytorch AlexNetV1", "bag", 1), ("pysot siamrpn_alex_dwxcorr", "bag", 1)]   # size 2: SiamRPNBIG's widths
    for k in ([int(v) for v in sys.argv[2].split(",")] if len(sys.argv) > 2 else range(len(rows))):
        name, seq_name, size = rows[k]
        seq = fixture_sequence(fixtures_dir(), seq_name)
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as d:
            net, ckpt = convert_reference(name, Path(d), seq.image(0), seq.boxes[0], size)
            ref, ours, t_ref, t_dst = run_pair(name, net, ckpt, seq)
        print(json.dumps(dict(pair=name, sequence=seq_name, frames=len(seq), **agreement(ref, ours), fps_ref=1 / t_ref.mean(),
                              fps_dst=1 / t_dst.mean(), fps_ratio=t_ref.mean() / t_dst.mean())), flush=True)
