"""The speed benchmark (:mod:`vrnn.bench`): its variants compute the same loss and gradients from
the same weights, its FLOP counts are what the model really multiplies, its timer and memory probe
measure what they say, and the command writes, reads and renders its JSON."""

import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from vrnn import bench
from vrnn.bench import (
    CONFIGS,
    TARGETS,
    build_variants,
    check_agreement,
    interleaved,
    is_flop_ratio,
    matmul_macs,
    paired_ratio,
    quick_config,
    saved_bytes,
    srnn_matmul_macs,
)
from vrnn.bench.configs import BF16_AGREEMENT_RTOL, BF16_MIN_GRAD_DIFF, BF16_TARGET, BenchmarkError
from vrnn.cli import main as cli_main
from vrnn.kernels import precision
from vrnn.models.config import ModelConfig
from vrnn.models.dmm import DMM
from vrnn.models.reference import Literal
from vrnn.models.srnn import SRNN
from vrnn.models.storn import STORN
from vrnn.models.vrnn import VRNN

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
SRNN_CONFIGS = {n for n, c in CONFIGS.items() if c.family != "vrnn"}
"""The configurations of the SRNN, the DMM and STORN: the training step only, beside the VRNN."""
FAMILY_CLASS = {"vrnn": VRNN, "srnn": SRNN, "dmm": DMM, "storn": STORN}
BF16 = precision.bf16_supported(CPU)  # the default --precision: fp32,bf16 where it holds
BF16_VARIANTS = {"per-step bf16", "ours bf16"} if BF16 else set()
needs_bf16 = pytest.mark.skipif(not BF16, reason="this CPU has no native bfloat16 products")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def make_model(cell="lstm", output="gauss", x_dim=5, enc=(12,), phi_z=(10,), phi_x=(9,),
               prior="learned", seed=0) -> VRNN:
    torch.manual_seed(seed)
    cfg = ModelConfig(family="vrnn", x_dim=x_dim, output=output, cell=cell, prior=prior,
                      h_dim=8, z_dim=3, components=2, phi_x=phi_x, phi_z=phi_z, encoder=enc,
                      prior_net=(7,), decoder=(11,))
    model = VRNN(cfg)
    with torch.no_grad():  # a learned h0 away from zero, so its gradient path is exercised
        model.initial_state.normal_(0.0, 0.5)
    return model


def make_data(model: VRNN, B: int, T: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    c = model.config
    x = torch.randn(B, T, c.x_dim, generator=gen)
    return x, torch.randn(B, T, c.z_dim, generator=gen)


# -- the variants ------------------------------------------------------------------------------


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 7])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_variants_agree_with_the_per_step_baseline(name, B, T):
    """The variants as the benchmark builds them (per-step = the literal reference, autograd
    loop, ours), from one set of weights and noise: the same loss and every parameter's gradient
    to 1e-5, for each configuration's output (bernoulli, stroke-gmm, gauss). The SRNN rows:
    ``Literal`` and ``SRNN`` (smoothing posterior, Res_q); the DMM's and STORN's likewise (the
    DMM with its smoothing posterior)."""
    cfg = dataclasses.replace(quick_config(CONFIGS[name]), batch=B, steps=T)
    variants, _, _, _ = build_variants(cfg, CPU, compile_baseline=False)
    srnn = name in SRNN_CONFIGS
    assert isinstance(variants["per-step"].module, Literal)
    assert type(variants["ours"].module) is FAMILY_CLASS[cfg.family]
    if cfg.family in ("srnn", "dmm"):
        assert variants["ours"].net.config.posterior == "smoothing"
        assert variants["ours"].net.config.res_q == (cfg.family == "srnn")
    ag = check_agreement(variants)
    assert ag["passed"] and set(ag["variants"]) == ({"ours"} if srnn else {"autograd-loop",
                                                                          "ours"})
    for v in ag["variants"].values():
        assert v["loss_rel_diff"] <= 1e-5 and v["grad_max_rel_diff"] <= 1e-5


@pytest.mark.parametrize("name", ["speech", "srnn-speech"])
def test_each_variant_trains_its_own_copy_of_the_weights(name):
    """An optimiser step of one variant must not move another's weights (they would no longer
    start equal), and the agreement check must read the weights the optimiser trains."""
    variants, _, _, _ = build_variants(quick_config(CONFIGS[name]), CPU, False)
    for v in variants.values():
        assert {id(p) for p in v.module.parameters()} == {id(p) for p in v.net.parameters()}
    for name, v in variants.items():
        for w in variants.values():
            w.module.zero_grad(set_to_none=True)
        v.loss().backward()
        for other, w in variants.items():
            assert any(p.grad is not None for p in w.net.parameters()) == (other == name), \
                (name, other)


