"""The speed benchmark, and the fast path it times pinned to the straightforward per-step VRNN:
loss and gradients to 1e-5 in float32, the hand-written backward against finite differences."""

import dataclasses
import json

import pytest
import torch

from vrnn import bench
from vrnn.bench import BenchConfig, PerStepVRNN, interleaved, matmul_macs, training_flops
from vrnn.cli import main as cli_main
from vrnn.config import ModelConfig
from vrnn.model import VRNN, _FilteringLoop, _LoopSpec


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def make_model(cell="lstm", output="gauss", x_dim=5, enc=(12,), phi_z=(10,), phi_x=(9,),
               prior="learned", dtype=torch.float32, seed=0) -> VRNN:
    torch.manual_seed(seed)
    cfg = ModelConfig(family="vrnn", x_dim=x_dim, output=output, cell=cell, prior=prior,
                      h_dim=8, z_dim=3, components=2, phi_x=phi_x, phi_z=phi_z, encoder=enc,
                      prior_net=(7,), decoder=(11,))
    model = VRNN(cfg).to(dtype)
    with torch.no_grad():  # a learned h0 away from zero, so its gradient path is exercised
        model.initial_state.normal_(0.0, 0.5)
    return model


def make_data(model: VRNN, B: int, T: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    c = model.config
    dtype = model.initial_state.dtype
    x = torch.randn(B, T, c.x_dim, generator=gen, dtype=dtype)
    if c.output == "bernoulli":
        x = (x > 0).to(dtype)
    if c.output.startswith("stroke"):
        x[..., 2] = (x[..., 2] > 0.5).to(dtype)
    return x, torch.randn(B, T, c.z_dim, generator=gen, dtype=dtype)


# -- the fast path against the benchmark's straightforward version ---------------------------


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 7])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("output,x_dim,enc,phi_z,prior", [
    ("gauss", 5, (12,), (10,), "learned"),
    ("bernoulli", 6, (12, 6), (), "learned"),       # deeper encoder, phi_z = identity
    ("stroke-gmm", 3, (12,), (10, 4), "learned"),    # two phi_z layers
    ("gmm", 5, (12,), (10,), "standard"),            # VRNN-I
])
def test_loss_and_gradients_match_the_per_step_version(B, T, cell, output, x_dim, enc, phi_z,
                                                       prior):
    """Same weights, same noise: the same loss and every parameter's gradient to 1e-5, for the
    shipped loop (hand-written backward) and for the autograd loop."""
    model = make_model(cell, output, x_dim, enc, phi_z, prior=prior)
    x, noise = make_data(model, B, T)
    ref = PerStepVRNN(model)
    ref_loss = ref.loss(x, noise)
    ref_params = dict(ref.net.named_parameters())
    ref_grads = torch.autograd.grad(ref_loss, list(ref_params.values()), allow_unused=True)
    for custom in (True, False):
        model.custom_loop = custom
        loss = model.loss(x, noise=noise)[0]
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
        params = dict(model.named_parameters())
        assert list(params) == list(ref_params)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for name, a, b, p in zip(params, grads, ref_grads, params.values()):
            a = torch.zeros_like(p) if a is None else a  # the cell is unused when T = 1
            b = torch.zeros_like(p) if b is None else b
            if b.abs().sum() == 0:
                assert a.abs().sum() == 0, (custom, name)
            else:
                assert rel_err(a, b) < 1e-5, (custom, name, rel_err(a, b))


