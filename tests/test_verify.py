"""Data manifests and `dst data verify`: the JSON files are up to date with the readers' tables, say what the issue
asks for, and the verifier reports missing or malformed data sequence by sequence with the right exit status."""
import json
import subprocess
import sys

import pytest

from dst.cli import main
from dst.data import benchmarks as B, fixtures as F, training_sets as T
from dst.data.verify import DATASET_INFO, build_manifest, load_manifest, verify_dataset, write_manifests

NAMES = ["otb100", "dtb70", "vot2019", "lasot", "trackingnet", "got10k", "imagenet_vid", "imagenet_det", "coco", "youtube_bb", "realtrain", "synth"]


# ---------------------------------------------------------------- manifests
def test_manifest_files_are_up_to_date(root):
    folder = root / "data_manifests"
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(NAMES)
    for n in NAMES:
        assert json.loads((folder / f"{n}.json").read_text()) == build_manifest(n), \
            f"data_manifests/{n}.json is stale: run `dst data manifests --write`"


def test_manifest_contents():
    for n in NAMES:
        m = load_manifest(n)
        assert {"name", "title", "home", "terms", "archives", "checksums", "layout", "index_base", "load"} <= set(m), n
        assert m["name"] == n and "required" in m["layout"]
    assert all(load_manifest(n)["checksums"] == "publisher gives none" for n in NAMES if n not in ("synth", "realtrain"))
    rt = load_manifest("realtrain")["sequences"]                 # each clip names its public source, cuts of one video share a group
    assert len(rt) == 32 and all(s["repository"].startswith("https://github.com/") and len(s["commit"]) == 40 for s in rt)
    assert {s["group"] for s in rt if s["name"].startswith("UAV123_10fps_car16")} == {"UAV123_10fps_car16"}
    otb = load_manifest("otb100")["sequences"]
    assert len(otb) == 100 and len({s["name"] for s in otb}) == 100
    by = {s["name"]: s for s in otb}
    assert by["David"]["frames"] == [300, 770] and by["Tiger1"]["omit"] == 5 and by["Football1"]["frames"] == [1, 74]
    assert by["Human4-2"]["anno"] == "groundtruth_rect.2.txt" and by["Skating2-1"]["dir"] == "Skating2"
    assert len(load_manifest("vot2019")["sequences"]) == 60 and len(load_manifest("dtb70")["sequences"]) == 70
    assert len(load_manifest("lasot")["sequences"]["test"]) == 280
    assert load_manifest("got10k")["splits"] == {"train": 9335, "val": 180, "test": 180}
    assert load_manifest("trackingnet")["splits"]["test"] == 511


def test_write_manifests_elsewhere(tmp_path):
    paths = write_manifests(tmp_path)
    assert len(paths) == len(DATASET_INFO)
    assert load_manifest("coco", tmp_path) == build_manifest("coco")
    (tmp_path / "coco.json").write_text("{")
    with pytest.raises(Exception, match=r"coco.json: not valid JSON"):
        load_manifest("coco", tmp_path)


# ---------------------------------------------------------------- verify on the real fixtures
def test_verify_fixtures(fixtures):
    rep = verify_dataset("otb100", fixtures / "otb", sequences=["Crossing", "Football1"], decode="all")
    assert rep.ok and rep.checked == {"Crossing": 120, "Football1": 74}
    assert rep.notes == {"Football1": ["81 images, 74 annotated (frames 1-74 evaluated)"]}
    full = verify_dataset("otb100", fixtures / "otb")
    assert not full.ok and len(full.missing) == 98 and "Basketball" in full.missing
    vot = verify_dataset("vot2019", fixtures / "vot2019", decode="all")
    assert vot.checked == {"bag": 196} and "bag" not in vot.problems
    assert vot.notes["(list)"] == ["1 listed sequence(s) are not VOT2019 sequences: ['bag']"]


