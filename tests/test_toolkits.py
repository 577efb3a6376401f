"""The public toolkits run dst models unchanged: got10k's own `ExperimentOTB` on an OTB-layout copy of the real
fixtures, and the VOT toolkit's `vot test` / `vot evaluate` / `vot analysis` on a workspace made from `bag`.
Both toolkits are an optional extra (`pip install -e ".[toolkits]"`, which `make test` installs); without
them these tests skip."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dst.cli import main
from dst.data.datasets import load_dataset
from dst.data.sequences import Sequence
from dst.track.runners import run_benchmark
from dst.eval.toolkits import got10k_tracker


@pytest.fixture()
def otb_copy(tmp_path, fixtures):
    """An OTB-layout root holding the two fixture sequences (linked, not copied)."""
    root = tmp_path / "OTB"
    root.mkdir()
    for s in ("Crossing", "Football1"):
        os.symlink(fixtures / "otb" / s, root / s)
    return root


def test_got10k_experiment_otb_runs_a_dst_model(tmp_path, otb_copy, monkeypatch):
    pytest.importorskip("got10k", reason="the got10k toolkit is an optional extra: pip install -e '.[toolkits]'")
    from got10k.datasets.otb import OTB
    from got10k.experiments import ExperimentOTB
    from got10k.trackers import Tracker
    monkeypatch.setattr(OTB, "_download", lambda self, root_dir, version: None)   # offline: the two sequences are all there is
    exp = ExperimentOTB(str(otb_copy), version=2015, result_dir=str(tmp_path / "results"), report_dir=str(tmp_path / "reports"))
    assert exp.dataset.seq_names == ["Crossing", "Football1"]
    tracker = got10k_tracker("siamfc@0.25", name="dst_fc")
    assert isinstance(tracker, Tracker) and tracker.is_deterministic
    exp.run(tracker)                                                         # the toolkit's own loop: PIL images, track()
    boxes = np.loadtxt(tmp_path / "results" / "OTB2015" / "dst_fc" / "Football1.txt", delimiter=",")
    assert boxes.shape == (74, 4) and np.isfinite(boxes).all() and (boxes[:, 2:] > 0).all()
    # dst's own runner writes the same layout, times included where the toolkit reads them (times/<seq>_time.txt)
    seqs = load_dataset("otb100", otb_copy, sequences=["Crossing", "Football1"])
    run_benchmark("siamfc@0.25", seqs, tmp_path / "results", "OTB2015", name="dst_track", progress=False)
    perf = exp.report(["dst_fc", "dst_track"])
    for name in ("dst_fc", "dst_track"):
        o = perf[name]["overall"]
        assert o["speed_fps"] > 0, f"{name}: speed -1 means the toolkit found no times"
        assert 0 <= o["success_score"] <= 1 and 0 <= o["precision_score"] <= 1
    assert (tmp_path / "reports" / "OTB2015" / "dst_fc" / "performance.json").is_file()


def _vot():
    pytest.importorskip("vot", reason="the VOT toolkit is an optional extra: pip install -e '.[toolkits]'")
    pytest.importorskip("trax", reason="vot-trax is an optional extra: pip install -e '.[toolkits]'")
    exe = Path(sys.executable).parent / "vot"
    if not exe.is_file():
        pytest.skip("the `vot` command is not installed beside this Python")
    return str(exe)


def _run(cmd, cwd, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    return r.returncode, r.stdout + r.stderr


def test_vot_toolkit_runs_a_dst_model(tmp_path, fixtures):
    vot = _vot()
    ws = tmp_path / "ws"
    n = 20
    assert main(["vot", "workspace", "--root", str(fixtures / "vot2019"), "--out", str(ws), "--frames", str(n)]) == 0
    assert main(["vot", "trackers", "--workspace", str(ws), "--model", "siamfc@0.25", "--id", "dst_fc"]) == 0
    rc, out = _run([vot, "test", "dst_fc"], ws)                            # TraX handshake on the toolkit's dummy sequence
    assert rc == 0 and "Test concluded successfuly" in out and "Error" not in out, out[-2000:]
    rc, out = _run([vot, "evaluate", "--workspace", str(ws), "dst_fc", "--experiments", "unsupervised"], ws)
    assert rc == 0 and "Evaluation concluded successfuly" in out, out[-2000:]
    t = np.loadtxt(ws / "results" / "dst_fc" / "unsupervised" / "bag" / "bag_001_time.value")
    assert t.shape == (n,) and (t[1:] > 0).all()                            # the toolkit records no time for the init frame
    # the supervised baseline, run by dst and imported: the toolkit's analysis reads it without running the tracker
    s = load_dataset("vot2019", fixtures / "vot2019")[0]
    s = Sequence(s.name, s.frames[:n], s.boxes[:n], meta={**s.meta, "polygons": s.meta["polygons"][:n]})
    run_benchmark("siamfc@0.25", [s], tmp_path / "res", "VOT2019", "vot", name="fc", progress=False)
    assert (tmp_path / "res" / "VOT2019" / "fc" / "baseline" / "bag" / "bag_001_time.value").is_file()
    assert main(["vot", "import", "--results", str(tmp_path / "res" / "VOT2019" / "fc"), "--workspace", str(ws), "--id", "dst_fc"]) == 0
    rc, out = _run([vot, "analysis", "--workspace", str(ws), "dst_fc", "--format", "json"], ws)
    assert rc == 0 and "Analysis successful" in out, out[-2000:]
    rep = json.loads(next((ws / "analysis").glob("*.json")).read_text())
    (acc, rob, *_), = rep["results"]["baseline"]["results"][0]
    assert 0 < acc <= 1 and rob >= 0


def test_trackers_ini_keeps_other_trackers(tmp_path, capsys):
    (tmp_path / "trackers.ini").write_text("[theirs]\nlabel = theirs\nprotocol = trax\ncommand = python their.py\n")
    assert main(["vot", "trackers", "--workspace", str(tmp_path), "--model", "siamfc@0.25", "--id", "dst_fc", "--hp", "scale_lr=0.5"]) == 0
    text = (tmp_path / "trackers.ini").read_text()
    assert "[theirs]" in text and "command = python their.py" in text and "[dst_fc]" in text and "scale_lr=0.5" in text
    assert main(["vot", "trackers", "--workspace", str(tmp_path), "--model", "static", "--id", "bad id"]) == 2
    assert "letters, digits" in capsys.readouterr().err