def test_a_broken_baseline_is_caught_before_timing(monkeypatch, tmp_path, capsys):
    """A per-step version that forgets the KL term gives another loss: nothing is timed."""
    step = Literal.step

    def no_kl(self, x_t, eps_t, state, a_t=None):
        out, state = step(self, x_t, eps_t, state, a_t)
        return out._replace(kl=torch.zeros_like(out.kl)), state

    monkeypatch.setattr(Literal, "step", no_kl)
    path = tmp_path / "b.json"
    assert bench.main(["--quick", "--configs", "speech", "--json", str(path)]) == 1
    assert "disagree" in capsys.readouterr().err
    assert not path.exists()


def test_a_broken_srnn_baseline_is_caught_before_timing(monkeypatch, tmp_path, capsys):
    """The SRNN rows run the agreement check too: a per-step SRNN without its KL stops the run."""
    terms = Literal.terms

    def no_kl(self, x, noise, mask=None):
        log_px, kl, log_ratio = terms(self, x, noise, mask)
        return log_px, torch.zeros_like(kl), log_ratio

    monkeypatch.setattr(Literal, "terms", no_kl)
    path = tmp_path / "b.json"
    assert bench.main(["--quick", "--configs", "srnn-speech", "--no-scaling", "--json",
                       str(path)]) == 1
    assert "disagree" in capsys.readouterr().err
    assert not path.exists()


def test_compile_falls_back_when_the_step_breaks_the_graph(monkeypatch):
    """``fullgraph=True`` first; when that raises, the step is compiled without it, the error is
    recorded, and the compiled variant is timed only if it agrees. When no compile works, the
    error is reported and the variant left out (the compiler here is a stand-in: fast)."""
    calls = []

    def fake_compile(fn, *, fullgraph, dynamic):
        calls.append(fullgraph)
        if fullgraph:
            def broken(*args):
                raise RuntimeError("graph break: Distribution.__init__\nsecond line")
            return broken
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = quick_config(CONFIGS["mnist"])
    variants, _, _, info = build_variants(cfg, CPU, compile_baseline=True)
    assert calls == [True, False]
    assert info["compile"]["fullgraph"] is False
    assert info["compile"]["fullgraph_error"] == "RuntimeError: graph break: Distribution.__init__"
    assert "per-step+compile" in variants
    assert check_agreement(variants)["variants"]["per-step+compile"]["loss_rel_diff"] <= 1e-5

    def no_compiler(fn, *, fullgraph, dynamic):
        def fail(*args):
            raise OSError("no C compiler")
        return fail

    monkeypatch.setattr(torch, "compile", no_compiler)
    variants, _, _, info = build_variants(cfg, CPU, compile_baseline=True)
    assert info["compile"] == {"error": "OSError: no C compiler"}
    assert "per-step+compile" not in variants
    assert "step" not in vars(variants["per-step"].module)  # nothing left shadowing the method


# -- counting, against what the model multiplies -----------------------------------------------


class ProductRows(TorchDispatchMode):
    """Multiply-adds of every matrix product, by the number of rows of its left operand."""

    def __init__(self):
        super().__init__()
        self.macs: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm"):
            a, b = args[-2:]
            self.macs[a.shape[0]] = self.macs.get(a.shape[0], 0) + a.shape[0] * a.shape[1] * \
                b.shape[1]
        else:
            assert name not in ("bmm", "baddbmm", "matmul"), name  # would need counting too
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("enc,phi_z", [((12,), (10,)), ((12, 6), ()), ((12,), (10, 4))])
def test_matmul_count_is_what_the_model_multiplies(B, cell, enc, phi_z):
    """``matmul_macs`` against the products the code really runs: the literal reference's
    forward multiplies ``total`` per sequence step (torch's FLOP counter); ours runs ``loop`` of
    them on B-row slices inside the recurrence and ``batched`` on all B * T rows at once."""
    model = make_model(cell, enc=enc, phi_z=phi_z)
    T = 7
    x, noise = make_data(model, B, T)
    macs = matmul_macs(model)
    with FlopCounterMode(display=False) as counter:
        Literal(model).loss(x, noise)
    assert counter.get_total_flops() == 2 * macs["total"] * B * T
    rows = ProductRows()
    with rows:
        model.loss(x, noise=noise)
    assert rows.macs == {B: macs["loop"] * B * T, B * T: macs["batched"] * B * T}


@pytest.mark.parametrize("posterior,res_q", [("smoothing", True), ("filtering", False)])
def test_srnn_matmul_count_is_what_the_model_multiplies(posterior, res_q):
    """``srnn_matmul_macs`` against the products the code runs: torch's FLOP counter sees the
    linear layers (literal reference and ours alike; not the library LSTMs, whose products are
    4 H (in + H) per step each); ours runs ``z_chain`` of them on B-row slices in its loop."""
    torch.manual_seed(0)
    cfg = ModelConfig(family="srnn", x_dim=5, output="gauss", h_dim=8, a_dim=6, z_dim=3,
                      phi_x=(), prior_net=(7,), encoder=(9, 4), decoder=(11,),
                      posterior=posterior, res_q=res_q)
    model = SRNN(cfg)
    B, T = 3, 4
    x, noise = torch.randn(B, T, 5), torch.randn(B, T, 3)
    macs = srnn_matmul_macs(model)
    lstm = 4 * 8 * (5 + 8) + (4 * 6 * (8 + 5 + 6) if posterior == "smoothing" else 0)
    assert macs["rnn"] == lstm
    linear = macs["total"] - macs["rnn"]
    for fn in (lambda: Literal(model).loss(x, noise), lambda: model.loss(x, noise=noise)):
        with FlopCounterMode(display=False) as counter:
            fn()
        assert counter.get_total_flops() == 2 * linear * B * T
    rows = ProductRows()
    with rows:
        model.loss(x, noise=noise)
    assert rows.macs[B] == macs["z_chain"] * B * T
    assert macs["z_chain"] == 9 * 3 + 9 * 4 + 4 * 6 + ((7 * 3 + 7 * 6) if res_q else 0)