def test_cli_exit_codes(fixtures, tmp_path, capsys):
    assert main(["data", "verify", "otb100", "--root", str(fixtures / "otb"), "--sequences", "Crossing,Football1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["ok   Crossing: 120 frames", "ok   Football1: 74 frames"] and out[-1].endswith(": OK")
    assert main(["data", "verify", "otb100", "--root", str(fixtures / "otb"), "--quiet"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("MISS 98 sequences (first: Basketball") and out[-1].endswith("98 missing: PROBLEMS FOUND")
    assert main(["data", "verify", "got10k", "--root", str(tmp_path), "--split", "holdout"]) == 2
    assert "unknown split 'holdout'" in capsys.readouterr().err


def test_cli_subprocess_end_to_end(fixtures):
    r = subprocess.run([sys.executable, "-m", "dst", "data", "verify", "vot2019", "--root", str(fixtures / "vot2019")],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "ok   bag: 196 frames" in r.stdout and "list.txt lacks 60 of the 60 VOT2019 sequences" in r.stdout


# ---------------------------------------------------------------- verify tiny copies of every layout, then break them
@pytest.mark.parametrize("name, make, split", [
    ("dtb70", lambda p: F.make_tiny_dtb70(p, names=B.DTB70_NAMES), None),
    ("lasot", lambda p: F.make_tiny_lasot(p), "all"),
    ("trackingnet", F.make_tiny_trackingnet, "test"),
    ("trackingnet", F.make_tiny_trackingnet, "TRAIN_0"),
    ("got10k", F.make_tiny_got10k, "train"),
    ("got10k", F.make_tiny_got10k, "test"),
    ("imagenet_vid", T.make_tiny_imagenet_vid, "train"),
    ("imagenet_det", T.make_tiny_imagenet_det, "train"),
    ("coco", T.make_tiny_coco, "val2017"),
    ("youtube_bb", T.make_tiny_youtube_bb, "validation"),
])
def test_verify_tiny_layouts_ok(tmp_path, name, make, split):
    root = make(tmp_path / name)
    rep = verify_dataset(name, root, split, decode="all")
    assert rep.ok, rep.lines()
    assert rep.checked and not rep.problems


def test_verify_vot_tiny_with_full_list(tmp_path):
    root = F.make_tiny_vot(tmp_path / "vot", tuple(B.VOT2019_NAMES[:3]))
    (root / "list.txt").write_text("\n".join(B.VOT2019_NAMES) + "\n")
    rep = verify_dataset("vot2019", root)
    assert len(rep.checked) == 3 and len(rep.missing) == 57 and not rep.ok
    assert "(list)" not in rep.problems and set(rep.missing) == set(B.VOT2019_NAMES[3:])


def test_verify_reports_each_broken_sequence(tmp_path):
    root = F.make_tiny_dtb70(tmp_path / "dtb70", names=("Animal1", "BMX2", "Car2", "Girl1", "Gull1"), n=6)
    (root / "Animal1/img/00003.jpg").unlink()                                           # a frame missing
    (root / "BMX2/img/00002.jpg").write_bytes(b"garbage")                               # a corrupt frame
    (root / "Car2/groundtruth_rect.txt").write_text("")                                 # an empty annotation
    (root / "Girl1/groundtruth_rect.txt").write_text("1,2,3,4\n" * 5 + "1,2,x,4\n")     # an unparsable line
    (root / "Gull1/groundtruth_rect.txt").write_text("1,2,3,4\n1,2,0,0\n" + "1,2,3,4\n" * 4)   # a zero-size box: a note
    rep = verify_dataset("dtb70", root, sequences=["Animal1", "BMX2", "Car2", "Girl1", "Gull1"], decode="all")
    assert sorted(rep.problems) == ["Animal1", "BMX2", "Car2", "Girl1"]
    assert "6 annotation rows but" in rep.problems["Animal1"][0] and "holds 5 frames" in rep.problems["Animal1"][0]
    assert rep.problems["BMX2"] == [f"1 frame(s) cannot be decoded (first: {root / 'BMX2/img/00002.jpg'})"]
    assert "annotation file is empty" in rep.problems["Car2"][0]
    assert rep.problems["Girl1"] == [f"{root / 'Girl1/groundtruth_rect.txt'}:6: 'x' is not a number, expected 4 numbers"]
    assert rep.checked == {"BMX2": 6, "Gull1": 6}
    assert rep.notes["Gull1"] == ["1 frame(s) without a box (zero-size rows), first at frame 2"]
    assert rep.summary().endswith("5 sequences checked, 1 ok, 4 with problems, 0 missing: PROBLEMS FOUND")


def test_verify_layout_and_training_sets(tmp_path):
    rep = verify_dataset("got10k", tmp_path / "nowhere", "val")
    assert rep.problems == {"(root)": [f"{tmp_path / 'nowhere'}: folder missing"]}
    (tmp_path / "empty").mkdir()
    rep = verify_dataset("coco", tmp_path / "empty", "val2017")
    assert any("nothing matches 'annotations/instances_val2017.json'" in m for m in rep.problems["(layout)"])
    assert "COCO instances file missing" in rep.problems["(annotations)"][0]
    yt = T.make_tiny_youtube_bb(tmp_path / "yt")
    (yt / "frames/AAB6lO-XiKE/1000.jpg").unlink()
    rep = verify_dataset("youtube_bb", yt, "validation")
    assert rep.problems == {"AAB6lO-XiKE/0/0": [f"1 of 3 frames missing (first: {yt / 'frames/AAB6lO-XiKE/1000.jpg'})"]}
    assert rep.notes["(segments)"] == ["1 segment(s) skipped: their video has no decoded frame, or the object is never present"]
    vid = T.make_tiny_imagenet_vid(tmp_path / "vid")
    rep = verify_dataset("imagenet_vid", vid, limit=1)
    assert list(rep.checked) == ["ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000/0"]


def test_verify_synth_finds_a_missing_frame(tmp_path):
    """A missing folder fails; a generated benchmark passes both splits; a deleted frame fails its sequence, rows against frames."""
    from dst.data.synth import generate
    empty = verify_dataset("synth", tmp_path / "none")
    assert not empty.ok and "folder missing" in empty.problems["(root)"][0]
    generate(tmp_path / "s", sequences=(2, 1), frames=6, size=(96, 72), progress=False)
    for split, n in (("train", 2), ("test", 1)):
        rep = verify_dataset("synth", tmp_path / "s", split=split, decode="all")
        assert rep.ok and len(rep.checked) == n and set(rep.checked.values()) == {6}, rep.lines()
    victim = sorted((tmp_path / "s" / "test").rglob("*.jpg"))[3]
    victim.unlink()
    rep = verify_dataset("synth", tmp_path / "s", split="test", decode="all")
    msgs = [m for ms in rep.problems.values() for m in ms]
    assert not rep.ok and len(msgs) == 1 and "groundtruth_rect.txt: 6 rows for a sequence of 5 frames" in msgs[0], rep.lines()
