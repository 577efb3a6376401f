"""Dataset readers: the real OTB/VOT fixtures, tiny copies of every other official layout, OTB's special cases, and
every kind of bad input the readers must refuse (one DSTError naming file and line) or recover from (documented)."""
import numpy as np
import pytest
import cv2

from dst.core import DSTError
from dst.data import benchmarks as B, fixtures as F, training_sets as T
from dst.data.datasets import load_dataset, known_datasets
from dst.data.sequences import Sequence


# ---------------------------------------------------------------- real fixtures
def test_otb_fixtures_tab_and_comma(fixtures):
    cross, foot = load_dataset("otb100", fixtures / "otb", sequences=["Crossing", "Football1"])
    assert (len(cross), len(foot)) == (120, 74)                      # Football1: 81 images, 74 annotated
    assert len(list((fixtures / "otb/Football1/img").glob("*.jpg"))) == 81
    first = (fixtures / "otb/Crossing/groundtruth_rect.txt").read_text().splitlines()[0]
    assert "\t" in first and [float(v) for v in first.split("\t")] == [205, 151, 17, 50]
    np.testing.assert_array_equal(cross.boxes[0], [204, 150, 17, 50])   # 1-based file -> 0-based boxes
    np.testing.assert_array_equal(foot.boxes[0], [152, 104, 26, 43])
    assert foot.frames[0].name == "0001.jpg" and foot.frames[-1].name == "0074.jpg"
    assert all(f.is_file() for s in (cross, foot) for f in s.frames)
    assert cross.meta["index_base"] == 1 and not np.isnan(cross.boxes).any()
    assert cross.image(0).shape == (240, 360, 3)


def test_vot_fixture_bag_regions(fixtures):
    (bag,) = load_dataset("vot2019", fixtures / "vot2019")
    (area,) = load_dataset("vot2019", fixtures / "vot2019", region="area")
    assert len(bag) == 196 and bag.meta["polygons"].shape == (196, 8) and bag.meta["index_base"] == 0
    np.testing.assert_allclose(bag.boxes[0], [292.23, 128.36, 145.96, 132.47], atol=1e-9)
    np.testing.assert_allclose(area.boxes[0][2:], [106.13, 96.41], atol=0.01)
    np.testing.assert_allclose(area.boxes[0][:2] + area.boxes[0][2:] / 2, [365.2075, 194.595], atol=1e-9)
    # the bounds hold every polygon corner
    p, (x, y, w, h) = bag.meta["polygons"], bag.boxes.T
    assert (p[:, 0::2] >= x[:, None] - 1e-9).all() and (p[:, 0::2] <= (x + w)[:, None] + 1e-9).all()
    assert (p[:, 1::2] >= y[:, None] - 1e-9).all() and (p[:, 1::2] <= (y + h)[:, None] + 1e-9).all()
    assert bag.image(0).shape == (360, 480, 3)


def test_otb_whole_split_on_fixture_counts_missing(fixtures):
    with pytest.raises(DSTError, match="98 of 100 sequences missing"):
        load_dataset("otb100", fixtures / "otb")


# ---------------------------------------------------------------- OTB special cases (placeholder frame files)
def _otb_tree(root, name, rows, n_images, nz=4, ext="jpg", anno="groundtruth_rect.txt", folder=None):
    d = root / (folder or name)
    (d / "img").mkdir(parents=True, exist_ok=True)
    for i in range(1, n_images + 1):
        (d / "img" / f"{i:0{nz}d}.{ext}").touch()                     # readers never decode: empty files suffice
    (d / anno).write_text("".join(f"{10 + i},{20 + i},30,40\n" for i in range(rows)))
    return d


def test_otb_special_frame_ranges(tmp_path):
    _otb_tree(tmp_path, "David", 471, 770)
    _otb_tree(tmp_path, "Tiger1", 354, 354)
    _otb_tree(tmp_path, "Board", 698, 698, nz=5)
    _otb_tree(tmp_path, "BlurCar1", 742, 988)
    _otb_tree(tmp_path, "KiteSurf", 84, 84, ext="png")
    _otb_tree(tmp_path, "Freeman3", 460, 460)
    seqs = {s.name: s for s in load_dataset("otb100", tmp_path, sequences=["David", "Tiger1", "Board", "BlurCar1", "KiteSurf", "Freeman3"])}
    assert (seqs["David"].frames[0].name, len(seqs["David"])) == ("0300.jpg", 471)
    assert (seqs["BlurCar1"].frames[0].name, seqs["BlurCar1"].frames[-1].name, len(seqs["BlurCar1"])) == ("0247.jpg", "0988.jpg", 742)
    # Tiger1: the first 5 frames are omitted; the sequence starts at frame 6 with row 6 of the file
    assert (seqs["Tiger1"].frames[0].name, len(seqs["Tiger1"])) == ("0006.jpg", 349)
    np.testing.assert_array_equal(seqs["Tiger1"].boxes[0], [15 - 1, 25 - 1, 30, 40])
    assert seqs["Tiger1"].meta["first_frame"] == 6
    assert seqs["Board"].frames[0].name == "00001.jpg"
    assert seqs["KiteSurf"].frames[0].suffix == ".png"
    assert len(seqs["Freeman3"]) == 460