@pytest.mark.parametrize("samples", [2, 5])
def test_is_flop_ratio_is_what_replicas_cost(samples):
    """The analytic cost of IS with S samples over one pass, against torch's FLOP counter on
    ``model(x, replicas=S)`` (phi_x and its products shared) over ``model(x)``."""
    model = make_model(enc=(12, 6))
    x, _ = make_data(model, 3, 4)
    with torch.no_grad(), FlopCounterMode(display=False) as one:
        model(x)
    with torch.no_grad(), FlopCounterMode(display=False) as many:
        model(x, replicas=samples)
    ratio = many.get_total_flops() / one.get_total_flops()
    assert is_flop_ratio(model, samples)["ratio"] == pytest.approx(ratio, rel=1e-12)


# -- timing and memory -------------------------------------------------------------------------


def test_interleaved_rotates_the_order_and_times_each_function():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    interleaved(fns, repeats=3, warmup=1, sync=lambda: None)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    # each time lands on its own function's list, whatever the rotation
    times = interleaved({"fast": lambda: None, "slow": lambda: time.sleep(0.02)}, repeats=4,
                        warmup=0, sync=lambda: None)
    assert min(times["slow"]) >= 0.02
    assert sorted(times["fast"])[1] < 0.02


def test_paired_ratio_is_the_median_of_per_round_ratios():
    """Not the ratio of medians: a round slowed for both variants alike must not move it."""
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 4.0, 3.0]) == 2.0  # ratio of medians: 4 / 3


def test_saved_bytes_counts_each_storage_once():
    a = torch.randn(10, requires_grad=True)
    b = torch.randn(30, requires_grad=True)
    assert saved_bytes(lambda: (a * b[:10]).sum()) == 4 * 10 + 4 * 30  # a view keeps all of b
    assert saved_bytes(lambda: (a * a).sum()) == 4 * 10
    assert saved_bytes(lambda: (a + b[:10]).sum()) == 0  # addition keeps nothing


# -- the command -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    threads = torch.get_num_threads()
    assert bench.main(["--quick", "--json", str(path)]) == 0
    assert torch.get_num_threads() == threads  # --quick runs on one thread, then restores
    return json.loads(path.read_text())


