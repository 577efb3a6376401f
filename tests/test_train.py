"""The training engine end to end: a smoke TSsKD run, resume after a stop and after SIGKILL (bit-for-bit), DDP on
two CPU processes, TSKD students that do not interact, NOKD without a teacher, the CLI and its errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dst.core import DSTError
from dst.models.checkpoint import load_checkpoint
from dst.train.config import MECHANISMS, TrainConfig
from dst.train.engine import Trainer, read_metrics, load_state, train
from dst.train.step import Actor, train_step
from dst.train.timing import synthetic_batch

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
pytestmark = pytest.mark.filterwarnings("ignore:teacher .* has freshly initialised weights")   # random teachers are fine here


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A small synthetic training split (GOT-10k layout): 3 sequences of 16 frames."""
    from dst.data.synth import generate
    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0, sequences=(3, 0), frames=16, size=(160, 120), splits=("train",), progress=False)
    return root


def cfg_dict(synth, out, **kw):
    """TSsKD on the synthetic split, SiamFC family: random-weight teacher at 0.2, students at 0.08 and 0.12."""
    d = dict(teacher="siamfc@0.2", students=["siamfc@0.08", "siamfc@0.12"], losses=MECHANISMS["TSsKD"],
             data=[f"synth:{synth}"], frame_filter="permissive", search_size=191, batch_size=2, pairs_per_epoch=8,
             warmup_epochs=1, epochs=1, device="cpu", num_workers=0, seed=1, out=str(out))
    d.update(kw)
    return d


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


# ---------------------------------------------------------------- smoke TSsKD run