@pytest.mark.parametrize("cell,replicas", [("lstm", 1), ("gru", 1), ("lstm", 2)])
def test_hand_written_backward_against_finite_differences(cell, replicas):
    """gradcheck in float64 on every input of the loop (phi_x features, initial state, every
    weight) with random gradients flowing into every output (h_{t-1} of each step, z, phi_z(z),
    the encoder's loc and raw scale, scale, the final state)."""
    model = make_model(cell, enc=(6, 5), phi_z=(4, 5), phi_x=(4,), dtype=torch.float64)
    B, T = 2, 4
    N = replicas * B
    gen = torch.Generator().manual_seed(0)
    feat_x = torch.randn(B, T, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(N, T, 3, generator=gen, dtype=torch.float64)
    h0 = torch.randn(N, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(N, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    lstm = cell == "lstm"
    spec = _LoopSpec(lstm=lstm, n_enc=2, n_phi_z=2, min_scale=1e-4, replicas=replicas)
    params = [p.detach().clone().requires_grad_() for p in model._loop_params()]

    def loop(feat_x, h0, c0, *params):
        out = _FilteringLoop.apply(spec, feat_x, noise, h0, c0 if lstm else None, *params)
        return tuple(o for o in out if o is not None)

    assert torch.autograd.gradcheck(loop, (feat_x, h0, c0, *params), eps=1e-6, atol=1e-6,
                                    rtol=1e-5, fast_mode=True)


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


def test_inference_path_keeps_nothing_and_matches():
    model = make_model()
    x, noise = make_data(model, 3, 6)
    with torch.no_grad():
        a = model(x, noise=noise, sample_terms=True)
    b = model(x, noise=noise, sample_terms=True)
    assert b.log_px.requires_grad and not a.log_px.requires_grad
    torch.testing.assert_close(a.log_px, b.log_px.detach())
    torch.testing.assert_close(a.log_qz, b.log_qz.detach())


# -- counting and timing ---------------------------------------------------------------------


def test_matmul_count_is_every_weight_once_per_step():
    cfg = BenchConfig("t", x_dim=7, hidden=10, z_dim=3, steps=4, batch=2, output="gauss",
                      kind="audio")
    model = VRNN(cfg.model_config())
    H, X, Z, D = 10, 10, 3, 7
    by_hand = (D * H  # phi_x
               + (X + H) * H + H * 2 * Z  # encoder
               + H * H + H * 2 * Z  # prior
               + Z * H  # phi_z
               + (H + H) * H + H * 2 * D  # decoder
               + (X + H) * 4 * H + H * 4 * H)  # LSTM
    loop = H * H + H * 2 * Z + Z * H + H * 4 * H + H * 4 * H
    macs = matmul_macs(model)
    assert macs == {"total": by_hand, "loop": loop, "batched": by_hand - loop}
    flops = training_flops(model, cfg.batch, cfg.steps)
    assert flops["total"] == 6 * by_hand * cfg.batch * cfg.steps
    assert flops["loop"] + flops["batched"] == flops["total"]


def test_interleaved_rotates_the_order():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    times = interleaved(fns, repeats=3, warmup=1, sync=lambda: None)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(v) == 3 and min(v) >= 0 for v in times.values())


# -- the command ---------------------------------------------------------------------------


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
    assert set(quick["configs"]) == set(bench.CONFIGS)
    for r in quick["configs"].values():
        t = r["training"]
        assert set(t["variants"]) == {"per-step", "autograd-loop", "ours"}
        assert t["sgemm_gflops"] > 0
        for v in t["variants"].values():
            assert len(v["ms_all"]) == quick["repeats"] >= 3
            assert v["ms"] > 0 and v["seq_steps_per_s"] > 0 and v["gflops"] > 0
            assert v["fraction_of_sgemm"] == pytest.approx(v["gflops"] / t["sgemm_gflops"])
        assert t["variants"]["per-step"]["speedup_vs_per_step"] == pytest.approx(1.0)
        # the loss check ran before the timing, and every variant agreed
        ag = t["agreement"]
        assert ag["passed"] and ag["rtol"] == 1e-5
        assert set(ag["variants"]) == {"autograd-loop", "ours"}
        for v in ag["variants"].values():
            assert v["loss_rel_diff"] <= 1e-5 and v["grad_max_rel_diff"] <= 1e-5
        assert t["flops_per_step"]["total"] > 0
        assert t["bound"]["best_fraction_of_sgemm"] > 0
        assert all(m["saved_for_backward_bytes"] > 0 for m in t["memory"].values())
        e = r["evaluation"]
        assert e["samples"] == 40 and e["is_ms"] > 0 and e["elbo_pass_ms"] > 0
        assert e["met"] == (e["is_over_one_pass"] <= 20)
        for b in ("batch_1", "batch_64"):
            assert r["generation"][b]["steps_per_s"] > 0
    targets = quick["configs"]["speech"]["training"]["targets"]
    assert targets["speedup_vs_per_step"]["target"] == 1.7
    assert targets["fraction_of_sgemm"]["target"] == 0.8
    s = quick["scaling"]
    assert [r["steps"] for r in s["by_steps"]] == [5, 10, 20]
    assert [r["batch"] for r in s["by_batch"]] == [1, 4]
    assert s["longest_over_cheapest_per_step"] >= 1.0
    assert quick["peak_rss_mib"] > 0


def test_markdown_tables_come_from_a_saved_result(quick, tmp_path, capsys):
    """``--from-json`` times nothing and writes the PERFORMANCE.md tables of that result."""
    src = tmp_path / "r.json"
    src.write_text(json.dumps(quick))
    md = tmp_path / "perf.md"
    assert bench.main(["--from-json", str(src), "--markdown", str(md)]) == 0
    text = md.read_text()
    ours = quick["configs"]["speech"]["training"]["variants"]["ours"]
    assert f"| ours | {ours['ms']:.1f} | {ours['seq_steps_per_s']:,.0f} |" in text
    for name in bench.CONFIGS:
        assert f"**{name}**" in text
    assert "Importance-sampled evaluation" in text and "Scaling" in text
    assert "ms/step" in capsys.readouterr().out  # the text report too
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert bench.main(["--from-json", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_a_broken_baseline_is_caught_before_timing(monkeypatch, tmp_path, capsys):
    """A per-step version that forgets the KL term gives another loss: nothing is timed."""
    def no_kl(self, x_t, eps_t, h, c):
        net = self.net
        fx = net.phi_x(x_t)
        loc, scale = net.encoder(torch.cat([fx, h], -1))
        fz = net.phi_z(loc + scale * eps_t)
        term = net.decoder(torch.cat([fz, h], -1)).log_prob(x_t)
        h, c = net.cell(torch.cat([fx, fz], -1), (h, c))
        return term, h, c

    monkeypatch.setattr(PerStepVRNN, "step", no_kl)
    path = tmp_path / "b.json"
    assert bench.main(["--quick", "--configs", "speech", "--json", str(path)]) == 1
    assert "disagree" in capsys.readouterr().err
    assert not path.exists()


def test_cli_runs_it_and_rejects_bad_flags(tmp_path, capsys):
    path = tmp_path / "c.json"
    args = ["benchmark", "--quick", "--configs", "handwriting", "--no-scaling", "--json",
            str(path)]
    assert cli_main(args) == 0
    assert set(json.loads(path.read_text())["configs"]) == {"handwriting"}
    assert "ms/step" in capsys.readouterr().out
    assert bench.main(["--configs", "mnist,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_quick_configs_keep_the_data_kind():
    for cfg in bench.CONFIGS.values():
        q = bench.quick_config(cfg)
        assert dataclasses.replace(q, hidden=cfg.hidden, z_dim=cfg.z_dim, steps=cfg.steps,
                                   batch=cfg.batch) == cfg


@pytest.mark.parametrize("chunk", [1, 4, 6])
def test_library_is_equals_is_over_repeated_sequences(chunk):
    """``estimate_log_likelihood`` (phi_x shared by the replicas) gives the estimate of IS over
    ``x.repeat`` with the same noise stream, whatever the chunking."""
    from vrnn.evaluate import estimate_log_likelihood

    model = make_model()
    x, _ = make_data(model, 3, 5)
    with torch.no_grad():
        ref = estimate_log_likelihood(model, x, num_samples=6, chunk_size=chunk,
                                      generator=torch.Generator().manual_seed(3))
    got = bench.is_with_repeat(model, x, 6, torch.Generator().manual_seed(3), chunk)
    torch.testing.assert_close(got, ref.log_likelihood)


def test_is_flop_ratio_counts_the_shared_products():
    """With phi_x shared, S samples cost less than S passes and more than one."""
    model = make_model()
    r = bench.is_flop_ratio(model, samples=40)
    assert 0 < r["shared_share"] < 1
    assert 1 < r["ratio"] < 40
    assert r["ratio"] == pytest.approx(40 - 39 * r["shared_share"])
