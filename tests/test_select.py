"""Dull-student selection end to end: the policy gradient on a toy problem with a known answer, the reward and
eq. 7 by hand, smoke searches (SiamFC and SiamRPN teachers) on tiny drawn videos, repeatability and resume,
penalties for invalid candidates, a teacher checkpoint, and `dst select` on the real OTB fixtures."""
import json
import time

import numpy as np
import pytest
import torch

from dst.cli import main
from dst.core import DSTError
from dst.models.checkpoint import save_checkpoint, torch_load
from dst.models.siamese import SiamNet, size_mb
from dst.models.zoo import get_spec, shrink
from dst.select import policy as P, search as S, space as SP
from dst.select.candidate import toy_sequences

TINY = dict(shrink(get_spec("siamfc"), 0.25), template_size=87, search_size=151, name="tiny-siamfc")
BUDGET = dict(candidates=2, epochs=1, pairs=16, val_pairs=8, batch_size=8, seed=0, progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: one thread is faster, and steadier when tests share the machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    return toy_sequences(tmp_path_factory.mktemp("toys"), n=4, frames=12)


def no_times(history):
    """A history without its wall-clock fields, for comparing runs."""
    out = []
    for h in history:
        h = {k: v for k, v in h.items() if k != "seconds"}
        h["candidates"] = [{k: v for k, v in c.items() if k != "seconds"} for c in h["candidates"]]
        out.append(h)
    return out


def read_history(d):
    return [json.loads(line) for line in (d / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(toys, tmp_path_factory):
    """An uninterrupted 4-step smoke search with a SiamFC teacher (trained here), timed."""
    out = tmp_path_factory.mktemp("ref")
    t0 = time.perf_counter()
    summ = S.run_search(toys, teacher=TINY, out=out, steps=4, **BUDGET)
    return dict(out=out, summary=summ, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------- policy gradient


def test_every_lstm_parameter_gets_a_gradient_and_changes():
    torch.manual_seed(1)
    pol = P.Policy(hidden=8, layers=2)
    names = [n for n, _ in pol.named_parameters()]
    assert sum(n.startswith("lstm.") for n in names) == 8      # weight_ih/hh, bias_ih/hh for each of 2 layers
    assert set(names) <= set(pol.state_dict())                 # registered: saved and restored with the policy
    opt = torch.optim.Adam(pol.parameters(), lr=0.01)
    units = SP.describe(get_spec("siamrpn"))
    g = torch.Generator().manual_seed(0)
    eps = [pol.run(units, generator=g)[0] for _ in range(3)]
    before = {n: p.detach().clone() for n, p in pol.named_parameters()}
    P.reinforce_update(pol, opt, units, eps, [0.1, 0.7, 0.4], baseline=0.3, credit="each")
    for n, p in pol.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
        assert not torch.equal(p.detach(), before[n]), n


# the toy policy search, eq. 6/7 by hand, the proposals and the baseline are lessons in nbs/44_candidate, 45_search_space and
# 45a_policy, which `make test` runs: they are not repeated here


# ---------------------------------------------------------------- smoke searches


def test_smoke_search_siamfc(reference):
    out, summ = reference["out"], reference["summary"]
    assert sorted(p.name for p in out.iterdir()) == ["fig4.png", "history.jsonl", "state.pt", "student.json", "summary.json"]
    assert (out / "fig4.png").stat().st_size > 10_000
    hist = read_history(out)
    assert [h["step"] for h in hist] == [0, 1, 2, 3]
    for h in hist:
        assert len(h["candidates"]) == 2
        assert h["reward"] == pytest.approx(np.mean([c["reward"] for c in h["candidates"]]))      # eq. 8
        for c in h["candidates"]:
            assert set(c) >= {"actions", "scales", "widths", "kernels", "acc", "size_mb", "compression", "reward", "valid"}
            assert c["reward"] == pytest.approx(SP.reward(c["acc"], summ["teacher"]["acc"], c["cost"], summ["teacher"]["cost"]))   # default cost
            assert c["params_x"] == pytest.approx(summ["teacher"]["size_mb"] / c["size_mb"]) and c["flops_x"] > 1
    assert hist[0]["baseline"] == 0.0 and hist[1]["baseline"] == pytest.approx(hist[0]["reward"])
    student = json.loads((out / "student.json").read_text())
    net = SiamNet(student)                                        # an ordinary spec
    assert net.response_size == 9 and student["name"] == "tiny-siamfc-dull"
    best = summ["best"]
    assert size_mb(net) == pytest.approx(best["size_mb"]) and best["size_mb"] < summ["teacher"]["size_mb"]
    assert [l["out"] for l in student["backbone"]["layers"]] == best["widths"]
    assert best["reward"] == max(c["reward"] for h in hist for c in h["candidates"])
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 4
    # the saved policy has learned: every LSTM tensor differs from its seeded initialisation
    state = torch_load(out / "state.pt", what="search state")
    torch.manual_seed(S.derive_seed(0, 3))
    init = P.Policy().state_dict()
    assert all(not torch.equal(state["policy"][k], v) for k, v in init.items() if k.startswith("lstm."))


def test_same_seed_same_history_and_resume(reference, toys, tmp_path):
    """2 steps, then resumed to 4, equals the uninterrupted 4-step run (same seed, CPU)."""
    S.run_search(toys, teacher=TINY, out=tmp_path, steps=2, **BUDGET)
    first = read_history(tmp_path)
    ref = read_history(reference["out"])
    assert no_times(first) == no_times(ref[:2])
    S.run_search(toys, teacher=TINY, out=tmp_path, steps=4, resume=True, **BUDGET)
    assert no_times(read_history(tmp_path)) == no_times(ref)
    a, b = (torch_load(d / "state.pt", what="search state") for d in (tmp_path, reference["out"]))
    assert all(torch.equal(a["policy"][k], b["policy"][k]) for k in a["policy"])
    assert a["baseline"] == b["baseline"] and a["acc_t"] == b["acc_t"]
    assert json.loads((tmp_path / "student.json").read_text()) == json.loads((reference["out"] / "student.json").read_text())


def test_existing_search_needs_resume_and_same_settings(reference, toys):
    with pytest.raises(DSTError, match="already holds a search"):
        S.StudentSearch(toys, teacher=TINY, out=reference["out"], steps=4, **BUDGET)
    with pytest.raises(DSTError, match="different settings.*pairs"):
        S.StudentSearch(toys, teacher=TINY, out=reference["out"], steps=4, resume=True, **{**BUDGET, "pairs": 20})


def test_invalid_candidates_get_the_penalty(toys, tmp_path, monkeypatch):
    """A candidate whose response map no longer fits, or whose training fails, is rewarded -1, not a crash."""
    real = S.reduce_spec
    monkeypatch.setattr(S, "reduce_spec", lambda spec, scales: dict(real(spec, scales), search_size=143))  # 8x8 response
    summ = S.run_search(toys, teacher=TINY, out=tmp_path / "a", steps=1, **BUDGET)
    (h,) = read_history(tmp_path / "a")
    assert [c["reward"] for c in h["candidates"]] == [-1.0, -1.0] and h["reward"] == -1.0 and h["n_valid"] == 0
    assert all("differs from the teacher's 9x9" in c["reason"] for c in h["candidates"])
    assert summ["best"] is None and not (tmp_path / "a" / "student.json").exists()
    monkeypatch.setattr(S, "reduce_spec", real)

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory (simulated)")
    search = S.StudentSearch(toys, teacher=TINY, out=tmp_path / "b", steps=1, penalty=-2.0, **BUDGET)
    monkeypatch.setattr(S, "candidate_accuracy", boom)
    rec = search.candidate([9] * 10, seed=0)
    assert rec["reward"] == -2.0 and not rec["valid"] and "out of memory" in rec["reason"]


def test_smoke_search_siamrpn(toys, tmp_path):
    """A tiny SiamRPN teacher: its RPN head is a searched unit, proposals are decoded anchors."""
    rpn = dict(shrink(get_spec("siamrpn"), 0.06), template_size=103, search_size=167, name="tiny-siamrpn")
    rpn["head"]["feature_out"] = 16
    summ = S.run_search(toys, teacher=rpn, out=tmp_path, steps=1, **{**BUDGET, "candidates": 1})
    (h,) = read_history(tmp_path)
    c = h["candidates"][0]
    assert len(c["widths"]) == 6 and c["valid"] and 0 <= c["acc"] <= 1
    assert json.loads((tmp_path / "student.json").read_text())["head"]["feature_out"] == c["widths"][-1]
    assert summ["teacher"]["widths"][-1] == 16


def test_teacher_checkpoint_is_scored_not_trained(toys, tmp_path):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "teacher.pt", SiamNet(TINY), meta={"note": "untrained, for the test"})
    summ = S.run_search(toys, teacher=str(ckpt), out=tmp_path / "run", steps=1, **{**BUDGET, "candidates": 1})
    assert summ["teacher"]["trained_here"] is False and summ["teacher"]["acc"] > 0


def test_not_an_alexnet_teacher(toys, tmp_path):
    with pytest.raises(DSTError, match="hand-crafted"):
        S.run_search(toys, teacher="siamrpnpp_r18", out=tmp_path, steps=1, **BUDGET)


# ---------------------------------------------------------------- command line, real frames


def test_cli_on_real_otb_fixtures(fixtures, tmp_path, capsys):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY))
    args = ["select", "--teacher", str(spec), "--data", str(fixtures / "otb"), "--dataset", "otb100",
            "--sequences", "Crossing,Football1", "--frame-filter", "permissive", "--candidates", "1", "--epochs", "1",
            "--pairs", "8", "--val-pairs", "4", "--batch-size", "4", "--out", str(tmp_path / "run"), "--quiet"]
    assert main(args + ["--steps", "1"]) == 0
    printed = capsys.readouterr().out
    assert "student (step 1)" in printed and "compression C" in printed
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["data"] == {"train_sequences": ["Crossing"], "val_sequences": ["Football1"]}
    assert main(args + ["--steps", "2"]) == 2                     # no --resume: refuses, names the way out
    assert "pass resume=True (--resume)" in capsys.readouterr().err
    assert main(args + ["--steps", "2", "--resume"]) == 0
    assert len(read_history(tmp_path / "run")) == 2
    assert main(["select", "--teacher", "nonesuch", "--out", str(tmp_path / "x")]) == 2
    assert "unknown architecture 'nonesuch'" in capsys.readouterr().err


# ---------------------------------------------------------------- the cost the compression counts

def test_cost_term_of_the_reward():
    """C counts params (the paper's), flops, latency or sqrt(params * flops) (the default); unknown costs are refused."""
    from dst.eval.bench import frame_flops
    from dst.models.zoo import build_model, get_spec
    t, s = get_spec("siamfc"), get_spec("siamfc@0.27")
    assert S.resolve_params()["cost"] == "params_flops"
    assert SP.spec_flops(s) == frame_flops(build_model("siamfc@0.27"))            # meta-device count = the benchmark's
    assert SP.spec_cost(s, "params") == pytest.approx(SP.spec_size_mb(s))
    rp, rf = (SP.spec_cost(s, c) / SP.spec_cost(t, c) for c in ("params", "flops"))
    assert SP.spec_cost(s, "params_flops") / SP.spec_cost(t, "params_flops") == pytest.approx((rp * rf) ** 0.5)
    assert 0 < SP.spec_cost(s, "latency") < SP.spec_cost(t, "latency") * 10
    with pytest.raises(DSTError, match="cost 'watts'"):
        S.resolve_params(cost="watts")
    with pytest.raises(DSTError, match="expected one of"):
        SP.spec_cost(t, "watts")
