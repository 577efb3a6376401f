"""Training pairs end to end: the sampler's rules, crops on synthetic images with known boxes, label and anchor
targets, Dataset determinism and DataLoader workers, bad input, and the real Crossing fixture."""
import pickle
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dst.core import DSTError
from dst.data.crops import (box_from_crop, box_to_crop, crop_and_resize, mean_color, siamfc_crop_sizes,
                            xywh_to_cxcywh_px)
from dst.data.pairs import AUG_PRESETS, Augment, FrameFilter, PairDataset, PairSampler, Source
from dst.data.sequences import Sequence
from dst.data.targets import decode_deltas, generate_anchors, siamfc_labels, siamrpn_targets


def make_seq(d: Path, name: str, boxes, size=(200, 150), seed=0, absent=None, static=False) -> Sequence:
    """Write one JPEG per box (a bright block over dark noise) and return the Sequence."""
    d = d / name
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for i, b in enumerate(boxes):
        img = rng.integers(0, 60, (size[1], size[0], 3), np.uint8)
        if np.isfinite(b).all():
            x, y, w, h = (int(round(v)) for v in b)
            img[y:y + h, x:x + w] = (30 + 40 * (seed % 5), 220, 240)
        files.append(d / f"{i:04d}.jpg")
        cv2.imwrite(str(files[-1]), img)
    return Sequence(name, files, np.asarray(boxes, float), absent=absent, meta={"static": True} if static else {})


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    n = 30
    good = [[30 + 2 * i, 40 + i, 36, 30] for i in range(n)]
    # video 0: frames 5-9 have a 10 px box (rejected by SiamFC's filter), frame 12 no box, frame 20 absent
    v0 = [list(b) for b in good]
    for i in range(5, 10):
        v0[i][2] = 10
    v0[12] = [np.nan] * 4
    absent = np.zeros(n, bool)
    absent[20] = True
    vid0 = make_seq(d, "vid0", v0, absent=absent, seed=0)
    vid1 = make_seq(d, "vid1", [[120 - 2 * i, 60, 30, 40] for i in range(n)], seed=1)
    stills = [make_seq(d, f"still{i}", [[40 + 5 * i, 50, 40, 32]], seed=2 + i, static=True) for i in range(3)]
    return dict(vid0=vid0, vid1=vid1, stills=stills, bad_frames={5, 6, 7, 8, 9, 12, 20})


def sources(toy, frame_range=4):
    return [Source([toy["vid0"], toy["vid1"]], "vid", frame_range=frame_range, num_use=10),
            Source(toy["stills"], "det", frame_range=1, num_use=6)]


# ---------------------------------------------------------------- sampler
def test_sampler_gap_filter_static_and_negatives(toy):
    ps = PairSampler(sources(toy), neg=0.25, seed=3)
    assert len(ps) == 16
    specs = [ps.sample(i, e) for e in range(6) for i in range(len(ps))]
    pos, neg = [s for s in specs if not s.neg], [s for s in specs if s.neg]
    assert 0 < len(neg) < len(specs)
    for s in pos:
        assert (s.src_z, s.seq_z) == (s.src_x, s.seq_x)
        if s.src_z == 0:
            assert abs(s.frame_x - s.frame_z) <= 4                    # frame gap limit
            if s.seq_z == 0:                                          # filtered frames never used
                assert s.frame_z not in toy["bad_frames"] and s.frame_x not in toy["bad_frames"]
        else:
            assert s.frame_z == s.frame_x == 0                        # a still image pairs with itself
    src = ps.sources
    for s in neg:                                                     # negatives: a different sequence and image
        assert (s.src_x, s.seq_x) != (s.src_z, s.seq_z)
        assert src[s.src_x].seqs[s.seq_x].frames[s.frame_x] != src[s.src_z].seqs[s.seq_z].frames[s.frame_z]
    used = {s.frame_z for s in specs if (s.src_z, s.seq_z) == (0, 0)}
    assert used and not used & toy["bad_frames"]
    assert set(ps.valid_frames(0, 0)) == set(range(30)) - toy["bad_frames"]


def test_sampler_mix_weights_and_epochs(toy):
    ps = PairSampler(sources(toy), seed=0)
    o = ps.order(0)
    assert np.bincount(o[:, 0]).tolist() == [10, 6]                   # num_use sets the mix
    assert np.bincount(o[o[:, 0] == 1, 1]).tolist() == [2, 2, 2]      # repeated evenly
    assert o.tolist() != ps.order(1).tolist()
    assert PairSampler(sources(toy), seed=0).order(1).tolist() == ps.order(1).tolist()
    assert len(PairSampler(sources(toy), pairs_per_epoch=40)) == 40
    off = [Source([toy["vid0"]], "vid", num_use=4), Source(toy["stills"], "det", num_use=0)]
    assert set(PairSampler(off).order(0)[:, 0].tolist()) == {0}
    with pytest.raises(DSTError, match="nothing to sample"):
        PairSampler([Source(toy["stills"], num_use=0)]).order(0)


