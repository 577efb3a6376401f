"""The papermill pipeline end to end at the `tiny` scale: every stage notebook and every paper notebook executes,
writes its receipt, is skipped when complete and resumes when broken."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

from dst.core import DSTError, fixtures_dir
from dst import pipeline as pl, runs

ROOT = Path(__file__).resolve().parents[1]
DST = [sys.executable, "-m", "dst"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    "One complete tiny SiamFC run (teacher, select, students, benchmark, report)."
    out = tmp_path_factory.mktemp("runs")/"tiny-siamfc"
    info = pl.run_pipeline("all", "tiny", "siamfc", out, progress=False)
    return out, info


def test_every_stage_ran_and_left_a_receipt(tiny_run):
    out, info = tiny_run
    assert list(info["stages"]) == list(runs.STAGES)
    assert all(s["status"] == "complete" and s["last"] == "ran" for s in info["stages"].values())
    for stage in runs.STAGES[:4]:
        d = runs.stage_dir(out, stage)
        m = json.loads((d/"metrics.json").read_text())
        assert m["stage"] == stage and m["scale"] == "tiny" and m["family"] == "siamfc"
        assert m["provenance"]["commit"] and m["parameters"] == json.loads((d/"parameters.json").read_text())
        nb = json.loads((d/"notebook.ipynb").read_text())          # the executed notebook, with its outputs
        assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
        assert "parameters" in nb["cells"][1]["metadata"].get("tags", []) or any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])
        assert (d/"log.txt").stat().st_size > 0


def test_receipts_chain_upstream(tiny_run):
    out, _ = tiny_run
    sel = runs.read_stage(out, "select")
    assert sel["upstream"] == {"teacher": runs.fingerprint(out/"1_teacher/metrics.json")}
    bm = runs.read_stage(out, "benchmark")
    assert set(bm["upstream"]) == {"teacher", "select", "students"}


def test_teacher_and_dull_student(tiny_run):
    out, _ = tiny_run
    t = runs.read_stage(out, "teacher")["teacher"]
    assert t["source"] == "trained" and t["steps"] == 4 and (out/t["checkpoint"]).is_file()
    s = runs.read_stage(out, "select")["student"]
    assert s["searched"] and 0 < s["size_mb"] < t["size_mb"]
    assert 0 < s["compression"] < 1 and len(s["widths"]) == 5
    assert (out/"2_select/search/history.jsonl").read_text().count("\n") == 2   # two policy steps at tiny


def test_students_cover_tables_4_5_and_fig6(tiny_run):
    out, _ = tiny_run
    st = runs.read_stage(out, "students")
    assert set(st["runs"]) == {"NOKD", "TSKD", "TSsKD", "TS", "GT+TS", "TS+STR", "n3"}
    assert st["runs"]["TSsKD"]["losses"] == ["ah", "ts", "str", "ks"] and st["runs"]["TSsKD"]["mechanism"] == "TSsKD"
    models = runs.run_models(out)
    for key in [*st["table4"].values(), *st["fig6"].values(), *(m for r in st["table5"].values() for m in r.values())]:
        assert key in models and (out/models[key]["checkpoint"]).is_file(), key
    dull = [m for k, m in models.items() if m["role"] == "dull"]
    assert len({m["checkpoint"] for m in dull}) == 7        # one dull student per run, each its own checkpoint


def test_benchmark_scores_every_model(tiny_run):
    out, _ = tiny_run
    bm = runs.read_stage(out, "benchmark")
    assert bm["stand_in"]["otb100"] == "synth" and not bm["datasets"]["synth"]["real"]
    otb = {r["model"]: r for r in bm["scores"] if r["dataset"] == "synth" and r["protocol"] == "otb"}
    assert set(runs.run_models(out)) | {"static", "mil"} <= set(otb)
    assert all(0 <= r["auc"] <= 1 and 0 <= r["precision"] <= 1 for r in otb.values())
    assert {r["protocol"] for r in bm["scores"] if r["dataset"] == "synth"} == {"otb", "dtb70", "lasot", "trackingnet", "got10k", "vot2019"}
    vot = [r for r in bm["scores"] if r["protocol"] == "vot2019"]
    assert vot and all(0 <= r["accuracy"] <= 1 and r["robustness"] >= 0 for r in vot)
    m = bm["models"]
    assert m["teacher"]["speedup"] == 1.0 and m["teacher"]["compression"] == 1.0
    assert m["TSsKD/dull"]["compression"] > 10 and m["TSsKD/intelligent"]["compression"] == pytest.approx(9.354 / 2.383, abs=0.05)
    curves = json.loads((out/bm["curves"]).read_text())
    c = curves["synth"]["TSsKD/dull"]
    assert len(c["success"]) == len(c["success_thresholds"]) == 21 and c["success"][0] >= c["success"][-1]
    if fixtures_dir() is not None:
        assert bm["datasets"]["fixtures-otb"]["real"] and bm["datasets"]["fixtures-otb"]["n_sequences"] == 2
        assert any(r["dataset"] == "fixtures-vot" and r["model"] == "teacher" for r in bm["scores"])


def test_report_has_every_item(tiny_run):
    out, _ = tiny_run
    d = out/"report"
    for item in runs.PAPER_ITEMS:
        assert (d/f"{item}.ipynb").is_file() and (d/f"{item}.md").is_file(), item
        if item.startswith("fig") or item in ("table4_ablation", "table5_mechanisms"):
            assert (d/f"{item}.png").stat().st_size > 5000, item
    rep = json.loads((d/"report.json").read_text())
    names = [r["name"] for r in (rep["items"] if isinstance(rep, dict) else rep)]
    assert set(runs.PAPER_ITEMS) <= set(names)
    html = runs.read_stage(out, "report").get("html")
    if html:
        index = (out/html).read_text()
        assert all(f"{item}" in index for item in runs.PAPER_ITEMS)
    t5 = (d/"table5_mechanisms.md").read_text()
    assert "0.573" in t5 and "synthetic" in t5.lower()       # the paper's SiamFC TSsKD dull AUC, and the stand-in said plainly


def test_second_run_skips_everything(tiny_run):
    out, _ = tiny_run
    info = pl.run_pipeline("all", "tiny", "siamfc", out, progress=False)
    assert [s["last"] for s in info["stages"].values()] == ["skipped"] * 5


def test_changed_parameters_are_refused_then_forced(tiny_run, tmp_path):
    out, _ = tiny_run
    with pytest.raises(DSTError, match="other parameters.*max_frames"):
        pl.run_pipeline("benchmark", "tiny", "siamfc", out, params=dict(max_frames=12), progress=False)
    with pytest.raises(DSTError, match="unknown parameter"):
        pl.run_pipeline("benchmark", "tiny", "siamfc", out, params=dict(max_frame=12), progress=False)
    with pytest.raises(DSTError, match="is a tiny siamfc run"):
        pl.run_pipeline("benchmark", "smoke", "siamfc", out, progress=False)


def test_broken_benchmark_resumes_without_retracking(tiny_run):
    out, _ = tiny_run
    d = runs.stage_dir(out, "benchmark")
    keep = sorted((d/"results").rglob("*.txt"))[0]
    mtime = keep.stat().st_mtime_ns
    (d/"metrics.json").unlink()
    victim = next(p for p in (d/"results/ope/synth/synth/TSsKD_dull").glob("*.txt") if "time" not in p.name)
    victim.unlink()
    info = pl.run_pipeline("benchmark", "tiny", "siamfc", out, progress=False)
    assert info["stages"]["benchmark"]["last"] == "resumed"
    assert victim.is_file() and keep.stat().st_mtime_ns == mtime
    assert pl.stage_state(out, "report", dict(run_dir=str(out), items=list(runs.PAPER_ITEMS))) == "stale"


def test_stage_needs_its_upstream(tmp_path):
    with pytest.raises(DSTError, match="needs stage 'teacher' first"):
        pl.run_pipeline("students", "tiny", "siamfc", tmp_path/"fresh", progress=False)
    with pytest.raises(DSTError, match="needs a finished benchmark"):
        pl.run_pipeline("report", "tiny", "siamfc", tmp_path/"fresh", progress=False)


def test_given_teacher_checkpoint_is_used(tiny_run, tmp_path):
    out, _ = tiny_run
    ck = out/"1_teacher/teacher.pt"
    pl.run_pipeline("teacher", "tiny", "siamfc", tmp_path/"given", params=dict(teacher_checkpoint=str(ck)), progress=False)
    t = runs.read_stage(tmp_path/"given", "teacher")["teacher"]
    assert t["source"] == "given" and t["steps"] == 0
    assert (tmp_path/"given"/t["checkpoint"]).read_bytes() == ck.read_bytes()
    again = pl.run_pipeline("teacher", "tiny", "siamfc", tmp_path/"given", progress=False)   # -p remembered by the run
    assert again["stages"]["teacher"]["last"] == "skipped" and again["parameters"] == dict(teacher_checkpoint=str(ck))


def test_cli_run_and_demo_print_the_headline(tiny_run, tmp_path):
    out, _ = tiny_run
    env = {**os.environ, "DST_WEIGHTS": str(tmp_path/"none")}   # no shipped teacher: the demo reuses the tiny run (demo_params is a lesson)
    r = subprocess.run(DST + ["demo", "--scale", "tiny", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "report:" in r.stdout and "teacher" in r.stdout and "dull" in r.stdout and "intelligent" in r.stdout
    assert "synthetic" in r.stdout.lower()
    r = subprocess.run(DST + ["run", "teacher", "--scale", "tiny", "--out", str(out), "-p", "teacher_epochs"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "expected KEY=VALUE" in r.stderr


def test_publish_keeps_receipts_and_figures_not_checkpoints(tiny_run, tmp_path):
    """`dst run publish`: a finished run's receipts, report tables and figures, without checkpoints or data."""
    out, _ = tiny_run
    dest = tmp_path/"reference"/"tiny-siamfc"
    r = subprocess.run([*DST, "run", "publish", "--out", str(out), "--to", str(dest)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    got = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert "run.json" in got and "report/metrics.json" in got and "4_benchmark/metrics.json" in got
    assert any(g.startswith("report/") and g.endswith(".md") for g in got) and any(g.endswith(".png") for g in got)
    assert not [g for g in got if g.endswith(".pt") or g.startswith("data/") or g.startswith("report/html/")]
    assert f"published {len(got)} files" in r.stdout
    r = subprocess.run([*DST, "run", "publish", "--out", str(tmp_path/"nothing"), "--to", str(dest)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "has no finished report" in r.stderr and dest.is_dir()    # a refused publish keeps the old copy


def test_ship_puts_the_run_models_in_a_weights_folder_found_by_name(tiny_run, tmp_path, monkeypatch):
    """`dst run ship`: teacher and TSsKD students copied with their scores and provenance; every command finds them by name."""
    out, _ = tiny_run
    r = subprocess.run([*DST, "run", "ship", "--out", str(out), "--to", str(tmp_path/"w")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    idx = json.loads((tmp_path/"w"/"index.json").read_text())
    assert sorted(idx) == ["siamfc-tiny-dull", "siamfc-tiny-intelligent", "siamfc-tiny-teacher"]
    bm = runs.read_stage(out, "benchmark")
    for n, e in idx.items():
        row = next(s for s in bm["scores"] if s["model"] == e["model"] and s["dataset"] == "synth" and s["protocol"] == "otb")
        assert e["scores"]["synth"]["auc"] == round(row["auc"], 4) and e["provenance"]["scale"] == "tiny" and e["provenance"]["commit"]
        assert (tmp_path/"w"/e["file"]).read_bytes() == (out/bm["models"][e["model"]]["checkpoint"]).read_bytes()
    monkeypatch.setenv("DST_WEIGHTS", str(tmp_path/"w"))
    from dst.models.refs import resolve_model, shipped_teacher
    from dst.track.trackers import make_tracker
    net, info = resolve_model("siamfc-tiny-dull")
    assert info["source"] == "shipped" and shipped_teacher("siamfc")[0] == "siamfc-tiny-teacher"
    assert make_tracker("siamfc-tiny-intelligent").net.spec == resolve_model(str(tmp_path/"w"/"siamfc-tiny-intelligent.pt"))[0].spec
    r = subprocess.run([*DST, "models", "--trained", "--json"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and {x["name"] for x in json.loads(r.stdout)} == set(idx)
