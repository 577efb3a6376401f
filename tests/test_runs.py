"""dst.runs, the run-folder layout: the notebooks that read run folders open them through it, and old receipts stay readable."""
import json

import pytest

from dst import runs
from dst.core import DSTError, repo_root
from dst.devtools import example_run


def _cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("item", runs.PAPER_ITEMS)
def test_paper_notebooks_open_with_one_line(item):
    code = _cells(runs.notebook_path(item))
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), "papermill needs the parameters cell first"
    first = "".join(code[1]["source"])
    assert first.count("rp.open_item(run_dir, out_dir, paper_numbers") == 1, first
    body = "".join("".join(c["source"]) for c in code)
    assert "rp.load_run(" not in body and "rp.paper_numbers(paper_numbers)" not in body and "rp.report_dir(" not in body


@pytest.mark.parametrize("stage", list(runs.STAGE_NOTEBOOKS))
def test_stage_notebooks_open_with_one_line(stage):
    code = _cells(runs.notebook_path(stage))
    assert "parameters" in code[0].get("metadata", {}).get("tags", [])
    first = "".join(code[1]["source"])
    assert f'run_dir, params, out, t0 = runs.open_stage("{stage}", globals())' in first, first
    assert "params = dict(" not in first and "begin_stage" not in first


def test_open_stage_records_every_declared_parameter(tmp_path):
    for stage in runs.STAGE_NOTEBOOKS:
        ns = {**runs.declared(runs.notebook_path(stage)), "run_dir": str(tmp_path/"r")}
        run_dir, params, out, t0 = runs.open_stage(stage, ns)
        assert params == ns and out == tmp_path/"r"/runs.STAGE_DIRS[stage]
        assert json.loads((out/"parameters.json").read_text()) == params


def test_old_receipts_stay_readable(tmp_path):
    d = example_run(tmp_path/"old")          # stage 1's `data` is the pre-mix dict {dataset, root, real}
    assert runs.read_training_data(d) == [dict(dataset="synth", root=str(d/"data/synth"), split="train", frame_filter="permissive")]
    m = json.loads((d/"1_teacher/metrics.json").read_text())
    m["data"] = [dict(dataset="synth", root="data/synth", split="train", frame_filter="permissive", weight=0.6),
                 dict(dataset="got10k", root="/data/realtrain", split="train", frame_filter="small", weight=0.4)]
    (d/"1_teacher/metrics.json").write_text(json.dumps(m))
    assert [x["root"] for x in runs.read_training_data(d)] == [str(d/"data/synth"), "/data/realtrain"]
    run = runs.load_run(d, need=["teacher", "4_benchmark"])
    assert run.checkpoint("TSsKD/dull") == d/"3_students/runs/TSsKD/students/s0.pt"
    assert list(runs.run_models(d))[0] == "teacher" and "TSsKD/intelligent" in runs.run_models(d)


def test_stage_names_and_folders(tmp_path):
    assert [runs.stage_name(f) for f in runs.STAGE_DIRS.values()] == list(runs.STAGES)
    with pytest.raises(DSTError, match="expected one of"):
        runs.stage_dir(tmp_path, "training")
    with pytest.raises(DSTError, match=r"has no 2_select/metrics.json: run `dst run select --out"):
        runs.read_stage(tmp_path, "select")
    assert runs.resolve_run_dir("runs/x") == repo_root()/"runs/x"
    with pytest.raises(DSTError, match="no such folder"):
        runs.run_checkpoints(tmp_path/"missing")
