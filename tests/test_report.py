"""dst.report (and dst.runs' load_run) on a hand-written run folder: loading, bad inputs, the paper's numbers present or missing,
the saved items and the headline."""
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from dst.core import DSTError, repo_root
from dst import report as rp, runs
from dst.devtools import example_run
from dst.runs import load_run, resolve_run_dir


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    return example_run(tmp_path/"tiny-siamfc")


@pytest.fixture()
def no_paper(tmp_path, monkeypatch):
    """A shared folder without paper_numbers.json."""
    empty = tmp_path/"shared"; empty.mkdir()
    monkeypatch.setenv("DST_SHARED", str(empty))
    return empty


def test_load_run(run_dir):
    run = load_run(run_dir, need=runs.STAGES[:4])
    assert (run.scale, run.family) == ("tiny", "siamfc")
    assert run.stand_in("otb100") == "synth" and run.dataset("synth")["n_sequences"] == 6
    assert run.path(run.stage("4_benchmark")["curves"]) == run_dir/"4_benchmark/curves.json"
    assert run.provenance()["commit"].startswith("0123456")


def test_missing_stage_names_the_command(run_dir):
    (run_dir/"4_benchmark/metrics.json").unlink()
    run = load_run(run_dir)                        # fine until a stage is asked for
    with pytest.raises(DSTError, match=r"has no 4_benchmark/metrics.json: run `dst run benchmark --out .*tiny-siamfc`"):
        run.stage("4_benchmark")
    with pytest.raises(DSTError, match="dst run benchmark"):
        load_run(run_dir, need=["4_benchmark"])
    with pytest.raises(DSTError, match="dst run benchmark"):
        rp.headline_table(run, {})


def test_not_a_run_folder(tmp_path):
    with pytest.raises(DSTError, match="does not exist"):
        load_run(tmp_path/"nowhere")
    (tmp_path/"empty").mkdir()
    with pytest.raises(DSTError, match="not a run folder .*dst run all"):
        load_run(tmp_path/"empty")


def test_broken_json_names_file_and_line(run_dir):
    (run_dir/"3_students/metrics.json").write_text('{"stage": "students",\n "runs": [oops]}\n')
    with pytest.raises(DSTError, match=r"3_students/metrics.json: not valid JSON .*line 2"):
        load_run(run_dir)


def test_relative_run_dir_from_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_run_dir("runs/x") == repo_root()/"runs/x"
    assert resolve_run_dir(tmp_path) == tmp_path


def test_scores_frame_keeps_unscored_models(run_dir):
    run = load_run(run_dir)
    s = rp.scores_frame(run, "synth", "otb", models=["TSsKD/dull", "nobody"], metrics=["auc", "precision"])
    assert s.loc["TSsKD/dull"].tolist() == [0.48, 0.62] and s.loc["nobody"].isna().all()
    v = rp.bench_scores(run, "vot2019", labels=True)     # null columns of other protocols are left out
    assert list(v.columns) == ["EAO", "A", "R", "FPS"] and v.attrs["protocol"] == "vot2019"


def test_paper_numbers_present(run_dir):
    paper = rp.paper_numbers()
    if not paper: pytest.skip("../shared/paper/paper_numbers.json is absent")
    assert rp.paper_frame(paper, "table5", "siamfc").loc["Student1", "TSsKD"] == 0.573
    assert "arXiv:1907.10586" in rp.paper_status(paper)


def test_paper_numbers_missing_is_stated(run_dir, no_paper, tmp_path):
    assert rp.paper_numbers() == {}
    with pytest.raises(DSTError, match="no such file"):
        rp.paper_numbers(tmp_path/"nope.json")
    t = rp.paper_frame({}, "table3")
    assert len(t) == 0 and "LaSOT AUC" in t.columns
    txt = rp.headline_text(load_run(run_dir))
    assert "not available" in txt.splitlines()[-1]
    assert "0.480 (–)" in txt                         # ours still shown