def test_quick_run_writes_every_figure(quick):
    assert quick["quick"] is True
    assert {"cpu", "cpu_count", "torch", "torch_threads", "load_average"} <= set(quick["machine"])
    assert quick["machine"]["torch_threads"] == 1
    assert set(quick["configs"]) == set(CONFIGS)
    for name, r in quick["configs"].items():
        t = r["training"]
        srnn = name in SRNN_CONFIGS
        assert t["sizes"] == dataclasses.asdict(quick_config(CONFIGS[name]))
        expected = {"per-step", "ours"} if srnn else {"per-step", "autograd-loop", "ours"}
        expected |= BF16_VARIANTS  # --precision's default
        assert set(t["variants"]) == expected  # --quick: no compile
        assert "compile" not in t
        for v in t["variants"].values():
            assert len(v["ms_all"]) == quick["repeats"] == 3
        # the agreement check ran before the timing, and every variant agreed
        ag = t["agreement"]
        assert ag["passed"] and set(ag["variants"]) == expected - {"per-step"}
        if srnn:  # the training step only, beside the VRNN's ours of the same sizes
            ref = t["vrnn_reference"]
            assert ref["sizes"] == dataclasses.asdict(quick_config(CONFIGS[name]).as_vrnn())
            assert ref["sizes"]["family"] == "vrnn" and len(ref["ms_all"]) == 3
            ms = t["variants"]["ours"]["ms"]
            assert ref["over_vrnn"] == pytest.approx(ms / ref["ms"])
            assert "bound" not in t and not t["targets"]
            assert "evaluation" not in r and "generation" not in r
            continue
        assert "bound" in t and "vrnn_reference" not in t
        assert set(t["memory"]) == set(t["variants"])
        assert "profile" not in t  # only with --profile
        base = t["variants"]["per-step"]["ms"]
        for v in t["variants"].values():  # per-step's time over the variant's, not the inverse
            assert v["speedup_vs_per_step"] == pytest.approx(base / v["ms"])
        speed, fraction = TARGETS[name]
        expected = {k for k, v in (("speedup_vs_per_step", speed), ("fraction_of_sgemm",
                                                                   fraction)) if v is not None}
        if BF16 and name in BF16_TARGET:
            expected |= {"bf16_speedup_vs_fp32", "bf16_speedup_isolated"}
        assert set(t["targets"]) == expected
        for key, tg in t["targets"].items():
            if key.startswith("bf16_"):
                assert tg["value"] == (t["variants"]["ours bf16"] if key.endswith("fp32")
                                       else t["isolated"]["bf16"])["speedup_vs_fp32"]
                assert tg["target"] == BF16_TARGET[name] == 1.8
                continue
            assert tg["value"] == t["variants"]["ours"][key]
        e = r["evaluation"]
        assert e["samples"] == 40 and e["samples_per_pass"] == bench.is_chunk(quick_config(
            CONFIGS[name]))
        assert e["separate_measured"]  # --quick times 40 passes even for paper-speech
        g = r["generation"]  # the fast sampler beside the literal one, after they agreed
        assert {g[f"batch_{b}"]["steps"] for b in (1, 64)} == {5}
        assert g["agreement_max_abs_diff"] <= 1e-9 and g["batch_64"]["literal"]["ms"] > 0
        assert g["batch_1"]["speedup_vs_literal"] == pytest.approx(
            g["batch_1"]["literal"]["ms"] / g["batch_1"]["ms"])
        if name not in ("handwriting", "speech"):  # --particle-configs' default
            assert "particles" not in r
            continue
        p = r["particles"]
        assert set(p["particle_steps"]) == {"iwae_2", "fivo_2", "iwae_3", "fivo_3",
                                            "fivo-steps_2", "fivo-steps_3"}
        for k in (2, 3):  # each K-particle step against the IWAE step of its K
            assert p["particle_steps"][f"iwae_{k}"]["over_iwae"] == 1.0
            assert p["particle_steps"][f"fivo_{k}"]["over_iwae"] > 0
        assert p["evaluation"]["smc_steps_ms"] > 0
        for st in p["particle_steps"].values():  # the median of ratios scales exactly by 1/K
            assert st["over_k_one_particle_steps"] == pytest.approx(
                st["over_one_particle"] / st["particles"])
            assert st["ms"] > 0 and st["objective"] in ("iwae", "fivo", "fivo-steps")
        assert p["evaluation"]["samples"] == 40 and p["evaluation"]["smc_ms"] > 0
    s = quick["scaling"]
    assert s["model"]["name"] == "handwriting"
    assert [(r["steps"], r["batch"]) for r in s["by_steps"]] == [(5, 3), (10, 3), (20, 3)]
    assert [(r["steps"], r["batch"]) for r in s["by_batch"]] == [(10, 1), (10, 4)]