def test_frame_filter_thresholds():
    f = FrameFilter()
    boxes = np.array([[0, 0, 20, 20], [0, 0, 19, 30], [0, 0, 501, 200], [0, 0, 30, 121], [0, 0, 121, 30],
                      [0, 0, 100, 30], [0, 0, 30, 100]], float)
    # 1000x800 image: 19 px side, >500 px, aspect 30/121 < 1/4, 121/30 > 4 rejected; 100x30 (3.3) and 30x100 kept
    assert f(boxes, (1000, 800)).tolist() == [True, False, False, False, False, True, True]
    assert f([[0, 0, 60, 60]], (100, 100)).tolist() == [False]        # 60% of the image side
    assert f([[0, 0, 25, 25]], (3000, 3000)).tolist() == [False]      # under 1% of the image side


# ---------------------------------------------------------------- crops
@pytest.mark.parametrize("box,out,scale", [([50, 40, 30, 20], 127, 1.0), ([13.3, 77.7, 41.2, 17.9], 255, 1.7),
                                           ([0, 0, 24, 24], 127, 0.6), ([170, 120, 30, 30], 255, 2.0)])
def test_crop_centres_box_and_pads_with_mean(box, out, scale):
    img = np.full((150, 200, 3), (20, 60, 100), np.uint8)
    x, y, w, h = box
    # paint the pixels whose centres lie inside the box (pixel-centre convention: box spans [x-.5, x+w-.5])
    cols = np.arange(200)[None, :]
    rows = np.arange(150)[:, None]
    inside = (cols >= x - 0.5) & (cols <= x + w - 0.5) & (rows >= y - 0.5) & (rows <= y + h - 0.5)
    img[inside] = (255, 255, 255)
    b = xywh_to_cxcywh_px(box)
    in_size = max(w, h) * 2 * scale
    crop = crop_and_resize(img, b[:2], in_size, out, pad_value=(20, 60, 100))   # background-coloured padding here
    assert crop.shape == (out, out, 3)
    m = crop[..., 0].astype(float) - 20                               # block intensity above background
    m = np.clip(m, 0, None)
    cy, cx = (np.indices(m.shape) * m).reshape(2, -1).sum(1) / m.sum()
    tol = 0.5 * out / in_size + 0.1                                   # half a source pixel: the painted set is whole pixels
    assert abs(cx - (out - 1) / 2) < tol and abs(cy - (out - 1) / 2) < tol
    bc = box_to_crop(b, b[:2], in_size, out)
    assert np.allclose(bc[:2], (out - 1) / 2) and np.allclose(bc[2:], np.array([w, h]) * out / in_size)
    assert np.allclose(box_from_crop(bc, b[:2], in_size, out), b)
    # windows hanging off the image are padded with the image's mean colour
    far = crop_and_resize(img, (-500, -500), 100, 50)
    assert (far == np.round(mean_color(img)).astype(np.uint8)).all()


def test_crop_sizes_and_bad_input():
    s_z, s_x = siamfc_crop_sizes([0, 0, 40, 40])
    assert s_z == 80 and np.isclose(s_x, 80 * 255 / 127)
    s_z, s_x = siamfc_crop_sizes(np.array([[0, 0, 10, 30], [0, 0, 40, 40]]), instance=271)
    assert np.allclose(s_z, [np.sqrt(30 * 50), 80]) and np.allclose(s_x, s_z * 271 / 127)
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(DSTError, match="in_size must be positive"):
        crop_and_resize(img, (5, 5), -3, 20)
    with pytest.raises(DSTError, match="out_size must be positive"):
        crop_and_resize(img, (5, 5), 3, 0)
    with pytest.raises(DSTError, match="expected an HxW"):
        crop_and_resize(np.zeros((0, 0, 3), np.uint8), (5, 5), 3, 5)