def test_beside_and_markdown():
    ours = pd.DataFrame({"AUC": [0.5, 0.25]}, index=pd.Index(["DSTfc", "mine"], name="tracker"))
    paper = pd.DataFrame({"AUC": [0.573, 0.581]}, index=["DSTfc", "SiamFC"])
    b = rp.beside(ours, paper)
    assert b.index.tolist() == ["DSTfc", "mine", "SiamFC"] and b.columns.tolist() == [("AUC", "ours"), ("AUC", "paper")]
    assert rp.markdown_table(b).splitlines() == ["| tracker | AUC ours | AUC paper |", "|---|---:|---:|",
                                                 "| DSTfc | 0.500 | 0.573 |", "| mine | 0.250 | – |", "| SiamFC | – | 0.581 |"]


def test_provenance_note(run_dir):
    run = load_run(run_dir)
    assert rp.provenance_note(run, "dtb70") == ("Our numbers: tiny scale, SiamFC family, synthetic test split (6 sequences), standing in for "
                                                "DTB70, whose data was not given; trained on the synthetic train split; cpu; commit 0123456 of 2026-01-02.")


def test_save_item_and_report_index(run_dir, tmp_path):
    import matplotlib.pyplot as plt
    out = tmp_path/"report"
    fig, ax = plt.subplots(); ax.plot([0, 1])
    rp.save_item("fig6_n_students", pd.DataFrame({"AUC": [0.5]}), fig, out, title="Fig. 6", note="a note", dataset="synth", real=False)
    rp.save_item("table2_dtb70", pd.DataFrame({"AUC": [0.5]}), None, out, title="Table 2")
    rp.save_item("fig6_n_students", pd.DataFrame({"AUC": [0.6]}), None, out, title="Fig. 6 again")
    plt.close(fig)
    items = json.loads((out/"report.json").read_text())
    assert [(i["name"], i["title"]) for i in items] == [("table2_dtb70", "Table 2"), ("fig6_n_students", "Fig. 6 again")]
    assert (out/"fig6_n_students.png").stat().st_size > 0 and "0.600" in (out/"fig6_n_students.md").read_text()
    (out/"report.json").write_text('{"not": "a list"}')
    with pytest.raises(DSTError, match="expected a list"):
        rp.save_item("x", pd.DataFrame({"a": [1]}), None, out)


def test_headline(run_dir):
    run = load_run(run_dir)
    h = rp.headline_table(run, rp.paper_numbers())
    assert h.index.tolist() == ["teacher", "intelligent", "dull"]
    assert h.loc["dull", ("AUC", "ours")] == 0.48 and math.isclose(h.loc["dull", ("Compression (x)", "ours")], 9.4 / 0.7)
    assert math.isclose(h.loc["intelligent", ("Speed-up (x)", "ours")], 1.5)
    txt = rp.headline_text(run)
    assert txt.splitlines()[1].split()[:3] == ["model", "AUC", "DP@20px"]
    assert txt.splitlines()[-1].startswith("Our numbers: tiny scale, SiamFC family, synthetic test split (6 sequences)")
    assert txt.splitlines()[2].split()[:3] == ["teacher", "0.600", "(0.581)"]     # ours, then the paper's in brackets


def test_paper_notebook_renders_without_paper_numbers(run_dir, no_paper, tmp_path):
    """One paper notebook end to end on the hand-written run, with no paper numbers to be found."""
    pm = pytest.importorskip("papermill")
    nb = repo_root()/"nbs/paper/table2_dtb70.ipynb"
    out = tmp_path/"report"
    pm.execute_notebook(str(nb), str(tmp_path/"out.ipynb"), parameters=dict(run_dir=str(run_dir), out_dir=str(out)),
                        kernel_name="python3", cwd=str(repo_root()), progress_bar=False)
    md = (out/"table2_dtb70.md").read_text()
    assert "standing in for DTB70, whose data was not given" in md and "paper's numbers are not available" in md
    assert "| DSTfc | 0.6200 | – |" in md
    assert json.loads((out/"report.json").read_text())[0]["real"] is False
