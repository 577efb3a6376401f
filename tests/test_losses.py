"""Distillation losses end to end: gradients reach students only, signs and reductions, real SiamNet outputs, RPN shapes."""
import json
import math

import numpy as np
import pytest
import torch

from dst.core import DSTError
from dst.distill.tracking import siamfc_loss, rpn_cls_loss, rpn_reg_loss, gt_loss
from dst.distill.transfer import KDConfig, LOSS_MATRIX, soft_kl, ts_loss, ah_loss, bounded_reg_loss
from dst.distill.str_loss import str_loss, str_maps, kt_objective
from dst.distill.sharing import ks_loss, sigma_weight, f_epoch, tsskd_objectives
from dst.models.zoo import build_model

K, S = 5, 19                                     # SiamRPN: 5 anchors, 19x19 map on a 271 search region
# siamrpn_half's backbone feature shapes (C, H, W) on a 127 template and a 271 search region; the teacher doubles C
RPN_ZF = [(96, 29, 29), (256, 12, 12), (384, 10, 10), (384, 8, 8), (256, 6, 6)]
RPN_XF = [(96, 65, 65), (256, 30, 30), (384, 28, 28), (384, 26, 26), (256, 24, 24)]


@pytest.fixture(scope="module")
def fc_pair():
    """Untrained SiamFC teacher and halved student, with one batch of random inputs."""
    torch.manual_seed(0)
    return build_model("siamfc").eval(), build_model("siamfc_half").train(), torch.randn(1, 3, 127, 127), torch.randn(1, 3, 255, 255)


def fc_label(B=2):
    lab = torch.zeros(B, 1, 17, 17)
    lab[:, :, 7:10, 8] = 1; lab[:, :, 8, 7:10] = 1
    return lab


def rpn_out(B=2, scale=1.0, grad=True, seed=0):
    """Random tensors shaped like a SiamRPN output of siamrpn_half (scale 2: the teacher's channels)."""
    g = torch.Generator().manual_seed(seed)
    t = lambda *s: torch.randn(*s, generator=g).requires_grad_(grad)
    return dict(cls=t(B, 2 * K, S, S), loc=t(B, 4 * K, S, S),
                zf=[t(B, int(c * scale), h, w) for c, h, w in RPN_ZF], xf=[t(B, int(c * scale), h, w) for c, h, w in RPN_XF])


def rpn_target(B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cls = torch.full((B, K, S, S), -1, dtype=torch.long)
    cls[:, 2, 8:11, 8:11] = 1                                  # 9 positives a pair
    cls[:, :, 0:2, :] = 0                                      # negatives
    dw = (cls == 1).float() / 9
    return dict(cls=cls, delta=torch.randn(B, 4, K, S, S, generator=g) * 0.2, delta_weight=dw)


def tensors(out):
    return [out["cls"], out["loc"], *out["zf"], *out["xf"]] if out.get("loc") is not None else [out["cls"], *out["zf"], *out["xf"]]


# ---------------------------------------------------------------- gradients reach the student only

def test_kt_gradients_reach_student_not_teacher_real_siamfc(fc_pair):
    teacher, student, z, x = fc_pair
    student.zero_grad()
    t_out = teacher(z, x)                                       # deliberately *without* no_grad: the losses must detach
    s_out = student(z, x)
    loss, stats = kt_objective(s_out, t_out, dict(label=fc_label(1)))
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters() if p.requires_grad)
    assert math.isclose(stats["kt"], stats["ts"] + 0.1 * stats["ah"] + 100 * stats["str"], rel_tol=1e-5)


def test_kt_gradients_rpn_shapes():
    s, t, tg = rpn_out(), rpn_out(scale=2, seed=1), rpn_target()
    loss, stats = kt_objective(s, t, tg)
    loss.backward()
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in stats.values())
    assert all(v.grad is None for v in tensors(t))
    assert s["cls"].grad.abs().sum() > 0 and s["loc"].grad.abs().sum() > 0
    assert all(f.grad is not None for f in s["zf"] + s["xf"])          # STR reaches every layer