# ---------------------------------------------------------------- targets
@pytest.mark.parametrize("S,off", [(17, (0, 0)), (17, (12.5, -3)), (19, (-40, 30)), (25, (0, 0))])
def test_siamfc_label_sums(S, off):
    lab, w = siamfc_labels(S, 8, 16, off)
    assert lab.shape == w.shape == (S, S)
    assert lab.sum() > 0
    assert np.isclose(w[lab == 1].sum(), 0.5) and np.isclose(w[lab == 0].sum(), 0.5)
    assert np.allclose(w[lab == 1], w[lab == 1][0]) and np.allclose(w[lab == 0], w[lab == 0][0])
    if off == (0, 0):
        assert lab.sum() == 13 and lab[S // 2, S // 2] == 1 and lab[S // 2, S // 2 + 3] == 0


def test_anchor_counts_shapes_and_round_trip():
    for S, X in ((17, 255), (19, 271)):
        A = generate_anchors(S, X)
        assert A.shape == (4, 5, S, S)
        assert np.allclose(A[:2, :, S // 2, S // 2], (X - 1) / 2)
        assert np.allclose(np.diff(A[0, 0, 0]), 8) and np.allclose(np.diff(A[1, 0, :, 0]), 8)
    assert generate_anchors(17, 255, ratios=(0.5, 1, 2), scales=(4, 8)).shape == (4, 6, 17, 17)
    A = generate_anchors(19, 271)
    rng = np.random.default_rng(0)
    n_checked = 0
    for _ in range(50):
        g = np.array([135 + rng.uniform(-60, 60), 135 + rng.uniform(-60, 60), rng.uniform(30, 110), rng.uniform(30, 110)])
        t = siamrpn_targets(g, A, rng=rng)
        pos = t["cls"] == 1
        assert pos.sum() <= 16 and (t["cls"] == 0).sum() <= 48
        assert (t["overlap"][pos] > 0.6).all() and (t["overlap"][t["cls"] == 0] < 0.3).all()
        if pos.any():
            assert np.isclose(t["delta_weight"].sum(), 1.0)
            assert np.allclose(decode_deltas(t["delta"][:, pos], A[:, pos]), g[:, None], atol=1e-3)
            n_checked += int(pos.sum())
    assert n_checked > 50
    tn = siamrpn_targets([135, 135, 60, 60], A, neg=True, rng=rng)
    assert (tn["cls"] == 1).sum() == 0 and (tn["cls"] == 0).sum() == 16 and tn["delta_weight"].sum() == 0
    assert set(np.where(tn["cls"] == 0)[1]) <= set(range(6, 13))     # rows 9 +- 3 around the distractor


# ---------------------------------------------------------------- dataset
def test_dataset_items_targets_and_round_trip(toy):
    ds = PairDataset(sources(toy), targets="siamrpn", search_size=271, neg=0.3, seed=5)
    K, S = 5, 19
    seen_pos = seen_neg = 0
    for i in range(len(ds)):
        it = ds[i]
        assert it["z"].shape == (3, 127, 127) and it["x"].shape == (3, 271, 271)
        assert it["cls"].shape == (K, S, S) and it["delta"].shape == (4, K, S, S) and it["delta_weight"].shape == (K, S, S)
        assert 0 <= float(it["x"].min()) and float(it["x"].max()) <= 255
        pos = it["cls"].numpy() == 1
        if it["neg"]:
            seen_neg += 1
            assert pos.sum() == 0 and (it["cls"] == 0).sum() == 16
        elif pos.any():
            seen_pos += 1
            back = decode_deltas(it["delta"].numpy()[:, pos], ds.anchors[:, pos])
            assert np.allclose(back, it["box_x"].numpy()[:, None], atol=1e-3)
    assert seen_pos > 5 and seen_neg > 0
    fc = PairDataset(sources(toy), targets="siamfc", seed=5)
    it = fc[0]
    assert it["label"].shape == it["weight"].shape == (1, 17, 17) and it["x"].shape == (3, 255, 255)
    assert np.isclose(float(it["weight"][it["label"] == 1].sum()), 0.5)
    assert set(PairDataset(sources(toy), targets=None)[0]) == {"z", "x", "box_z", "box_x", "neg"}


def test_dataset_boxes_where_the_crop_puts_them(toy):
    ds = PairDataset(sources(toy), targets=None, preset="none", seed=0)
    for i in range(len(ds)):
        sp = ds.sampler.sample(i, 0)
        it = ds[i]
        for k, (si, qi, fi), size in (("z", (sp.src_z, sp.seq_z, sp.frame_z), 127), ("x", (sp.src_x, sp.seq_x, sp.frame_x), 255)):
            w, h = ds.sampler.sources[si].seqs[qi].boxes[fi, 2:]
            s_z = siamfc_crop_sizes([0, 0, w, h])[0]
            assert np.allclose(it[f"box_{k}"].numpy(), [(size - 1) / 2, (size - 1) / 2, w * 127 / s_z, h * 127 / s_z], atol=1e-4)
        z = it["z"].numpy()                                           # the bright block is at the template centre
        assert z[1, 63, 63] > 150 and z[1, 0, 0] < 120


def test_static_pair_reads_one_image(toy, monkeypatch):
    import dst.data.pairs as pairs
    ds = PairDataset([Source(toy["stills"], "det")], targets="siamrpn", neg=0.0, seed=0)
    reads = []
    real = pairs.read_image
    monkeypatch.setattr(pairs, "read_image", lambda p: reads.append(Path(p)) or real(p))
    for i in range(len(ds)):
        ds[i]
    assert len(reads) == len(ds)                                      # template and search from the same image


def test_flip_mirrors_crops_and_boxes(toy):
    kw = dict(targets=None, template_aug=Augment(shift=10), search_aug=Augment(shift=30, scale=0.1), neg=0.0, seed=2)
    a = PairDataset(sources(toy), flip=0.0, **kw)[4]
    b = PairDataset(sources(toy), flip=1.0, **kw)[4]
    assert torch.equal(b["x"], a["x"].flip(-1)) and torch.equal(b["z"], a["z"].flip(-1))
    assert np.isclose(float(b["box_x"][0]), 254 - float(a["box_x"][0])) and torch.equal(b["box_x"][1:], a["box_x"][1:])


def test_determinism_and_small_pickles(toy):
    mk = lambda seed: PairDataset(sources(toy), targets="siamrpn", seed=seed)
    a, b = mk(11), mk(11)
    for i in (0, 7, 15):
        ia, ib = a[i], b[i]
        assert all(torch.equal(ia[k], ib[k]) for k in ia)
    assert not torch.equal(mk(12)[0]["x"], a[0]["x"])
    b.set_epoch(3)
    assert not torch.equal(b[0]["x"], a[0]["x"])
    a.set_epoch(3)
    assert torch.equal(b[0]["x"], a[0]["x"])                          # resume at epoch 3: same data
    assert len(pickle.dumps(a)) < 50_000                              # paths and boxes only, no frames


def test_dataloader_workers_match_main_process(toy):
    ds = PairDataset(sources(toy), targets="siamrpn", search_size=271, seed=4)
    b0 = next(iter(DataLoader(ds, batch_size=8, num_workers=0)))
    b2 = next(iter(DataLoader(ds, batch_size=8, num_workers=2)))
    assert set(b0) == set(b2)
    assert all(torch.equal(b0[k], b2[k]) for k in b0)
    assert b2["x"].shape == (8, 3, 271, 271) and b2["cls"].shape == (8, 5, 19, 19) and b2["neg"].shape == (8,)


def test_batch_speed(toy):
    ds = PairDataset(sources(toy), targets="siamrpn", search_size=271, seed=0)
    it = iter(DataLoader(ds, batch_size=8, num_workers=0))
    times = []
    for _ in range(2):                                                # the first batch includes the warm-up
        t0 = time.perf_counter()
        batch = next(it)
        times.append(time.perf_counter() - t0)
    print(f"\nbatch of 8 SiamRPN pairs (271 px search, main process): first {times[0] * 1e3:.1f} ms, next {times[1] * 1e3:.1f} ms")
    assert batch["z"].shape == (8, 3, 127, 127)


def test_bad_input(toy, tmp_path):
    with pytest.raises(DSTError, match="targets must be"):
        PairDataset(sources(toy), targets="rpn")
    with pytest.raises(DSTError, match="unknown augmentation preset"):
        PairDataset(sources(toy), preset="siamrpn++")
    with pytest.raises(DSTError, match="has no sequences"):
        Source([], "empty")
    with pytest.raises(DSTError, match="at least two sequences"):
        PairSampler([Source([toy["vid0"]])], neg=0.2)
    nobox = make_seq(tmp_path, "nobox", [[np.nan] * 4] * 3)
    with pytest.raises(DSTError, match="source 'broken': no sequence with a usable frame"):
        PairDataset([Source([nobox], "broken")], targets="siamfc")[0]
    assert AUG_PRESETS["siamrpn"]["neg"] == 0.2 and AUG_PRESETS["siamfc"]["neg"] == 0.0


def test_crossing_fixture_pairs(fixtures):
    root = fixtures / "otb" / "Crossing"
    gt = np.loadtxt(root / "groundtruth_rect.txt", delimiter="\t") - [1, 1, 0, 0]
    seq = Sequence("Crossing", sorted((root / "img").glob("*.jpg"))[:len(gt)], gt)
    ds = PairDataset([Source([seq], "otb", frame_range=50)], targets="siamrpn", search_size=271,
                     frame_filter=FrameFilter(min_side=10), neg=0.0, seed=0, pairs_per_epoch=8)
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert batch["x"].shape == (8, 3, 271, 271)
    for i in range(8):
        pos = batch["cls"][i].numpy() == 1
        if pos.any():
            assert np.allclose(decode_deltas(batch["delta"][i].numpy()[:, pos], ds.anchors[:, pos]),
                               batch["box_x"][i].numpy()[:, None], atol=1e-3)