def test_otb_two_targets_and_human4(tmp_path):
    _otb_tree(tmp_path, "Jogging-1", 307, 307, folder="Jogging", anno="groundtruth_rect.1.txt")
    (tmp_path / "Jogging/groundtruth_rect.2.txt").write_text("".join(f"{100 + i}\t{50}\t20\t60\n" for i in range(307)))
    _otb_tree(tmp_path, "Human4-2", 667, 667, folder="Human4", anno="groundtruth_rect.2.txt")
    (tmp_path / "Human4/groundtruth_rect.1.txt").write_text("")     # empty in the real dataset, never read
    h4, j1, j2 = load_dataset("otb100", tmp_path, sequences=["Jogging-1", "Jogging-2", "Human4-2"])  # table order
    assert (j1.name, j2.name, h4.name) == ("Jogging-1", "Jogging-2", "Human4-2")
    assert j1.frames == j2.frames and len(h4) == 667
    np.testing.assert_array_equal(j1.boxes[0], [9, 19, 30, 40])
    np.testing.assert_array_equal(j2.boxes[0], [99, 49, 20, 60])
    assert h4.meta["anno"].endswith("groundtruth_rect.2.txt")


def test_otb_table_facts():
    t = {e["name"]: e for e in B.OTB100}
    assert len(t) == 100 and len({e["dir"] for e in B.OTB100}) == 98
    assert [(t[n]["start"], t[n]["end"]) for n in ("David", "BlurCar1", "BlurCar3", "BlurCar4", "Football1", "Freeman3", "Freeman4", "Diving")] == \
        [(300, 770), (247, 988), (3, 359), (18, 397), (1, 74), (1, 460), (1, 283), (1, 215)]
    assert t["Tiger1"]["omit"] == 5 and t["Board"]["nz"] == 5


# ---------------------------------------------------------------- tiny copies of every other layout
def test_tiny_layouts_through_load_dataset(tmp_path):
    d70 = load_dataset("dtb70", F.make_tiny_dtb70(tmp_path / "dtb70"), sequences=["Animal1"])[0]
    np.testing.assert_array_equal(d70.boxes[0], [2, 3, 10, 8])
    vot = load_dataset("vot2019", F.make_tiny_vot(tmp_path / "vot", ("ants1", "bolt1")))
    assert [s.name for s in vot] == ["ants1", "bolt1"] and set(vot[0].attrs) == {"occlusion", "camera_motion"}
    la = load_dataset("lasot", F.make_tiny_lasot(tmp_path / "lasot"), split="all")
    assert [s.name for s in la] == ["airplane-1", "airplane-2"] and la[0].absent.sum() == 2
    tn = F.make_tiny_trackingnet(tmp_path / "tn")
    assert len(load_dataset("trackingnet", tn, split="TRAIN_0")[0]) == 12 and load_dataset("trackingnet", tn)[0].meta["first_frame_only"]
    g = F.make_tiny_got10k(tmp_path / "got")
    assert load_dataset("got10k", g, split="train")[0].absent.tolist() == [False, False, True, False, False]
    vid = load_dataset("imagenet_vid", T.make_tiny_imagenet_vid(tmp_path / "ilsvrc"))
    assert [len(s) for s in vid] == [4, 2] and np.isnan(vid[1].boxes).sum() == 0
    det = load_dataset("imagenet_det", T.make_tiny_imagenet_det(tmp_path / "ilsvrc"))
    assert len(det) == 2 and all(s.meta["static"] and len(s) == 1 for s in det)          # inclusive: 5..5 is 1 px wide
    coco = load_dataset("coco", T.make_tiny_coco(tmp_path / "coco"), split="val2017")
    assert [s.name for s in coco] == ["139/1", "285/3"] and coco[0].meta["static"]
    yt = load_dataset("youtube_bb", T.make_tiny_youtube_bb(tmp_path / "yt"), split="validation")
    assert [s.name for s in yt] == ["AAB6lO-XiKE/0/0", "AAB6lO-XiKE/10/1"]
    for s in [d70, *vot, *la, *vid, *det, *coco, *yt]:
        assert isinstance(s, Sequence) and s.boxes.shape == (len(s), 4) and all(f.is_file() for f in s.frames)


