"""``vrnn reproduce --study families``: one model of each family (RNN, VRNN, SRNN, DMM, STORN)
at the same settings, the claims judged by paired gaps (checked against numpy, not against
``paired_gap``), the ranking and the published figures in its section, and a tiny study end to
end."""

import json
import re

import numpy as np
import pytest

from vrnn.cli import main
from vrnn.study.reproduce import build_parser, train_configs
from vrnn.study.studies import FAMILIES, family_claims, study_entries
from vrnn.study.tables import ModelResult


def numpy_gap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The paired gap and its standard error, written out: mean and sd/sqrt(N) of a - b."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


@pytest.mark.parametrize("data, kind, out", [("speech", "audio", "gauss"),
                                             ("chorales", "binary", "bernoulli"),
                                             ("text", "text", "categorical")])
def test_one_entry_per_family_each_with_its_papers_posterior(data, kind, out):
    entries = study_entries("families", kind)
    assert [e.key for e in entries] == [f"{f}-{out}" for f in FAMILIES]
    assert all(e.model == e.key and e.posterior is None and e.res_q is None and not e.train
               for e in entries)  # None: the model's default, its own paper's posterior
    args = build_parser().parse_args(["--data", data, "--study", "families"])
    configs = train_configs(args, kind)
    assert list(configs) == [e.key for e in entries]
    for key, cfg in configs.items():
        assert cfg.out_dir.endswith(f"{data}-families/{key}")
        assert cfg.max_minutes == 20.0 and cfg.budget_clock == "cpu" and cfg.objective == "elbo"
    assert len({(c.preset, c.batch_size, c.lr, c.seed) for c in configs.values()}) == 1


def synthetic(shifts: dict[str, float], n: int = 30, seed: int = 0) -> dict[str, ModelResult]:
    rng = np.random.default_rng(seed)
    base = rng.normal(-400.0, 60.0, size=n)  # the same sequences for every model
    return {k: ModelResult(k.upper(), not k.startswith("rnn"), base + s + rng.normal(0, 1.0, n),
                           base + s - 2.0) for k, s in shifts.items()}


def test_family_claims_are_the_paired_gaps():
    shifts = {"rnn-gauss": 0.0, "vrnn-gauss": 5.0, "srnn-gauss": 8.0, "dmm-gauss": -3.0,
              "storn-gauss": 1.0}
    results = synthetic(shifts)
    claims = family_claims(results)
    texts = [c.text for c in claims]
    assert texts == [
        "VRNN-GAUSS above RNN-GAUSS (latent variables above none)",
        "SRNN-GAUSS above RNN-GAUSS (latent variables above none)",
        "DMM-GAUSS above RNN-GAUSS (latent variables above none)",
        "STORN-GAUSS above RNN-GAUSS (latent variables above none)",
        "SRNN-GAUSS above VRNN-GAUSS (Fraccaro et al. 2016)",
        "SRNN-GAUSS above DMM-GAUSS (published JSB figures)",
        "SRNN-GAUSS above STORN-GAUSS (published JSB figures)",
        "VRNN-GAUSS against DMM-GAUSS", "VRNN-GAUSS against STORN-GAUSS",
        "DMM-GAUSS against STORN-GAUSS"]
    pairs = [("vrnn", "rnn"), ("srnn", "rnn"), ("dmm", "rnn"), ("storn", "rnn"),
             ("srnn", "vrnn"), ("srnn", "dmm"), ("srnn", "storn"), ("vrnn", "dmm"),
             ("vrnn", "storn"), ("dmm", "storn")]
    for c, (a, b) in zip(claims, pairs):
        gap, se = numpy_gap(results[f"{a}-gauss"].log_likelihood,
                            results[f"{b}-gauss"].log_likelihood)
        assert c.gap == pytest.approx(gap) and c.se == pytest.approx(se)
        assert c.gap == pytest.approx(shifts[f"{a}-gauss"] - shifts[f"{b}-gauss"], abs=1.0)
    assert [c.holds for c in claims] == [True, True, False, True, True, True, True,
                                         None, None, None]
    on_elbo = family_claims(results, field="elbo")
    assert on_elbo[0].gap == pytest.approx(5.0) and on_elbo[0].se == pytest.approx(0.0)
    # a family left out leaves its claims out
    fewer = family_claims({k: r for k, r in results.items() if k != "srnn-gauss"})
    assert len(fewer) == 3 + 3 and not any("SRNN" in c.text for c in fewer)


