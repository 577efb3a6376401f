"""A user's own folder of sequences, with names no benchmark knows, in OTB, VOT or GOT-10k layout: read with
layout detection (`load_dataset("folder", root)`), tracked, and scored with the layout's protocol."""
import os

import numpy as np
import pytest

from dst.cli import main
from dst.data.datasets import load_dataset
from dst.data.folders import folder_benchmark, folder_sequences
from dst.explore.tracker import explorer_sequences
from dst.track.runners import run_benchmark


@pytest.fixture(scope="module")
def mine(tmp_path_factory, fixtures):
    """The real fixtures renamed and laid out as a user might keep them: one folder per layout."""
    root = tmp_path_factory.mktemp("mine")
    (root / "otb").mkdir()
    os.symlink(fixtures / "otb" / "Crossing", root / "otb" / "street crossing")
    os.symlink(fixtures / "otb" / "Football1", root / "otb" / "match_07")      # 81 images, 74 rows
    (root / "vot").mkdir()
    os.symlink(fixtures / "vot2019" / "bag", root / "vot" / "plastic-bag")
    d = root / "got" / "player"                                                 # GOT-10k style: frames + 0-based groundtruth.txt
    d.mkdir(parents=True)
    rows = np.loadtxt(fixtures / "otb" / "Football1" / "groundtruth_rect.txt", delimiter=",")[:30]
    rows[:, :2] -= 1
    np.savetxt(d / "groundtruth.txt", rows, fmt="%.2f", delimiter=",")
    for i in range(1, 31):
        os.symlink(fixtures / "otb" / "Football1" / "img" / f"{i:04d}.jpg", d / f"{i:08d}.jpg")
    return root


def test_layouts_are_detected(mine):
    assert folder_sequences(mine / "otb") == {"match_07": "otb", "street crossing": "otb"}
    assert folder_sequences(mine / "vot") == {"plastic-bag": "vot"}
    assert folder_sequences(mine / "got") == {"player": "got10k"}
    m, c = load_dataset("folder", mine / "otb")
    assert (m.name, len(m), c.name, len(c)) == ("match_07", 74, "street crossing", 120)
    want = np.loadtxt(mine / "otb" / "street crossing" / "groundtruth_rect.txt")[0]
    assert np.allclose(c.boxes[0], want - [1, 1, 0, 0])                          # OTB files are 1-based
    (p,) = load_dataset("folder", mine / "got")
    assert np.allclose(p.boxes[:30], m.boxes[:30], atol=0.006)                    # the same boxes, written 0-based
    (b,) = load_dataset("folder", mine / "vot")
    assert len(b) == 196 and b.meta["polygons"].shape == (196, 8)


@pytest.mark.parametrize("layout,frames", [("otb", 25), ("got", 25), ("vot", 40)])
def test_track_and_score_a_custom_folder(tmp_path, mine, layout, frames, capsys):
    bench, protocol = folder_benchmark(mine / layout)
    seqs = load_dataset("folder", mine / layout)
    from dst.data.sequences import Sequence
    short = [Sequence(s.name, s.frames[:frames], s.boxes[:frames], s.absent, s.attrs,
                      {**s.meta, **({"polygons": s.meta["polygons"][:frames]} if "polygons" in s.meta else {})}) for s in seqs]
    r = run_benchmark("siamfc@0.25", short, tmp_path, bench, protocol, name="fc", progress=False)
    assert r["tracked"] == len(seqs)
    names = ",".join(s.name for s in seqs)
    # score the short runs: the ground truth cut the same way, through the evaluation API the CLI uses
    from dst.eval.cli import evaluate
    out = evaluate(short, tmp_path / bench / "fc")
    assert out["n_sequences"] == len(seqs) and out["fps"] > 0
    key = {"otb": "auc", "got": "ao", "vot": "accuracy"}[layout]
    assert 0 <= out["metrics"][key] <= 1
    assert out["protocol"] == {"otb": "otb", "got": "got10k", "vot": "vot2019"}[layout]
    assert names


def test_dst_eval_scores_a_custom_folder(tmp_path, mine, capsys):
    seqs = load_dataset("folder", mine / "otb")
    run_benchmark("static", seqs, tmp_path, "otb-folder", name="static", progress=False)
    assert main(["eval", "--dataset", "folder", "--root", str(mine / "otb"), "--results", str(tmp_path / "otb-folder" / "static")]) == 0
    out = capsys.readouterr().out
    assert "static on otb-folder (2 sequences, otb protocol)" in out and "street crossing" in out


def test_dst_data_verify_checks_a_custom_folder(tmp_path, mine, fixtures, capsys):
    """Every layout verifies under any names; a sequence with a frame missing fails, naming its annotation file and the counts."""
    for k, names in (("otb", ["match_07", "street crossing"]), ("vot", ["plastic-bag"]), ("got", ["player"])):
        assert main(["data", "verify", "folder", "--root", str(mine / k)]) == 0
        out = capsys.readouterr().out
        assert f"{len(names)} sequence{'s' * (len(names) > 1)} checked, {len(names)} ok" in out and all(f"ok   {n}:" in out for n in names), out
    import shutil
    shutil.copytree(fixtures / "otb" / "Crossing", tmp_path / "walk")
    (tmp_path / "walk" / "img" / "0005.jpg").unlink()
    assert main(["data", "verify", "folder", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL walk:" in out and "groundtruth_rect.txt: 120 annotation rows" in out and "119 frames" in out, out


def test_explorers_take_a_custom_folder(mine):
    got = explorer_sequences(load_dataset("folder", mine / "otb"))
    assert list(got) == ["match_07", "street crossing"]


def test_bad_folders(tmp_path, mine):
    from dst.core import DSTError
    with pytest.raises(DSTError, match="no sequence folders"):
        folder_benchmark(tmp_path)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for k, s in (("otb", "street crossing"), ("vot", "plastic-bag")):
        os.symlink(mine / k / s, mixed / s)
    with pytest.raises(DSTError, match="several layouts"):
        folder_benchmark(mixed)
    with pytest.raises(DSTError, match="dataset root folder is missing"):
        load_dataset("folder", tmp_path / "nope")