def test_sharing_peer_detached_and_total_trains_both():
    s1, s2 = rpn_out(seed=2), rpn_out(seed=3)
    r = tsskd_objectives([s1, s2], [torch.tensor(0.), torch.tensor(0.)], [0.3, 0.3], 0.3, epoch=0)
    r["losses"][0].backward(retain_graph=True)
    assert s1["cls"].grad is not None and s2["cls"].grad is None and s2["loc"].grad is None
    r["losses"][1].backward()
    assert s2["cls"].grad.abs().sum() > 0 and s2["loc"].grad.abs().sum() > 0


def test_sigma_and_gate_carry_no_gradient():
    g = torch.tensor(0.2, requires_grad=True)
    assert not sigma_weight(g, torch.tensor(0.3), 0).requires_grad


# ---------------------------------------------------------------- signs

def test_siamfc_loss_sign():
    cls = torch.zeros(1, 1, 17, 17, requires_grad=True)
    siamfc_loss(cls, fc_label(1)).backward()
    pos = fc_label(1) > 0
    assert (cls.grad[pos] < 0).all() and (cls.grad[~pos] > 0).all()   # descent raises positives, lowers negatives


def test_rpn_cls_loss_sign_and_channel_meaning():
    cls = torch.zeros(1, 2 * K, S, S, requires_grad=True)
    tg = rpn_target(1)
    rpn_cls_loss(cls, tg["cls"]).backward()
    g = cls.grad.view(1, 2, K, S, S)
    pos, neg = tg["cls"][0] == 1, tg["cls"][0] == 0
    assert (g[0, 1][pos] < 0).all() and (g[0, 0][pos] > 0).all()      # channel 1 is foreground
    assert (g[0, 1][neg] > 0).all() and (g[0, 0][neg] < 0).all()
    assert (g[0, :, tg["cls"][0] == -1] == 0).all()                    # ignored anchors get no gradient


def test_one_descent_step_reduces_each_distillation_loss():
    t = rpn_out(scale=2, grad=False, seed=5); t_small = dict(cls=t["cls"], loc=t["loc"])
    fns = {"ts": lambda s: ts_loss(s, t_small, None),
           "ks": lambda s: ks_loss(s, t_small),
           "gt": lambda s: gt_loss(s, rpn_target())}
    for name, f in fns.items():
        s = rpn_out(seed=6)
        before = f(s); before.backward()
        with torch.no_grad():
            s2 = dict(cls=s["cls"] - 0.1 * s["cls"].grad, loc=s["loc"] - 0.1 * s["loc"].grad)
        assert f(s2) < before, name


def test_kl_zero_iff_equal_and_temperature_by_hand():
    c = torch.randn(2, 2 * K, S, S)
    assert soft_kl(c, c).abs() < 1e-7 and soft_kl(c + torch.randn_like(c), c) > 0
    # one anchor, student uniform, teacher (0, log 3): at T the teacher is softmax((0, log 3)/T)
    cs, ct = torch.zeros(1, 2, 1, 1), torch.tensor([0., math.log(3)]).view(1, 2, 1, 1)
    for T in (1.0, 2.0, 4.0):
        p = 3 ** (1 / T) / (1 + 3 ** (1 / T))
        kl = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
        assert math.isclose(float(soft_kl(cs, ct, temp=T)), T * T * kl, rel_tol=1e-5)


def test_ah_regression_zero_exactly_when_student_beats_teacher_by_margin():
    delta, dw = torch.zeros(1, 4, 1, 1, 1), torch.ones(1, 1, 1, 1)
    loc = lambda d: torch.tensor([d, 0., 0., 0.]).view(1, 4, 1, 1)
    m = 0.05
    lt = 0.5 - 1 / 18                                           # teacher off by 0.5
    for d in np.linspace(0.3, 0.7, 41):
        ls = d - 1 / 18
        got = float(bounded_reg_loss(loc(float(d)), loc(0.5), delta, dw, m=m))
        expect = 0.0 if lt - ls >= m else ls
        assert math.isclose(got, expect, abs_tol=1e-6), (d, got, expect)


# ---------------------------------------------------------------- reductions