def test_the_ranking_and_the_published_figures():
    from vrnn.study.report import _published_table, _ranking

    results = synthetic({"rnn-bernoulli": 0.0, "storn-bernoulli": -4.0, "srnn-bernoulli": 6.0})
    line = _ranking(results, "by IS")
    names = re.findall(r"([A-Z-]+) -?[0-9.]+", line)
    assert names == ["SRNN-BERNOULLI", "RNN-BERNOULLI", "STORN-BERNOULLI"]
    gap, se = numpy_gap(results["srnn-bernoulli"].log_likelihood,
                        results["rnn-bernoulli"].log_likelihood)
    assert f"RNN-BERNOULLI {np.mean(results['rnn-bernoulli'].log_likelihood):.1f} " \
           f"({-gap:+.1f} ± {se:.1f})" in line

    def record(model, per_step, smc=None, latent=True):
        r = {"name": model.upper(), "model": model, "latent": latent,
             "summary": {"log_likelihood_per_step": per_step}}
        if smc is not None:
            r["smc"] = {"summary": {"log_likelihood_per_step": smc}}
        return r

    records = {"rnn-bernoulli": record("rnn-bernoulli", -7.5, latent=False),
               "srnn-bernoulli": record("srnn-bernoulli", -7.25, smc=-7.125),
               "dmm-bernoulli": record("dmm-bernoulli", -7.0)}
    table = _published_table(records, list(records))
    assert table[2] == "| RNN-BERNOULLI | 7.500 | 7.500 | - |"  # exact: both columns
    assert table[3] == "| SRNN-BERNOULLI | 7.250 | 7.125 | 4.74 |"
    assert table[4] == "| DMM-BERNOULLI | 7.000 | - | 6.39 to 6.93 |"


def write_pen(path, seed=0):
    """Pen strokes (dx, dy, pen-up) of 6-9 steps, 16/3/4 sequences per split."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 16), ("valid", 3), ("test", 4)):
        seqs = [np.concatenate([rng.normal(size=(t, 2)), rng.integers(0, 2, (t, 1))], axis=1)
                .astype(np.float32) for t in rng.integers(6, 10, size=n)]
        arrays[split] = np.concatenate(seqs)  # (T_1 + ... + T_n, 3)
        arrays[f"{split}_lengths"] = [len(s) for s in seqs]
    np.savez(path, **arrays)
    return path


def test_a_tiny_families_study_writes_its_section(tmp_path, capsys):
    data = write_pen(tmp_path / "pen.npz")
    docs, out = tmp_path / "docs", tmp_path / "study"
    assert main(["reproduce", "--data", str(data), "--study", "families", "--preset", "tiny",
                 "--max-steps", "4", "--val-interval", "2", "--samples", "3",
                 "--smc-repeats", "2", "--docs", str(docs), "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["study"] == "families"
    models = saved["models"]
    assert list(models) == [f"{f}-gauss" for f in FAMILIES]
    assert [models[k]["latent"] for k in models] == [False, True, True, True, True]
    assert all("smc" in models[k] for k in list(models)[1:])
    text = (docs / "RESULTS.md").read_text()
    section = text[text.index("<!-- reproduce:pen-families:begin -->"):]
    assert "--study families" in section and "Bayer and Osendorfer 2014" in section
    assert "| updates per CPU minute |" in section
    for k, r in models.items():  # updates per CPU minute, from the record
        rate = f"{r['steps'] / r['train_cpu_minutes']:.0f}"
        assert re.search(rf"\| {re.escape(r['name'])} \| [0-9,]+ \| 4 \| [0-9.]+ \([0-9.]+\) "
                         rf"\| {rate} \|", section), k
    assert "- by the importance-sampled estimate (exact for the RNN): " in section
    assert "- by the SMC estimate (exact for the RNN): " in section
    assert "DMM-Gauss above RNN-Gauss (latent variables above none)" in section
    assert "SRNN-Gauss above STORN-Gauss (published JSB figures)" in section
    assert "DMM-Gauss against STORN-Gauss: not tested" in section
    assert "best" in section and "of 4: still improving at the end of the budget" in section
    assert "published (JSB)" not in section  # the JSB table is for binary data only
    assert (docs / "pen-families_learning_curves.png").stat().st_size > 1000


def test_the_learning_curves_are_read_for_the_budget(tmp_path):
    """Half-way, best and last validation of each model from its metrics.csv, and whether the
    budget ended it still improving or it had stalled."""
    from vrnn.study.report import _curve_facts

    curves = {"rising": [-50.0, -40.0, -30.0, -20.0], "stalled": [-50.0, -10.0, -12.0, -11.0,
                                                                    -13.0]}
    records = {}
    for key, values in curves.items():
        run = tmp_path / key
        run.mkdir()
        rows = ["step,epoch,valid_bound"] + [f"{100 * (i + 1)},0,{v}"
                                              for i, v in enumerate(values)]
        rows.insert(2, "150,0,")  # a training row between validations
        (run / "metrics.csv").write_text("\n".join(rows) + "\n")
        records[key] = {"name": key.capitalize(), "run_dir": str(run)}
    lines = _curve_facts(records, list(records))
    assert lines[2] == ("- Rising: -40.0 at update 200 (about half its updates), best -20.0 at "
                        "update 400 of 400: still improving at the end of the budget.")
    assert lines[3] == ("- Stalled: -12.0 at update 300 (about half its updates), best -10.0 at "
                        "update 200 of 500: no better bound in its last 3 validations.")