def test_markdown_tables_come_from_a_saved_result(quick, tmp_path, capsys):
    """``--from-json`` times nothing and writes the PERFORMANCE.md tables of that result."""
    src = tmp_path / "r.json"
    src.write_text(json.dumps(quick))
    md = tmp_path / "perf.md"
    assert bench.main(["--from-json", str(src), "--markdown", str(md)]) == 0
    text = md.read_text()
    ours = quick["configs"]["speech"]["training"]["variants"]["ours"]
    assert f"| ours | {ours['ms']:.1f} | {ours['seq_steps_per_s']:,.0f} |" in text
    for name in CONFIGS:
        assert f"**{name}**" in text
    assert "**srnn-speech** (SRNN, smoothing posterior, Res_q; x 200," in text
    for name, family in (("srnn-speech", "SRNN"), ("dmm-speech", "DMM"),
                         ("storn-speech", "STORN")):
        ref = quick["configs"][name]["training"]["vrnn_reference"]
        assert f"{family} `ours` / VRNN `ours`: {ref['over_vrnn']:.2f}" in text
    assert "**dmm-speech** (DMM, smoothing posterior; x 200," in text
    assert "**storn-speech** (STORN; x 200," in text
    assert "Importance-sampled evaluation" in text and "Scaling" in text
    iwae = quick["configs"]["speech"]["particles"]["particle_steps"]["iwae_3"]
    assert f"| speech | iwae | 3 | {iwae['ms']:.1f} | {iwae['over_one_particle']:.2f}x |" in text
    assert "| speech | 40 |" in text  # SMC against IS
    out = capsys.readouterr().out
    assert "ms/step" in out and "autograd-loop" in out  # the text report too
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert bench.main(["--from-json", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err


@needs_bf16
def test_quick_run_times_the_bf16_variants_in_the_same_rotation(quick):
    """Where the CPU multiplies bfloat16 natively the default ``--precision`` is fp32,bf16:
    ``per-step bf16`` and ``ours bf16`` in every configuration, timed in the rotation with the
    float32 variants and a bf16 ``torch.mm`` (``sgemm_bf16_gflops``, their fraction's rate),
    their speed-ups over the float32 variant they copy, their agreement within the bf16
    tolerance (and far enough from float32 that bf16 ran), the bf16 bound for the VRNN rows."""
    assert quick["precisions"] == ["fp32", "bf16"]
    for name, r in quick["configs"].items():
        t = r["training"]
        assert t["sgemm_bf16_gflops"] > 0 and t["sgemm_gflops"] > 0
        vs = t["variants"]
        for vname in ("per-step", "ours"):
            low, fp32 = vs[f"{vname} bf16"], vs[vname]
            assert low["precision"] == "bf16"
            assert len(low["ms_all"]) == 3  # the same rounds as the others
            assert low["speedup_vs_fp32"] == pytest.approx(fp32["ms"] / low["ms"])
            assert low["paired_speedup_vs_fp32"] == pytest.approx(paired_ratio(
                fp32["ms_all"], low["ms_all"]))
            # against the float32 per-step, and a fraction of the bf16 rate
            assert low["speedup_vs_per_step"] == pytest.approx(vs["per-step"]["ms"] / low["ms"])
            assert low["fraction_of_sgemm"] == pytest.approx(
                low["gflops"] / t["sgemm_bf16_gflops"])
            assert fp32["fraction_of_sgemm"] == pytest.approx(fp32["gflops"] / t["sgemm_gflops"])
            ag = t["agreement"]["variants"][f"{vname} bf16"]
            assert ag["rtol"] == BF16_AGREEMENT_RTOL == 2.0 ** -8
            assert ag["loss_rel_diff"] <= BF16_AGREEMENT_RTOL
            assert ag["grad_max_rel_diff"] >= BF16_MIN_GRAD_DIFF  # bf16 really ran
        assert t["agreement"]["rtol"] == 1e-5 and t["agreement"]["bf16_rtol"] == 2.0 ** -8
        assert {"per-step bf16", "ours bf16"} <= set(t["memory"])
        if name in SRNN_CONFIGS:
            assert "bound_bf16" not in t
        else:
            assert set(t["bound_bf16"]) == set(t["bound"])
            assert t["bound_bf16"]["thin_fraction_of_sgemm"] == pytest.approx(
                t["bound_bf16"]["thin_gflops"] / t["sgemm_bf16_gflops"])


@needs_bf16
def test_quick_run_times_the_bf16_pair_again_in_a_process_of_its_own(quick):
    """``--isolated`` (the default): ``ours`` and ``ours bf16`` timed once more in a child
    process, in as many rounds as the rotation; the child built the same model from the same
    seed (its first losses are this process's, exactly: one thread, the same kernels), and the
    ratios are of its own rounds."""
    for name, r in quick["configs"].items():
        iso = r["training"]["isolated"]["bf16"]
        assert "error" not in iso, iso
        assert iso["threads"] == 1 and iso["repeats"] == 3  # --quick: one thread, 3 rounds
        fp32, low = iso["ours_ms_all"], iso["ours_bf16_ms_all"]
        assert len(fp32) == len(low) == 3 and min(fp32 + low) > 0
        assert iso["ours_ms"] == pytest.approx(sorted(fp32)[1])
        assert iso["speedup_vs_fp32"] == pytest.approx(iso["ours_ms"] / iso["ours_bf16_ms"])
        assert iso["paired_speedup_vs_fp32"] == pytest.approx(paired_ratio(fp32, low))
        assert iso["first_loss_rel_diff"] == {"ours": 0.0, "ours bf16": 0.0}, name


def test_a_failing_isolated_child_is_reported_not_fatal():
    """A child that cannot run (here: an output distribution that does not exist) comes back as
    ``{"error": <its last line of stderr>}``, and the report says so instead of failing."""
    bad = dataclasses.replace(quick_config(CONFIGS["speech"]), output="no-such-output")
    rec = bench.isolated.pair_in_fresh_process(bad, "bf16", 1, 0, 1, torch.device("cpu"))
    assert set(rec) == {"error"} and "no-such-output" in rec["error"]
    line = bench.report._isolated_text(rec, "bf16", "; ")
    assert line.startswith("; in a process of their own, ours and ours bf16 failed: ")
    assert bench.report._isolated_text(rec, "bf16", " ", markdown=True).startswith(
        " In a process of their own, `ours` and `ours bf16` failed: ")


def test_no_isolated_times_no_child(monkeypatch, tmp_path):
    """``--no-isolated``: no child process, no ``isolated`` record, no isolated target."""
    def refuse(*a, **k):
        raise AssertionError("a child was started")
    monkeypatch.setattr(bench.suites, "pair_in_fresh_process", refuse)
    path = tmp_path / "b.json"
    assert bench.main(["--quick", "--configs", "speech", "--no-isolated", "--no-evaluation",
                       "--no-generation", "--no-scaling", "--particle-configs", "none",
                       "--json", str(path)]) == 0
    t = json.loads(path.read_text())["configs"]["speech"]["training"]
    assert "isolated" not in t and "bf16_speedup_isolated" not in t["targets"]


@needs_bf16
def test_the_bf16_variants_run_their_products_in_bf16_on_their_own_weights():
    """``per-step bf16`` and ``ours bf16`` (VRNN and SRNN): every matrix product of their forward
    and backward in bfloat16 (the per-step baseline's too: autocast hooks the module that owns
    the layers), float32 weights starting equal to ``ours``'s, each variant its own copy."""

    class Products(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dtypes: set = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in ("mm", "addmm", "bmm", "mkldnn_rnn_layer"):
                self.dtypes |= {a.dtype for a in args if isinstance(a, torch.Tensor)}
            return func(*args, **(kwargs or {}))

    for name in ("speech", "srnn-handwriting"):
        variants, _, _, _ = build_variants(quick_config(CONFIGS[name]), CPU, False,
                                           precisions=("fp32", "bf16"))
        ours = dict(variants["ours"].net.named_parameters())
        for vname in ("per-step bf16", "ours bf16"):
            v = variants[vname]
            assert v.precision == "bf16" and v.fp32_name == vname.removesuffix(" bf16")
            for n, p in v.net.named_parameters():
                assert p.dtype == torch.float32 and torch.equal(p, ours[n])
                assert p is not ours[n]
            mode = Products()
            with mode:
                loss = v.loss()
                loss.backward()
            assert mode.dtypes == {torch.bfloat16}, (name, vname, mode.dtypes)
            assert loss.dtype == torch.float32


@needs_bf16
def test_a_wrong_bf16_loss_is_caught_before_timing(monkeypatch, tmp_path, capsys):
    """The bf16 variants have their own agreement check: a loss 5% off under autocast (the fp32
    variants untouched) stops the run, and so does a bf16 variant whose products stayed in
    float32 (its gradients equal the fp32 ones: it would time float32 under the bf16 name)."""
    loss = VRNN.loss

    def off(self, *args, **kwargs):
        value, terms = loss(self, *args, **kwargs)
        return (value * 1.05 if torch.is_autocast_enabled("cpu") else value), terms

    path = tmp_path / "b.json"
    with monkeypatch.context() as m:
        m.setattr(VRNN, "loss", off)
        assert bench.main(["--quick", "--configs", "mnist", "--no-scaling", "--json",
                           str(path)]) == 1
    err = capsys.readouterr().err
    assert "disagree" in err and "ours bf16" in err and "> 0.00390625" in err
    assert not path.exists()
    with monkeypatch.context() as m:  # bf16 forgotten: autocast does nothing
        m.setattr(precision, "autocast", lambda model, prec, device: contextlib.nullcontext())
        assert bench.main(["--quick", "--configs", "srnn-speech", "--no-scaling"]) == 1
    assert "did not run in bf16" in capsys.readouterr().err


def test_precision_fp32_gives_no_bf16_rows(tmp_path, capsys):
    """``--precision fp32``: the float32 variants alone, no bf16 rate, bound or target, and a
    report without bf16 lines."""
    path = tmp_path / "f.json"
    assert bench.main(["--quick", "--configs", "handwriting", "--no-evaluation",
                       "--no-generation", "--no-scaling", "--particle-configs", "none",
                       "--precision", "fp32", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["precisions"] == ["fp32"]
    t = result["configs"]["handwriting"]["training"]
    assert set(t["variants"]) == {"per-step", "autograd-loop", "ours"}
    assert "sgemm_bf16_gflops" not in t and "bound_bf16" not in t
    assert "bf16_rtol" not in t["agreement"] and "bf16_speedup_vs_fp32" not in t["targets"]
    out = capsys.readouterr().out
    assert "bf16" not in out and "ms/step" in out


def test_bad_or_unsupported_precision_exits_2_naming_the_flag(monkeypatch, capsys):
    """A value other than fp32, bf16 is refused before anything is timed; so is bf16 on a CPU
    without native bfloat16 products, whose default is then fp32 alone."""
    assert bench.main(["--quick", "--configs", "mnist", "--precision", "fp32,fp16"]) == 2
    assert "--precision" in capsys.readouterr().err
    assert bench.main(["--precision", ","]) == 2
    assert "--precision" in capsys.readouterr().err
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert bench.main(["--quick", "--configs", "mnist", "--no-scaling", "--precision",
                       "fp32,bf16"]) == 2
    err = capsys.readouterr().err
    assert "--precision bf16" in err and "AVX-512 BF16" in err
    assert bench.cli.resolve_precisions(None, CPU) == ["fp32"]
    assert bench.cli.resolve_precisions("fp32", CPU) == ["fp32"]
    assert "fp32,bf16 where" in " ".join(bench.build_parser().format_help().split())


@needs_bf16
def test_reports_show_the_bf16_rows(quick, tmp_path, capsys):
    """The text and Markdown reports of a result with bf16 variants: their rows in the same
    tables, the bf16 rate, ours bf16 over ours, the bf16 bound (VRNN rows), the bf16 agreement
    and the bf16 target."""
    src = tmp_path / "r.json"
    src.write_text(json.dumps(quick))
    md = tmp_path / "perf.md"
    assert bench.main(["--from-json", str(src), "--markdown", str(md)]) == 0
    text, out = md.read_text(), capsys.readouterr().out
    for name in ("speech", "srnn-speech"):
        t = quick["configs"][name]["training"]
        low = t["variants"]["ours bf16"]
        assert f"| ours bf16 | {low['ms']:.1f} | {low['seq_steps_per_s']:,.0f} |" in text
        assert f"| per-step bf16 | {t['variants']['per-step bf16']['ms']:.1f} |" in text
        assert f"{t['sgemm_bf16_gflops']:.1f} GFLOP/s (256^3 bf16 `torch.mm`" in text
        assert (f"Speed-up of `ours bf16` over `ours`: {low['speedup_vs_fp32']:.2f}x (median of "
                f"the per-round ratios {low['paired_speedup_vs_fp32']:.2f}x)") in text
        assert f"bf16: matmul rate {t['sgemm_bf16_gflops']:.1f} GFLOP/s" in out
        assert f"speed-up of ours bf16 over ours {low['speedup_vs_fp32']:.2f}x" in out
        iso = t["isolated"]["bf16"]
        assert (f"In a process of their own `ours` {iso['ours_ms']:.1f} ms, `ours bf16` "
                f"{iso['ours_bf16_ms']:.1f} ms: {iso['speedup_vs_fp32']:.2f}x") in text
        assert (f"in a process of their own ours {iso['ours_ms']:.1f} ms, ours bf16 "
                f"{iso['ours_bf16_ms']:.1f} ms") in out
    b = quick["configs"]["speech"]["training"]["bound_bf16"]
    assert f"Bound in bf16: the B-row products run at {b['thin_gflops']:.1f} GFLOP/s" in text
    assert "ours bf16" in out and "per-step bf16" in out
    assert "agreement of the bf16 variants with the fp32 per-step (loss rtol 0.0039)" in out
    tg = quick["configs"]["speech"]["training"]["targets"]["bf16_speedup_vs_fp32"]
    assert (f"  speech       bf16_speedup_vs_fp32  {tg['value']:>7.2f}x (target 1.80x) "
            f"{'met' if tg['met'] else 'MISSED'}") in out


def test_a_fast_sampler_that_disagrees_is_caught_before_timing(monkeypatch):
    """The generation section times nothing unless the fast sampler draws the literal one's
    sequences: a head that draws other frames is refused."""
    import argparse

    from vrnn.bench.suites import bench_generation
    from vrnn.models.distributions import BernoulliHead

    args = argparse.Namespace(gen_steps=3, eval_repeats=1)
    cfg = quick_config(CONFIGS["mnist"])
    assert bench_generation(cfg, args, torch.device("cpu"))["agreement_max_abs_diff"] < 1e-12
    monkeypatch.setattr(BernoulliHead, "sample_from",
                        lambda self, out, temperature=1.0, generator=None: (out > 0).to(out))
    with pytest.raises(BenchmarkError, match="fast sampler's sequences differ"):
        bench_generation(cfg, args, torch.device("cpu"))


def test_performance_doc_holds_the_tables_of_its_json(tmp_path):
    """``python -m vrnn.bench --from-json docs/benchmark-cpu.json --markdown FILE`` renders the
    tables that docs/PERFORMANCE.md quotes, verbatim: the document and its JSON agree, and the
    formatter still reads a result written by an earlier version."""
    md = tmp_path / "tables.md"
    proc = subprocess.run([sys.executable, "-m", "vrnn.bench", "--from-json",
                           str(ROOT / "docs" / "benchmark-cpu.json"), "--markdown", str(md)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "per-step+compile" in proc.stdout and "graph breaks" in proc.stdout
    assert md.read_text() in (ROOT / "docs" / "PERFORMANCE.md").read_text()


@pytest.mark.parametrize("name,printed", [("srnn", "SRNN ours / VRNN ours"),
                                          ("families", "STORN ours / VRNN ours"),
                                          ("particles", "K particles"),
                                          ("particles-inloop", "/ IWAE"),
                                          ("particles-lean", "/ IWAE"),
                                          ("particles-replay", "/ IWAE"),
                                          ("precision", "speed-up of ours bf16 over ours"),
                                          ("precision-amx", "speed-up of ours bf16 over ours"),
                                          ("precision-isolated", "in a process of their own"),
                                          ("generation", "literal ms/step"),
                                          ("generation-quiet", "literal ms/step")])
def test_performance_doc_holds_the_tables_of_each_section_json(name, printed, tmp_path, capsys):
    """The SRNN, K-particle and bf16 sections of docs/PERFORMANCE.md quote the tables of
    docs/benchmark-cpu-<name>.json verbatim (rendered in this process: no timing, no second
    interpreter), and the text report of each shows what the section is about."""
    md = tmp_path / f"{name}.md"
    assert bench.main(["--from-json", str(ROOT / "docs" / f"benchmark-cpu-{name}.json"),
                       "--markdown", str(md)]) == 0
    assert printed in capsys.readouterr().out
    assert md.read_text() in (ROOT / "docs" / "PERFORMANCE.md").read_text()


def test_cli_runs_it_and_rejects_bad_flags(tmp_path, capsys):
    path = tmp_path / "c.json"
    args = ["benchmark", "--quick", "--configs", "handwriting", "--no-scaling",
            "--no-generation", "--json", str(path)]
    assert cli_main(args) == 0
    result = json.loads(path.read_text())
    assert set(result["configs"]) == {"handwriting"} and "scaling" not in result
    assert "generation" not in result["configs"]["handwriting"]
    assert "ms/step" in capsys.readouterr().out
    only = tmp_path / "p.json"
    assert cli_main(["benchmark", "--quick", "--configs", "speech", "--no-training",
                     "--no-evaluation", "--no-generation", "--no-scaling", "--particles", "2",
                     "--json", str(only), "--markdown", str(tmp_path / "p.md")]) == 0
    r = json.loads(only.read_text())["configs"]["speech"]
    assert "training" not in r and set(r["particles"]["particle_steps"]) == {"iwae_2", "fivo_2",
                                                                             "fivo-steps_2"}
    assert "| speech | fivo | 2 |" in (tmp_path / "p.md").read_text()
    assert bench.main(["--configs", "mnist,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert bench.main(["--repeats", "0"]) == 2
    assert bench.main(["--quick", "--configs", "mnist", "--particle-configs", "srnn-speech"]) == 2
    assert "--particle-configs: srnn-speech is not a VRNN config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--scale-steps", "5,x"])


def test_quick_configs_keep_the_data_kind():
    for cfg in CONFIGS.values():
        q = quick_config(cfg)
        assert dataclasses.replace(q, hidden=cfg.hidden, z_dim=cfg.z_dim, steps=cfg.steps,
                                   batch=cfg.batch) == cfg


# -- model behaviour the evaluation timing relies on -------------------------------------------


@pytest.mark.parametrize("chunk", [1, 4, 6])
def test_library_is_equals_is_over_repeated_sequences(chunk):
    """``estimate_log_likelihood`` (phi_x shared by the replicas) gives the estimate of IS over
    ``x.repeat`` with the same noise stream, whatever the chunking: the two IS timings compare
    the same computation."""
    from vrnn.inference.importance import estimate_log_likelihood

    model = make_model()
    x, _ = make_data(model, 3, 5)
    with torch.no_grad():
        ref = estimate_log_likelihood(model, x, num_samples=6, chunk_size=chunk,
                                      generator=torch.Generator().manual_seed(3))
    got = bench.is_with_repeat(model, x, 6, torch.Generator().manual_seed(3), chunk)
    torch.testing.assert_close(got, ref.log_likelihood)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("custom", [True, False])
def test_replicas_equal_repeated_sequences(cell, custom):
    """``replicas=R`` (phi_x and its products computed once per sequence) gives the terms and
    gradients of passing ``x.repeat(R, 1, 1)``."""
    model = make_model(cell)
    model.custom_loop = custom
    x, _ = make_data(model, 3, 6)
    noise = torch.randn(4 * 3, 6, 3, generator=torch.Generator().manual_seed(5))
    shared = model(x, noise=noise, replicas=4, sample_terms=True)
    repeated = model(x.repeat(4, 1, 1), noise=noise, sample_terms=True)
    for name in ("log_px", "kl", "log_pz", "log_qz"):
        torch.testing.assert_close(getattr(shared, name), getattr(repeated, name))
    params = list(model.parameters())
    ga = torch.autograd.grad(-shared.elbo().mean(), params)
    gb = torch.autograd.grad(-repeated.elbo().mean(), params)
    for a, b in zip(ga, gb):
        assert rel_err(a, b) < 1e-5
    with pytest.raises(ValueError, match=r"replicas \* B"):
        model(x, noise=noise[:3], replicas=4)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_state_carried_across_chunks_gets_its_gradient(cell):
    """Truncated BPTT with the state kept in the graph: two chunks equal one pass, gradients too
    (the final state's gradient flows back through the hand-written backward)."""
    model = make_model(cell)
    x, noise = make_data(model, 3, 8)
    whole = model.loss(x, noise=noise)[0]
    g_whole = torch.autograd.grad(whole, list(model.parameters()))
    first_loss, first = model.loss(x[:, :5], noise=noise[:, :5])
    second_loss, _ = model.loss(x[:, 5:], noise=noise[:, 5:], state=first.state)
    g_chunks = torch.autograd.grad(first_loss + second_loss, list(model.parameters()))
    assert (first_loss + second_loss).item() == pytest.approx(whole.item(), rel=1e-6)
    for a, b in zip(g_chunks, g_whole):
        assert rel_err(a, b) < 1e-5


def test_inference_path_keeps_nothing_and_matches():
    """Under ``no_grad`` (what the evaluation timing runs) the loop keeps no graph and gives the
    terms of the training path."""
    model = make_model()
    x, noise = make_data(model, 3, 6)
    with torch.no_grad():
        a = model(x, noise=noise, sample_terms=True)
    b = model(x, noise=noise, sample_terms=True)
    assert b.log_px.requires_grad and not a.log_px.requires_grad
    torch.testing.assert_close(a.log_px, b.log_px.detach())
    torch.testing.assert_close(a.log_qz, b.log_qz.detach())