def test_mean_losses_do_not_depend_on_batch_size():
    s, t, tg = rpn_out(grad=False), rpn_out(scale=2, grad=False, seed=1), rpn_target()
    dup = lambda o: {k: (torch.cat([v, v]) if torch.is_tensor(v) else [torch.cat([f, f]) for f in v]) for k, v in o.items()}
    dupt = {k: torch.cat([v, v]) for k, v in tg.items()}
    pairs = [(lambda a, b, g: gt_loss(a, g)), (lambda a, b, g: ts_loss(a, b, g["delta_weight"])),
             (lambda a, b, g: ah_loss(a, b, g)), (lambda a, b, g: str_loss(a, b, layers=[1, 4])), (lambda a, b, g: ks_loss(a, b))]
    for f in pairs:
        assert torch.allclose(f(s, t, tg), f(dup(s), dup(t), dupt), rtol=1e-5, atol=1e-7)
    lab = fc_label()
    c = torch.randn(2, 1, 17, 17)
    assert torch.allclose(siamfc_loss(c, lab), siamfc_loss(torch.cat([c, c]), torch.cat([lab, lab])), atol=1e-7)


def test_per_sample_reductions_average_to_the_mean():
    s, tg = rpn_out(grad=False), rpn_target()
    assert gt_loss(s, tg, reduction="none").shape == (2,)
    assert torch.allclose(rpn_reg_loss(s["loc"], tg["delta"], tg["delta_weight"], reduction="none").mean(),
                          rpn_reg_loss(s["loc"], tg["delta"], tg["delta_weight"]))


# ---------------------------------------------------------------- STR on real networks

def test_str_real_siamfc_finite_differentiable_and_weight_matters(fc_pair):
    teacher, student, z, x = fc_pair
    with torch.no_grad(): t_out = teacher(z, x)
    s_out = student(z, x)
    loss, parts = str_loss(s_out, t_out, return_parts=True)
    assert torch.isfinite(loss) and len(parts["x"]) == len(parts["z"]) == 5
    (g,) = torch.autograd.grad(loss, [student.backbone.layers[0].conv.weight])
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert not math.isclose(loss.item(), str_loss(s_out, t_out, weighted=False).item(), rel_tol=1e-6)
    assert float(str_loss(t_out, t_out)) < 1e-10


def test_str_on_a_real_fixture_frame(fixtures, fc_pair):
    from dst.data.benchmarks import read_otb_sequence
    from dst.data.crops import xywh_to_cxcywh_px, siamfc_crop_sizes, crop_and_resize
    teacher, student, _, _ = fc_pair
    seq = read_otb_sequence(fixtures/"otb", "Crossing")
    b = xywh_to_cxcywh_px(seq.boxes[0]); s_z, s_x = siamfc_crop_sizes(b)
    im = seq.image(0)
    tt = lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy()).float()[None]
    z, x = tt(crop_and_resize(im, b[:2], s_z, 127)), tt(crop_and_resize(im, b[:2], s_x, 255))
    with torch.no_grad():
        t_out, s_out = teacher(z, x), student(z, x)
        maps = str_maps(t_out)
        assert [m.shape[1:] for m in maps["x"]] == [f.shape[2:] for f in t_out["xf"]]
        assert math.isfinite(float(str_loss(s_out, t_out)))


# ---------------------------------------------------------------- config, Table 1, bad input

def test_config_json_round_trip_and_paper_values():
    cfg = KDConfig()
    assert (cfg.m, cfg.lam, cfg.omega, cfg.temp, cfg.h, cfg.beta) == (0.005, 0.1, 100.0, 1.0, 0.005, 0.5)
    assert KDConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(DSTError, match="unknown keys"): KDConfig.from_dict({"margin": 1})
    with pytest.raises(DSTError, match="sigma_gate"): KDConfig(sigma_gate="teacher")
    assert set(LOSS_MATRIX) == {"siamfc", "siamrpn"} and LOSS_MATRIX["siamfc"]["TS"] == "KL"


def test_bad_inputs_name_the_tensor():
    with pytest.raises(DSTError, match="siamfc_loss label"): siamfc_loss(torch.zeros(2, 1, 17, 17), torch.zeros(2, 17, 17))
    with pytest.raises(DSTError, match="teacher cls"): soft_kl(torch.zeros(1, 10, 19, 19), torch.zeros(1, 10, 17, 17))
    with pytest.raises(DSTError, match="target lacks"): gt_loss(dict(cls=torch.zeros(1, 10, 19, 19), loc=torch.zeros(1, 20, 19, 19)), dict(label=None))
    with pytest.raises(DSTError, match="differ in shape"): ks_loss(dict(cls=torch.zeros(1, 1, 17, 17)), dict(cls=torch.zeros(1, 1, 15, 15)))
    assert f_epoch(3) == pytest.approx(0.729)