def test_readers_never_decode(tmp_path, monkeypatch):
    def boom(*a, **k): raise AssertionError("a reader decoded an image")
    roots = dict(vot2019=F.make_tiny_vot(tmp_path / "b"),
                 imagenet_vid=T.make_tiny_imagenet_vid(tmp_path / "c"), coco=T.make_tiny_coco(tmp_path / "d"))
    monkeypatch.setattr(cv2, "imread", boom)
    for name, root in roots.items():
        assert load_dataset(name, root, split="val2017" if name == "coco" else None)
    assert load_dataset("dtb70", F.make_tiny_dtb70(tmp_path / "a"), sequences=["Animal1"])


def test_unknown_dataset_lists_known(tmp_path):
    with pytest.raises(DSTError, match=r"unknown dataset 'otb50', expected one of \[.*'otb100'.*'youtube_bb'\]"):
        load_dataset("otb50", tmp_path)
    assert {"otb100", "dtb70", "vot2019", "lasot", "trackingnet", "got10k", "imagenet_vid", "imagenet_det", "coco", "youtube_bb",
            "synth"} <= set(known_datasets())


# ---------------------------------------------------------------- bad input
@pytest.fixture
def dtb(tmp_path):
    root = F.make_tiny_dtb70(tmp_path / "dtb70", names=("Car2",))
    return root, root / "Car2/groundtruth_rect.txt"


@pytest.mark.parametrize("text, msg", [
    ("", r"groundtruth_rect.txt: annotation file is empty, expected one row of 4 numbers"),
    ("\n\n", r"annotation file is empty"),
    ("3,4,10,8\n4,5,10\n", r"groundtruth_rect.txt:2: 3 values, expected 4"),
    ("3,4,10,8\n4;5;10;8\n", r"groundtruth_rect.txt:2: 1 values, expected 4"),
    ("3,4,10,8\n4,5,1O,8\n", r"groundtruth_rect.txt:2: '1O' is not a number"),
    ("3,4,10,8\nnan,5,10,8\n", r"groundtruth_rect.txt:2: NaN or infinite value"),
    ("3,4,10,8\n4,5,-10,8\n", r"groundtruth_rect.txt:2: negative width or height"),
    ("3,4,0,8\n4,5,10,8\n", r"groundtruth_rect.txt:1: first box .* cannot be initialised"),
])
def test_bad_annotation_files(dtb, text, msg):
    root, gt = dtb
    rows = text.splitlines()
    gt.write_text(text + "5,5,10,8\n" * (5 - len(rows)) if text.strip() else text)   # 5 frames in the tiny copy
    with pytest.raises(DSTError, match=msg):
        load_dataset("dtb70", root, sequences=["Car2"])


def test_box_count_vs_frame_count(dtb):
    root, gt = dtb
    gt.write_text(gt.read_text() + "9,9,10,8\n")
    with pytest.raises(DSTError, match=r"groundtruth_rect.txt: 6 annotation rows but .*img holds 5 frames"):
        load_dataset("dtb70", root, sequences=["Car2"])


def test_zero_size_rows_become_no_box_and_partly_outside_boxes_are_kept(dtb):
    root, gt = dtb
    gt.write_text("-5,-3,10,8\n4,5,0,8\n25,20,30,30\n5,5,10,8\n5,5,10,8\n")   # frames are 32x24
    (s,) = load_dataset("dtb70", root, sequences=["Car2"])
    np.testing.assert_array_equal(s.boxes[0], [-6, -4, 10, 8])                 # partly outside: kept as is
    assert np.isnan(s.boxes[1]).all()                                          # zero width: no box
    np.testing.assert_array_equal(s.boxes[2], [24, 19, 30, 30])                # beyond the right/bottom edge: kept


def test_missing_and_corrupt_frames_are_found_by_verify_not_readers(tmp_path):
    from dst.data.verify import verify_dataset
    d = _otb_tree(tmp_path, "Crossing", 120, 120)
    for f in (d / "img").glob("*.jpg"):
        cv2.imwrite(str(f), np.zeros((200, 160, 3), np.uint8))   # frames that hold the boxes (verify checks that)
    (d / "img/0007.jpg").unlink()
    (d / "img/0009.jpg").write_bytes(b"\xff\xd8 truncated")
    (s,) = load_dataset("otb100", tmp_path, sequences=["Crossing"])           # the reader does not look at frames
    assert len(s) == 120
    with pytest.raises(DSTError, match="cannot decode"):
        s.image(8)
    rep = verify_dataset("otb100", tmp_path, sequences=["Crossing"], decode="all")
    assert rep.problems["Crossing"] == [f"1 of 120 frames missing (first: {d / 'img/0007.jpg'})",
                                        f"1 frame(s) cannot be decoded (first: {d / 'img/0009.jpg'})"]