def test_smoke_tsskd_run(synth, tmp_path):
    """Teacher + two students, 24 steps (1 warm-up + 2 KD epochs of 8 steps), batch 2: finishes, logs, saves."""
    t0 = time.perf_counter()
    res = train(cfg_dict(synth, tmp_path/"run", pairs_per_epoch=16, epochs=2), progress=False)
    secs = time.perf_counter() - t0
    assert res["finished"] and res["steps"] == 24 and res["mechanism"] == "TSsKD" and res["steps_per_epoch"] == 8
    rows = read_metrics(tmp_path/"run/metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 25))
    assert [r["phase"] for r in rows] == ["warmup"] * 8 + ["kd"] * 16
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    kd = rows[-1]
    for i in range(2):
        for t in ("gt", "ts", "ah", "str", "ks", "sigma", "kd", "grad"):
            assert f"s{i}.{t}" in kd
    assert {"epoch", "lr", "time", "f", "t.gt", "pairs_per_s"} <= set(kd)
    assert rows[8]["f"] == pytest.approx(1.0) and rows[-1]["f"] == pytest.approx(0.9)     # f(e) after the warm-up
    assert rows[0]["lr"] == rows[8]["lr"] == pytest.approx(1e-2) and rows[-1]["lr"] == pytest.approx(1e-4)
    for i, name in enumerate(["siamfc@0.08", "siamfc@0.12"]):
        net, ck = load_checkpoint(tmp_path/f"run/students/s{i}.pt")       # ordinary dst checkpoints
        assert net.spec["name"] == name and ck["meta"]["mechanism"] == "TSsKD" and ck["meta"]["steps"] == 24
    summary = json.loads((tmp_path/"run/metrics.json").read_text())
    assert summary["students"][1]["last_epoch"]["ks"] is not None
    assert load_state(tmp_path/"run/state.pt")["finished"]
    print(f"smoke TSsKD run: 24 steps in {secs:.1f} s")


# ---------------------------------------------------------------- resume, bit for bit

@pytest.fixture(scope="module")
def reference(synth, tmp_path_factory):
    """An uninterrupted run of 8 steps (4 warm-up + 4 KD), checkpointing every 3 steps."""
    out = tmp_path_factory.mktemp("ref")/"run"
    cfg = cfg_dict(synth, out, ckpt_every=3, pairs_per_epoch=8)
    res = train(cfg, progress=False)
    assert res["finished"] and res["steps"] == 8
    return cfg, out


def test_resume_after_max_steps_is_bit_exact(synth, reference, tmp_path):
    cfg, ref = reference
    out = tmp_path/"run"
    part = train(dict(cfg, out=str(out), max_steps=5), progress=False)
    assert not part["finished"] and part["steps"] == 5
    st = load_state(out/"state.pt")
    assert (st["epoch"], st["step_in_epoch"], st["global_step"]) == (1, 1, 5)      # mid-way through the KD epoch
    with pytest.raises(DSTError, match="already holds a training run"):
        train(dict(cfg, out=str(out)), progress=False)
    with pytest.raises(DSTError, match="another configuration.*lr"):
        train(dict(cfg, out=str(out), lr=0.5), resume=True, progress=False)
    done = train(dict(cfg, out=str(out)), resume=True, progress=False)
    assert done["finished"] and done["steps"] == 8
    for i in range(2):
        assert_same_weights(weights(out/f"students/s{i}.pt"), weights(ref/f"students/s{i}.pt"))
    assert [r["step"] for r in read_metrics(out/"metrics.jsonl")] == list(range(1, 9))
    assert [r["loss"] for r in read_metrics(out/"metrics.jsonl")] == [r["loss"] for r in read_metrics(ref/"metrics.jsonl")]
    # the run's time counts both sessions' steps (`seconds` is only the resumed call's wall time)
    assert done["step_seconds"] == pytest.approx(sum(r["time"] for r in read_metrics(out/"metrics.jsonl")), abs=0.1)
    assert done["step_seconds"] >= part["step_seconds"] > 0


def test_cli_sigkill_then_resume_is_bit_exact(synth, reference, tmp_path, capsys):
    """`dst train` killed with SIGKILL after its first checkpoint, then `dst train --out --resume`: same weights."""
    cfg, ref = reference
    out = tmp_path/"run"
    (tmp_path/"cfg.json").write_text(json.dumps(dict(cfg, out=str(out))))
    env = {**ENV, "OMP_NUM_THREADS": str(torch.get_num_threads())}   # the reference's thread count: the same sums
    p = subprocess.Popen([sys.executable, "-m", "dst", "train", "--config", str(tmp_path/"cfg.json"), "--quiet"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not (out/"state.pt").exists() and p.poll() is None and time.time() < deadline: time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL, p.stdout.read().decode()[-2000:]
    killed_at = load_state(out/"state.pt")["global_step"]
    assert 3 <= killed_at < 8
    from dst.cli import main                                      # the resumed run: the same CLI, in this process
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "finished: 8 steps" in printed and "students/s1.pt" in printed
    for i in range(2):
        assert_same_weights(weights(out/f"students/s{i}.pt"), weights(ref/f"students/s{i}.pt"))
    assert [r["step"] for r in read_metrics(out/"metrics.jsonl")] == list(range(1, 9))   # no step logged twice
    print(f"killed after checkpoint at step {killed_at}; resumed to step 8; weights identical")


# ---------------------------------------------------------------- DDP on two CPU processes

DDP_SCRIPT = """
import json, sys, torch
from dst.train.engine import Trainer
from dst.train.ddp import unwrap, cleanup_distributed
cfg = json.load(open(sys.argv[1]))
t = Trainer(cfg, progress=False)
res = t.run()
torch.save({f"s{i}": unwrap(s).state_dict() for i, s in enumerate(t.students)}, f"{cfg['out']}/rank{t.info.rank}.pt")
json.dump(res, open(f"{cfg['out']}/res{t.info.rank}.json", "w"))
cleanup_distributed(t.info)
"""


def test_ddp_two_processes_gloo(synth, tmp_path):
    out = tmp_path/"run"
    (tmp_path/"ddp.py").write_text(DDP_SCRIPT)
    (tmp_path/"cfg.json").write_text(json.dumps(cfg_dict(synth, out, warmup_epochs=0, epochs=1, pairs_per_epoch=8)))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(tmp_path/"ddp.py"), str(tmp_path/"cfg.json")],
                       env={**ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    w0, w1 = torch.load(out/"rank0.pt", weights_only=True), torch.load(out/"rank1.pt", weights_only=True)
    for s in ("s0", "s1"): assert_same_weights(w0[s], w1[s])
    res = json.loads((out/"res0.json").read_text())
    assert res["world"] == 2 and res["ranks_agree"] and res["steps"] == 2 and res["steps_per_epoch"] == 2   # 8 pairs / (2 x 2)
    init = TrainConfig(**cfg_dict(synth, out))
    from dst.models.refs import resolve_model
    net0, _ = resolve_model(init.students[0], init.seed + 1)
    assert not torch.equal(net0.state_dict()["backbone.layers.0.conv.weight"], w0["s0"]["backbone.layers.0.conv.weight"])  # it trained
    assert_same_weights(weights(out/"students/s0.pt"), w0["s0"])                       # rank 0 saved what it holds


# ---------------------------------------------------------------- mechanisms

def test_tskd_students_do_not_interact(synth, tmp_path):
    """TSKD of [A, B] trains A exactly as TSKD of [A] alone: one optimiser per student, one teacher forward."""
    kw = dict(losses=MECHANISMS["TSKD"], warmup_epochs=0, epochs=1, pairs_per_epoch=4)
    train(cfg_dict(synth, tmp_path/"ab", **kw), progress=False)
    train(cfg_dict(synth, tmp_path/"a", students=["siamfc@0.08"], **kw), progress=False)
    assert_same_weights(weights(tmp_path/"ab/students/s0.pt"), weights(tmp_path/"a/students/s0.pt"))


def test_nokd_builds_no_teacher_and_teacher_runs_once_per_batch(synth, tmp_path):
    t = Trainer(cfg_dict(synth, tmp_path/"nokd", teacher="siamfc", losses=["gt"]), progress=False)
    assert t.teacher is None and t.actor.needs_teacher(5) is False and t.cfg.mechanism == "NOKD"
    torch.manual_seed(0)
    from dst.models.zoo import build_model
    teacher, studs = build_model("siamfc@0.25"), [build_model(f"siamfc@0.{i}").train() for i in (1, 1, 2)]
    actor = Actor(studs, teacher, MECHANISMS["TSsKD"], family="siamfc")
    opts = [torch.optim.SGD(s.parameters(), lr=1e-3) for s in studs]
    b = synthetic_batch("siamfc", 2, 191, 9)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    st = train_step(actor, opts, b, epoch=0)
    assert actor.teacher_calls == 1 and all(f"s{i}.ks" in st for i in range(3))
    assert_same_weights(teacher.state_dict(), before)


def test_bf16_autocast_step_on_cpu():
    """The bf16 path (native on CUDA and AMX CPUs, emulated elsewhere): finite losses in float32, weights stay fp32."""
    from dst.models.zoo import build_model
    torch.manual_seed(0)
    teacher, studs = build_model("siamrpn@0.1"), [build_model("siamrpn@0.05").train(), build_model("siamrpn@0.08").train()]
    actor = Actor(studs, teacher, MECHANISMS["TSsKD"], family="siamrpn", precision="bf16")
    opts = [torch.optim.SGD(s.parameters(), lr=1e-3) for s in studs]
    st = train_step(actor, opts, synthetic_batch("siamrpn", 2, 271, 19), epoch=0, grad_clip=10.0)
    assert all(torch.isfinite(torch.tensor(v)) for v in st.values())
    assert studs[0].backbone.layers[0].conv.weight.dtype == torch.float32


# ---------------------------------------------------------------- CLI and bad input

def test_cli_errors(synth, tmp_path, capsys):
    """Bad invocations of `dst train` exit 2 with one line naming the problem (in-process: the CLI's `main`)."""
    from dst.cli import main
    def dst(*a):
        rc = main(["train", *a]); return rc, capsys.readouterr().err
    rc, err = dst("--mode", "tskd", "--students", "siamfc@0.1", "--data", f"synth:{synth}", "--out", str(tmp_path/"x"))
    assert rc == 2 and "need a teacher, but teacher is None" in err
    rc, err = dst("--students", "siamfc@0.1", "--out", str(tmp_path/"y"), "--device", "cpu")
    assert rc == 2 and "TrainConfig.data is empty" in err
    rc, err = dst("--students", "siamfc@0.1", "--data", str(tmp_path), "--out", str(tmp_path/"z"))
    assert rc == 2 and "expected NAME:DIR" in err
    rc, err = dst("--config", str(tmp_path/"missing.json"))
    assert rc == 2 and "no such file" in err
    assert not (tmp_path/"y").exists()                      # a refused run writes nothing


def test_config_errors(synth, tmp_path):
    with pytest.raises(DSTError, match="makes no whole step"):
        Trainer(cfg_dict(synth, tmp_path/"a", pairs_per_epoch=1, batch_size=2), progress=False)
    with pytest.raises(DSTError, match="student 1 is a siamrpn network"):
        Trainer(cfg_dict(synth, tmp_path/"b", students=["siamfc@0.1", "siamrpn@0.1"]), progress=False)
    with pytest.raises(DSTError, match="no such file"):
        Trainer(cfg_dict(synth, tmp_path/"c", teacher=str(tmp_path/"teacher.pt")), progress=False)
    with pytest.raises(DSTError, match="TrainConfig.precision = 'fp8'"):
        TrainConfig(**cfg_dict(synth, tmp_path, precision="fp8"))
    assert TrainConfig.from_dict(cfg_dict(synth, tmp_path, amp="off")).precision == "fp32"   # an old run folder's config


def test_forced_fp32_matches_plain_layout(synth, tmp_path):
    """Forcing fp32 (what an AVX2-only machine resolves `auto` to) trains as before: float32 weights, the precision
    named in run.json and the summary; one step in channels-last equals one in the plain layout up to float32 rounding."""
    from dst.models.zoo import build_model
    from dst.train.ddp import prepare_model, prepare_input
    res = train(cfg_dict(synth, tmp_path/"run", precision="fp32"), progress=False)
    assert res["precision"] == "fp32" and res["precision_note"].startswith("fp32")
    assert json.loads((tmp_path/"run"/"run.json").read_text())["precision"].startswith("fp32")
    assert all(v.dtype == torch.float32 for v in weights(tmp_path/"run"/"students"/"s0.pt").values() if v.is_floating_point())
    after = {}
    for cl in (True, False):
        torch.manual_seed(0)
        net = prepare_model(build_model("siamfc@0.2").train(), "cpu", cl)
        b = {k: prepare_input(v, "cpu", cl) for k, v in synthetic_batch("siamfc", 2, 191, 9).items()}
        train_step(Actor([net], None, ("gt",), family="siamfc", precision="fp32"), [torch.optim.SGD(net.parameters(), lr=1e-2)], b, 0)
        after[cl] = {k: v.contiguous() for k, v in net.state_dict().items()}
    for k, v in after[True].items():
        assert torch.allclose(v.float(), after[False][k].float(), rtol=1e-4, atol=1e-6), k


# ---------------------------------------------------------------- a weighted mix of training sources

def test_weighted_mix_of_synthetic_and_realtrain(synth, tmp_path):
    """Synthetic at weight 3 and the real drone clips at weight 1 (their own small-target filter) share each epoch 3:1."""
    from dst.core import shared_dir
    from dst.train.step import build_dataset
    rt = shared_dir()/"realtrain" if shared_dir() is not None else None
    if rt is None or not rt.is_dir(): pytest.skip("../shared/realtrain is absent")
    cfg = TrainConfig(**cfg_dict(synth, tmp_path/"mix", pairs_per_epoch=16, data=[
        dict(dataset="synth", root=str(synth), weight=3), dict(dataset="realtrain", root=str(rt), weight=1, frame_filter="small")]))
    ds = build_dataset(cfg, "siamfc", 127, 191, 9)
    assert ds.sampler.shares() == [12, 4] and sorted(ds.sampler.order(0)[:, 0].tolist()).count(1) == 4
    real = [i for i, (s, _) in enumerate(ds.sampler.order(0)) if s == 1]
    it = ds[real[0]]
    assert it["x"].shape == (3, 191, 191) and torch.isfinite(it["x"]).all() and it["label"].sum() > 0
    assert ds.sampler.sources[1].frame_filter.min_side == 8 and ds.sampler.filter.min_side == 0    # the run's: permissive
    with pytest.raises(DSTError, match=r"data\[0\].frame_filter"):
        TrainConfig(**cfg_dict(synth, tmp_path, data=[dict(dataset="synth", root=str(synth), frame_filter="tiny")]))
    with pytest.raises(DSTError, match=r"data\[0\].weight"):
        TrainConfig(**cfg_dict(synth, tmp_path, data=[dict(dataset="synth", root=str(synth), weight=-1)]))


# ---------------------------------------------------------------- knowledge sharing acts

def test_sigma_open_rate_logged_and_tsskd_differs_from_tskd(synth, tmp_path):
    """Each student's fraction of sharing steps with sigma > 0 is in the summary; where sigma opens, TSsKD != TSKD."""
    kw = dict(warmup_epochs=0, epochs=1, pairs_per_epoch=8)
    a = train(cfg_dict(synth, tmp_path/"tsskd", **kw), progress=False)
    b = train(cfg_dict(synth, tmp_path/"tskd", losses=MECHANISMS["TSKD"], **kw), progress=False)
    rows = read_metrics(tmp_path/"tsskd/metrics.jsonl")
    opened = [r["s0.sigma"] > 0 for r in rows]
    assert a["students"][0]["sigma_open"] == pytest.approx(sum(opened) / len(rows)) and any(opened)
    assert all("s0.gap" in r for r in rows) and b["students"][0]["sigma_open"] is None          # TSKD shares nothing
    wa, wb = weights(tmp_path/"tsskd/students/s0.pt"), weights(tmp_path/"tskd/students/s0.pt")
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    shut = train(cfg_dict(synth, tmp_path/"shut", kd=dict(f0=0.0), **kw), progress=False)     # f(e) = 0: sigma never above 0
    assert shut["students"][0]["sigma_open"] == 0.0
    assert_same_weights(weights(tmp_path/"shut/students/s0.pt"), wb)                            # ... is TSKD exactly