def test_grayscale_and_16bit_frames(tmp_path):
    root = F.make_tiny_dtb70(tmp_path / "dtb70", names=("Gull1",))
    F.write_frames(root / "Gull1/img", [f"{i:05d}.jpg" for i in range(1, 6)], gray=True)
    (s,) = load_dataset("dtb70", root, sequences=["Gull1"])
    assert s.image(0).shape == (24, 32, 3) and s.image(0).dtype == np.uint8
    d = root / "Gull2"
    (d / "img").mkdir(parents=True)
    for i in range(1, 4):
        cv2.imwrite(str(d / "img" / f"{i:05d}.png"), np.full((6, 7), 40000, np.uint16))
    (d / "groundtruth_rect.txt").write_text("1,1,3,3\n" * 3)
    (g16,) = load_dataset("dtb70", root, sequences=["Gull2"])
    img = g16.image(2)
    assert img.shape == (6, 7, 3) and img.dtype == np.uint8 and int(img.max()) == round(40000 / 257)


def test_vot_bad_regions_and_tags(tmp_path):
    root = F.make_tiny_vot(tmp_path / "vot")
    gt = root / "ants1/groundtruth.txt"
    rows = gt.read_text().splitlines()
    gt.write_text("\n".join([rows[0], "1,2,3,4,5,6", *rows[2:]]) + "\n")
    with pytest.raises(DSTError, match=r"ants1/groundtruth.txt:2: 6 values, expected 4 or 8"):
        load_dataset("vot2019", root)
    gt.write_text("\n".join(rows) + "\n")
    (root / "ants1/occlusion.tag").write_text("0\n" * 9)
    with pytest.raises(DSTError, match=r"occlusion.tag: 9 labels for 4 frames"):
        load_dataset("vot2019", root)
    (root / "ants1/occlusion.tag").write_text("0\n")
    (root / "list.txt").write_text("\n")
    with pytest.raises(DSTError, match="list.txt: sequence list is empty"):
        load_dataset("vot2019", root)


def test_first_frame_only_test_splits(tmp_path):
    g = F.make_tiny_got10k(tmp_path / "got")
    gt = g / "test/GOT-10k_Test_000001/groundtruth.txt"
    gt.write_text("1,2,10,6\n2,3,10,6\n")
    with pytest.raises(DSTError, match=r"2 rows for 5 frames, expected 1 \(first frame only\) or 5"):
        load_dataset("got10k", g)
    with pytest.raises(DSTError, match=r"unknown split 'holdout'"):
        load_dataset("got10k", g, split="holdout")
    (g / "val").mkdir()
    with pytest.raises(DSTError, match=r"val/list.txt: sequence list is missing"):
        load_dataset("got10k", g, split="val")


def test_lasot_label_length_and_unknown_sequence(tmp_path):
    la = F.make_tiny_lasot(tmp_path / "lasot")
    (la / "airplane/airplane-1/out_of_view.txt").write_text("0,0,0")
    with pytest.raises(DSTError, match=r"out_of_view.txt: 3 labels for 6 frames"):
        load_dataset("lasot", la, sequences=["airplane-1"])
    with pytest.raises(DSTError, match=r"unknown sequence\(s\) \['airplane-99'\]"):
        load_dataset("lasot", la, sequences=["airplane-99"])


def test_training_set_bad_input(tmp_path):
    vid = T.make_tiny_imagenet_vid(tmp_path / "ilsvrc")
    x = next((vid / "Annotations/VID/train").rglob("000002.xml"))
    x.write_text(x.read_text()[:-20])
    with pytest.raises(DSTError, match=r"000002.xml: not a readable XML annotation"):
        load_dataset("imagenet_vid", vid)
    coco = T.make_tiny_coco(tmp_path / "coco")
    (coco / "annotations/instances_val2017.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(DSTError, match=r"instances_val2017.json: no 'categories' list"):
        load_dataset("coco", coco, split="val2017")
    with pytest.raises(DSTError, match=r"instances_train2017.json: COCO instances file missing"):
        load_dataset("coco", coco)
    yt = T.make_tiny_youtube_bb(tmp_path / "yt")
    csv = yt / "yt_bb_detection_validation.csv"
    csv.write_text(csv.read_text() + "AAB6lO-XiKE,3000,0,person,0,present,0.9,0.1,0.0,0.5\n")
    with pytest.raises(DSTError, match=r"yt_bb_detection_validation.csv:6: xmax < xmin"):
        load_dataset("youtube_bb", yt, split="validation")
