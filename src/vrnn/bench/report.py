"""The benchmark's result (the ``--json`` dict) as a text report and as the Markdown tables of
``docs/PERFORMANCE.md``. Both read the JSON alone: an earlier run renders with ``--from-json``.

A result with lower-precision variants (``--precision bf16``: ``per-step bf16``, ``ours bf16``)
gets their rows in the same tables (their "of mm" is of the bf16 matmul rate, their speed-up
against the float32 per-step), and a line on the bf16 rate, ``ours bf16`` over ``ours`` and the
bf16 bound; a result without them renders exactly as before they existed.

Each table is computed once for both reports: its rows (``_training_rows``, ``_evaluation_rows``,
...) and its columns (:class:`Col`: the value, its format, its header and width in the text
report, its header in the Markdown table), rendered by ``_text_header``/``_text_rows`` (padded
columns) and ``_md_table``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

LOW_PRECISIONS = ("bf16",)
"""The precisions whose figures (``sgemm_P_gflops``, ``bound_P``) a result may hold."""


def _precision(v: dict) -> str:
    """A variant's (or agreement record's) precision: fp32 for a result without the field."""
    return v.get("precision", "fp32")


def _isolated_text(rec: dict | None, p: str, sep: str, markdown: bool = False) -> str:
    """The pair timed in a process of its own (:mod:`vrnn.bench.isolated`), after ``sep``: a
    clause of the text report's line, or (``markdown``) a sentence; '' for a result without
    it."""
    if rec is None:
        return ""
    q = "`" if markdown else ""
    start = "In" if markdown else "in"
    if "error" in rec:
        return (f"{sep}{start} a process of their own, {q}ours{q} and {q}ours {p}{q} failed: "
                f"{rec['error']}" + ("." if markdown else ""))
    return (f"{sep}{start} a process of their own {q}ours{q} {rec['ours_ms']:.1f} ms, "
            f"{q}ours {p}{q} {rec[f'ours_{p}_ms']:.1f} ms: {rec['speedup_vs_fp32']:.2f}x "
            f"(paired {rec['paired_speedup_vs_fp32']:.2f}x)" + ("." if markdown else ""))


class _Low(NamedTuple):
    """The figures of one lower precision in a configuration's training record."""

    p: str
    rate: float  # its matmul rate, GFLOP/s (``sgemm_P_gflops``)
    ours: dict | None  # the variant ``ours P``
    per_step: dict | None  # the variant ``per-step P``
    isolated: dict | None  # ``ours`` against ``ours P`` in a process of their own
    bound: dict | None  # ``bound_P``


def _low_precisions(t: dict) -> list[_Low]:
    """The lower precisions that ``t`` holds a matmul rate of, with their figures."""
    return [_Low(p, t[f"sgemm_{p}_gflops"], t["variants"].get(f"ours {p}"),
                 t["variants"].get(f"per-step {p}"), t.get("isolated", {}).get(p),
                 t.get(f"bound_{p}"))
            for p in LOW_PRECISIONS if t.get(f"sgemm_{p}_gflops") is not None]


def _low_text(t: dict, w: int) -> list[str]:
    """For each lower precision in ``t``: its matmul rate, ``ours P`` over ``ours``, its bound."""
    lines = []
    for lo in _low_precisions(t):
        p = lo.p
        line = (f"{'':<{w}}{p}: matmul rate {lo.rate:.1f} GFLOP/s ({t['sgemm_size']}^3 {p} "
                f"torch.mm; the {p} rows' 'of mm' is of it)")
        if lo.ours is not None:
            line += (f"; speed-up of ours {p} over ours {lo.ours['speedup_vs_fp32']:.2f}x "
                     f"(paired {lo.ours['paired_speedup_vs_fp32']:.2f}x)")
        line += _isolated_text(lo.isolated, p, "; ")
        if lo.bound is not None:
            line += (f"; B-row products {lo.bound['thin_gflops']:.1f} GFLOP/s; bound "
                     f"{lo.bound['best_ms']:.1f} ms = {lo.bound['best_fraction_of_sgemm']:.0%} "
                     f"of {p} mm")
        lines.append(line)
    return lines


def _low_markdown(t: dict) -> list[str]:
    """The Markdown of :func:`_low_text`: one paragraph per lower precision present."""
    out = []
    for lo in _low_precisions(t):
        p = lo.p
        text = (f"{p} (`--precision {p}`): the {p} rows run their products in {p} on float32 "
                f"weights; their share of the matmul rate is of the {p} rate, "
                f"{lo.rate:.1f} GFLOP/s ({t['sgemm_size']}^3 {p} `torch.mm`, same rotation), "
                f"their speed-up against the float32 per-step.")
        if lo.ours is not None:
            text += (f" Speed-up of `ours {p}` over `ours`: {lo.ours['speedup_vs_fp32']:.2f}x "
                     f"(median of the per-round ratios "
                     f"{lo.ours['paired_speedup_vs_fp32']:.2f}x).")
        if lo.per_step is not None:
            text += (f" Of `per-step {p}` over `per-step`: "
                     f"{lo.per_step['speedup_vs_fp32']:.2f}x "
                     f"(paired {lo.per_step['paired_speedup_vs_fp32']:.2f}x).")
        text += _isolated_text(lo.isolated, p, " ", markdown=True)
        b = lo.bound
        if b is not None:
            text += (f" Bound in {p}: the B-row products run at {b['thin_gflops']:.1f} GFLOP/s "
                     f"({b['thin_fraction_of_sgemm']:.0%} of the {p} rate); a step takes at "
                     f"least {b['best_ms']:.1f} ms ({b['best_fraction_of_sgemm']:.0%} of the "
                     f"{p} rate).")
        out += ["", text]
    return out


# -- the sections' rows, once; rendered as text columns or as Markdown tables -------------------


@dataclass(frozen=True)
class Col:
    """A column of a section's table. ``key``: the value of a row it shows; ``cell``: how, a
    ``str.format`` template of that value (None, a figure not measured, is an empty cell) or a
    function of the whole row; ``text``, ``width``: its header and width in the text report;
    ``md``: its header in the Markdown table, ``md_cell`` its cell there where that differs from
    ``cell``; a header None leaves the column out of that rendering. ``left``: a name, aligned
    left (figures align right)."""

    key: str
    cell: str | Callable[[dict], str] = "{}"
    text: str | None = None
    width: int = 0
    md: str | None = None
    md_cell: str | Callable[[dict], str] | None = None
    left: bool = False


def _cell(cell: str | Callable[[dict], str], key: str, row: dict) -> str:
    if callable(cell):
        return cell(row)
    return "" if row[key] is None else cell.format(row[key])


def _text_line(cols: list[Col], cells: list[str]) -> str:
    return "".join(c.ljust(col.width) if col.left else c.rjust(col.width)
                   for col, c in zip(cols, cells))


def _text_header(cols: tuple[Col, ...]) -> str:
    """The header line of the text report's columns."""
    cols = [c for c in cols if c.text is not None]
    return _text_line(cols, [c.text for c in cols])


def _text_rows(cols: tuple[Col, ...], rows: list[dict]) -> list[str]:
    """``rows`` as the text report's columns, each cell padded to its column's width."""
    cols = [c for c in cols if c.text is not None]
    return [_text_line(cols, [_cell(c.cell, c.key, r) for c in cols]) for r in rows]


def _md_table(cols: tuple[Col, ...], rows: list[dict],
              order: tuple[str, ...] | None = None) -> list[str]:
    """``rows`` as a Markdown table; ``order``: the keys of its columns, where the table orders
    them unlike the text report."""
    if order is not None:
        by_key = {c.key: c for c in cols}
        cols = tuple(by_key[k] for k in order)
    cols = [c for c in cols if c.md is not None]
    return ["| " + " | ".join(c.md for c in cols) + " |",
            "|" + "".join("---|" if c.left else "---:|" for c in cols),
            *("| " + " | ".join(_cell(c.cell if c.md_cell is None else c.md_cell, c.key, r)
                                for c in cols) + " |" for r in rows)]


def _machine(m: dict) -> str:
    """The machine a result was measured on, as both reports name it."""
    return (f"{m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads, "
            f"torch {m['torch']}, device {m['device']}")


def _section(configs: dict, part: str) -> dict:
    """``part`` ("training", "evaluation", ...) of each configuration that has it."""
    return {n: r[part] for n, r in configs.items() if part in r}


_TRAINING = (
    Col("variant", text="variant", width=18, md="variant", left=True),
    Col("ms", "{:.1f}", "ms/step", 10, "ms / step"),
    Col("seq_steps_per_s", "{:,.0f}", "seq-steps/s", 13, "sequence-steps / s"),
    Col("gflops", "{:.1f}", "GFLOP/s", 9, "GFLOP/s"),
    Col("fraction_of_sgemm", "{:.0%}", "of mm", 7, "of matmul rate"),
    Col("speedup_vs_per_step", "{:.2f}x", "speed-up", 10, "speed-up vs per-step", "{:.2f}"),
    Col("kept_mib", "{:.0f}", md="kept for backward MiB"),
)


def _training_rows(t: dict) -> list[dict]:
    """A row per variant: its figures and the MiB it keeps for backward (None: not measured)."""
    mem = t.get("memory", {})
    rows = []
    for vname, v in t["variants"].items():
        kept = mem.get(vname, {}).get("saved_for_backward_bytes")
        rows.append({**v, "variant": vname, "kept_mib": None if kept is None else kept / 2**20})
    return rows


def _separate_over_is(e: dict) -> str:
    return f"{e['separate_over_is']:.2f}" if e["separate_measured"] else "n/a"


_EVALUATION = (
    Col("config", text="evaluation", width=13, md="config", left=True),
    Col("elbo_pass_ms", "{:.1f}", "ELBO pass ms", 13, "one ELBO pass ms"),
    Col("is_ms", "{:.1f}", "IS S=40 ms", 12, "IS ms", "{:.0f}"),
    Col("separate_40_ms", "{:.1f}", "40 passes ms", 14),
    Col("is_over_one_pass", "{:.1f}x", "IS/pass", 9, "IS / pass"),
    Col("separate_over_is", "{:.1f}x", "40 passes/IS", 14, "40 separate passes / IS",
        _separate_over_is),
    Col("is_repeat_over_one_pass", "{:.1f}x", "IS repeat/pass", 16, "IS over repeated x / pass"),
    Col("flop_ratio", "{:.1f}x", "FLOP ratio", 12, "FLOP ratio"),
    Col("samples_per_pass", md="samples per pass"),
)
_EVALUATION_MD_ORDER = ("config", "elbo_pass_ms", "is_ms", "is_over_one_pass", "flop_ratio",
                        "is_repeat_over_one_pass", "separate_over_is", "samples_per_pass")


def _evaluation_rows(configs: dict) -> list[dict]:
    return [{**e, "config": n} for n, e in _section(configs, "evaluation").items()]


_GENERATION = (
    Col("config", text="generation", width=13, md="config", left=True),
    Col("steps_b1", "{:,.0f}", "steps/s B=1", 13, "steps / s, batch 1"),
    Col("steps_b64", "{:,.0f}", "steps/s B=64", 14, "steps / s, batch 64"),
    Col("frames_b64", "{:,.0f}", "frames/s B=64", 15, "frames / s, batch 64"),
)


_GENERATION_PAIRED = (
    Col("config", text="generation", width=13, md="config", left=True),
    Col("batch", "{}", "batch", 6, "batch"),
    Col("fast_ms", "{:.2f}", "fast ms/step", 14, "fast ms / step"),
    Col("literal_ms", "{:.2f}", "literal ms/step", 17, "literal ms / step"),
    Col("speedup", "{:.2f}x", "speed-up", 10, "speed-up vs literal", "{:.2f}"),
    Col("paired", "{:.2f}x", "paired", 9, "paired", "{:.2f}"),
    Col("frames", "{:,.0f}", "frames/s", 12, "frames / s (fast)"),
)
"""The generation table of a result that times the fast sampler beside the literal one."""


def _paired_generation(configs: dict) -> bool:
    return any("literal" in g.get("batch_1", {})
               for g in _section(configs, "generation").values())


def _generation_rows(configs: dict) -> list[dict]:
    if _paired_generation(configs):
        return [{"config": n if b == 1 else "", "batch": b, "fast_ms": r["ms_per_step"],
                 "literal_ms": r["literal"]["ms_per_step"], "speedup": r["speedup_vs_literal"],
                 "paired": r["paired_speedup_vs_literal"], "frames": r["frames_per_s"]}
                for n, g in _section(configs, "generation").items()
                for b, r in ((1, g["batch_1"]), (64, g["batch_64"]))]
    return [{"config": n, "steps_b1": g["batch_1"]["steps_per_s"],
             "steps_b64": g["batch_64"]["steps_per_s"],
             "frames_b64": g["batch_64"]["frames_per_s"]}
            for n, g in _section(configs, "generation").items()]


def _generation_cols(configs: dict) -> tuple[Col, ...]:
    return _GENERATION_PAIRED if _paired_generation(configs) else _GENERATION


_PARTICLES = (
    Col("config", text="K particles", width=13, md="config", left=True),
    Col("step", text="step", width=10, left=True),
    Col("objective", md="objective", left=True),
    Col("particles", md="K"),
    Col("ms", "{:.1f}", "ms", 9, "ms / step"),
    Col("over_one_particle", "{:.2f}x", "/ ELBO step", 12, "/ ELBO step"),
    Col("over_k_one_particle_steps", "{:.2f}x", "/ K ELBO steps", 16, "/ K ELBO steps"),
    Col("over_iwae", "{:.2f}x", "/ IWAE", 9, "/ IWAE step, same K"),
    Col("over_iwae_amortised", "{:.2f}x", "/ IWAE+", 9,
        "/ IWAE step, with FIVO's ELBO pass on 1 update in 10"),
)
_SMC = (
    Col("config", md="config", left=True),
    Col("samples", md="S"),
    Col("is_ms", "{:.0f}", md="IS ms"),
    Col("smc_ms", "{:.0f}", md="SMC ms"),
    Col("smc_over_is", "{:.2f}x", md="SMC / IS"),
    Col("smc_steps_ms", "{:.0f}", md="SMC step by step ms"),
    Col("smc_steps_over_is", "{:.2f}x", md="step by step / IS"),
)


def _measured(cols: tuple[Col, ...], rows: list[dict],
              optional: tuple[str, ...]) -> tuple[Col, ...]:
    """``cols`` without those of ``optional`` that no row measured (a result recorded before
    they were: its report reads as it did)."""
    return tuple(c for c in cols if c.key not in optional
                 or any(r.get(c.key) is not None for r in rows))


def _particle_rows(n: str, p: dict) -> list[dict]:
    """The one-particle ELBO step, then each K-particle step, of configuration ``n``."""
    elbo = {"config": n, "step": "elbo", "objective": "elbo", "particles": 1,
            "ms": p["elbo_step_ms"], "over_one_particle": 1.0, "over_k_one_particle_steps": 1.0}
    # (over_iwae: absent from results recorded before the filter ran in the loop;
    # over_iwae_amortised: before FIVO's ELBO pass ran on logging updates only, and not IWAE's)
    blank = {"over_iwae": None, "over_iwae_amortised": None}
    return [{**elbo, **blank}] + [{**blank, **st, "config": n, "step": key}
                                  for key, st in p["particle_steps"].items()]


# -- text --------------------------------------------------------------------------------------


def _model_name(z: dict) -> str:
    """'SRNN, smoothing posterior, Res_q; ' for an SRNN row's sizes ('DMM, smoothing posterior; ',
    'STORN; '), '' for a VRNN's (and for a result written before the SRNN rows)."""
    family = z.get("family", "vrnn")
    if family == "vrnn":
        return ""
    if family == "storn":  # its posterior is filtering by definition
        return "STORN; "
    res_q = ", Res_q" if z.get("res_q") else ""
    return f"{family.upper()}, {z['posterior']} posterior{res_q}; "


def _over_vrnn(z: dict, ref: dict) -> tuple[str, float, float]:
    """The family's name and its ``ours`` time over the VRNN's (the ratio of medians, and the
    median of the per-round ratios), read from a result of any version."""
    paired = ref.get("paired_over_vrnn", ref.get("paired_srnn_over_vrnn"))
    return z.get("family", "srnn").upper(), ref.get("over_vrnn", ref.get("srnn_over_vrnn")), paired


def _text_training(name: str, t: dict, w: int = 13) -> list[str]:
    """The rows of one configuration: each variant, the rate and bound, profile, agreement;
    ``w``: the width of the config column."""
    lines = [f"{name if i == 0 else '':<{w}}{row}"
             for i, row in enumerate(_text_rows(_TRAINING, _training_rows(t)))]
    b = t.get("bound")
    line = f"{'':<{w}}matmul rate {t['sgemm_gflops']:.1f} GFLOP/s ({t['sgemm_size']}^3 torch.mm)"
    if b is not None:
        line += (f"; B-row products {b['thin_gflops']:.1f} GFLOP/s; bound {b['best_ms']:.1f} "
                 f"ms = {b['best_fraction_of_sgemm']:.0%} of mm")
    lines.append(line)
    lines += _low_text(t, w)
    ref = t.get("vrnn_reference")
    if ref is not None:
        family, ratio, paired = _over_vrnn(t["sizes"], ref)
        lines.append(f"{'':<{w}}VRNN ours at these sizes, in the same rotation: "
                     f"{ref['ms']:.1f} ms; {family} ours / VRNN ours "
                     f"{ratio:.2f} (paired {paired:.2f})")
    comp = t.get("compile")
    if comp is not None:
        if "error" in comp:
            lines.append(f"{'':<{w}}torch.compile failed, per-step+compile not timed: "
                         f"{comp['error']}")
        else:
            lines.append(f"{'':<{w}}torch.compile: {comp['seconds']:.0f} s, "
                         f"{'fullgraph' if comp['fullgraph'] else 'NOT fullgraph'}, "
                         f"{comp['graphs']} graphs, {comp['graph_breaks']} graph breaks")
    for vname, pr in t.get("profile", {}).items():
        lines.append(f"{'':<{w}}profile {vname}: " + ", ".join(
            f"{k} {v:.0f} ms" for k, v in pr["categories_ms"].items()))
    ag = t["agreement"]["variants"]
    fp32 = {k: v for k, v in ag.items() if _precision(v) == "fp32"}
    lines.append(f"{'':<{w}}agreement with per-step: " + ", ".join(
        f"{k} loss {v['loss_rel_diff']:.1e} grad {v['grad_max_rel_diff']:.1e}"
        for k, v in fp32.items()))
    low = {k: v for k, v in ag.items() if _precision(v) != "fp32"}
    if low:
        lines.append(f"{'':<{w}}agreement of the bf16 variants with the fp32 per-step (loss "
                     f"rtol {t['agreement'].get('bf16_rtol', 0.0):.2g}): " + ", ".join(
                         f"{k} loss {v['loss_rel_diff']:.1e} grad {v['grad_max_rel_diff']:.1e}"
                         for k, v in low.items()))
    return lines


def _text_targets(configs: dict) -> list[str]:
    lines = ["", "targets:"]
    for name, r in configs.items():
        if "skipped" in r:
            continue
        for key, tg in r.get("training", {}).get("targets", {}).items():
            fmt = "{:.2f}x" if "speedup" in key else "{:.0%}"
            lines.append(f"  {name:<13}{key:<22}{fmt.format(tg['value']):>8} (target "
                         f"{fmt.format(tg['target'])}) {'met' if tg['met'] else 'MISSED'}")
        for b in (1, 64):
            g = r.get("generation", {}).get(f"batch_{b}", {})
            if "speedup_vs_literal" in g:
                lines.append(f"  {name:<13}{f'sample B={b} / literal':<22}"
                             f"{g['speedup_vs_literal']:>7.2f}x (target "
                             f"{r['generation']['target']:.2f}x) "
                             f"{'met' if g['met'] else 'MISSED'}")
        if "evaluation" in r:
            e = r["evaluation"]
            lines.append(f"  {name:<13}{'IS S=40 / ELBO pass':<22}{e['is_over_one_pass']:>7.1f}x"
                         f" (target <= {e['target']:.0f}x) {'met' if e['met'] else 'MISSED'};"
                         f" FLOP ratio {e['flop_ratio']:.1f}x")
    return lines


def _text_evaluation_and_generation(configs: dict) -> list[str]:
    lines = []
    for cols, rows in ((_EVALUATION, _evaluation_rows(configs)),
                       (_generation_cols(configs), _generation_rows(configs))):
        if rows:
            lines += ["", _text_header(cols), *_text_rows(cols, rows)]
    return lines


def _text_particles(configs: dict) -> list[str]:
    parts = _section(configs, "particles")
    if not parts:
        return []
    cols = _measured(_PARTICLES, [r for n, p in parts.items() for r in _particle_rows(n, p)],
                     ("over_iwae", "over_iwae_amortised"))
    lines = ["", _text_header(cols)]
    for n, p in parts.items():
        lines += _text_rows(cols, _particle_rows(n, p))
        e = p["evaluation"]
        steps = (f"; step by step {e['smc_steps_ms']:.0f} ms ({e['smc_steps_over_is']:.2f}x)"
                 if "smc_steps_ms" in e else "")
        lines.append(f"{n:<13}SMC S={e['samples']} {e['smc_ms']:.0f} ms, IS S={e['samples']} "
                     f"{e['is_ms']:.0f} ms: SMC / IS {e['smc_over_is']:.2f}x{steps}")
    return lines


def _text_memory_and_scaling(result: dict) -> list[str]:
    lines = []
    mems = {n: t["memory"] for n, t in _section(result["configs"], "training").items()}
    if mems:
        lines += ["", "memory kept for backward (MiB): " + "; ".join(
            f"{n}: " + ", ".join(f"{k} {v['saved_for_backward_bytes'] / 2**20:.1f}"
                                 for k, v in mm.items()) for n, mm in mems.items())]
        if "peak_rss_mib" in result:  # absent from a run cut short
            lines.append(f"process peak RSS: {result['peak_rss_mib']:.0f} MiB")
    if "scaling" in result:
        s = result["scaling"]
        lines += ["", f"scaling ({s['model']['name']} sizes), ms per time step by T (B="
                      f"{s['by_steps'][0]['batch']}): " + ", ".join(
                          f"T={r['steps']}: {r['ms_per_time_step']:.2f}" for r in s["by_steps"])]
        lines.append(f"  longest / cheapest per step: {s['longest_over_cheapest_per_step']:.2f} "
                     f"({'flat' if s['flat_in_steps'] else 'NOT flat'})")
        lines.append(f"  us per sequence step by B (T={s['by_batch'][0]['steps']}): " + ", ".join(
            f"B={r['batch']}: {r['us_per_sequence_step']:.1f}" for r in s["by_batch"]))
    return lines


def format_report(result: dict) -> str:
    """The text report ``vrnn benchmark`` prints: training table, targets, evaluation,
    generation, memory and scaling."""
    m = result["machine"]
    w = max([13] + [len(n) + 1 for n in result["configs"]])
    lines = [f"machine: {_machine(m)}", "", f"{'config':<{w}}{_text_header(_TRAINING)}"]
    for name, r in result["configs"].items():
        if "skipped" in r:
            lines.append(f"{name:<{w}}skipped: {r['skipped']}")
        else:
            lines += _text_training(name, r["training"], w) if "training" in r else []
    lines += _text_targets(result["configs"])
    lines += _text_evaluation_and_generation(result["configs"])
    lines += _text_particles(result["configs"])
    lines += _text_memory_and_scaling(result)
    return "\n".join(lines)


# -- Markdown ----------------------------------------------------------------------------------


def _md_training(name: str, t: dict) -> list[str]:
    """One configuration's table, its bound and (when profiled) its profile table."""
    z = t["sizes"]
    b = t.get("bound")
    out = [f"**{name}** ({_model_name(z)}x {z['x_dim']}, hidden {z['hidden']}, z {z['z_dim']}, T "
           f"{z['steps']}, batch {z['batch']}, {z['output']} output; "
           f"{t['flops_per_step']['total'] / 1e9:.1f} GFLOP per step; matmul rate "
           f"{t['sgemm_gflops']:.1f} GFLOP/s):", "",
           *_md_table(_TRAINING, _training_rows(t))]
    if b is not None:
        out += ["", f"Bound: the products with B rows inside the loop run at "
                f"{b['thin_gflops']:.1f} GFLOP/s ({b['thin_fraction_of_sgemm']:.0%} of the "
                f"matmul rate) and carry {b['loop_flop_share']:.0%} of the FLOPs; at those "
                f"rates and with nothing else a step takes {b['best_ms']:.1f} ms "
                f"({b['best_fraction_of_sgemm']:.0%} of the matmul rate, "
                f"{t['variants']['per-step']['ms'] / b['best_ms']:.2f}x the per-step time)."]
    out += _low_markdown(t)
    ref = t.get("vrnn_reference")
    if ref is not None:
        family, ratio, paired = _over_vrnn(z, ref)
        out += ["", f"The VRNN's `ours` at these sizes "
                f"({ref['flops_per_step']['total'] / 1e9:.1f} GFLOP per step), timed in the "
                f"same rotation: {ref['ms']:.1f} ms / step, {ref['gflops']:.1f} GFLOP/s, "
                f"{ref['saved_for_backward_bytes'] / 2**20:.0f} MiB kept for backward. "
                f"{family} `ours` / VRNN `ours`: {ratio:.2f} "
                f"(median of the per-round ratios {paired:.2f})."]
    prof = t.get("profile", {})
    if prof:
        cats = list(next(iter(prof.values()))["categories_ms"])
        cols = (Col("variant", md="profile, ms", left=True),
                *(Col(c, "{:.0f}", md=c) for c in cats))
        out += ["", *_md_table(cols, [{**pr["categories_ms"], "variant": vname}
                                      for vname, pr in prof.items()])]
    return out + [""]


def _md_evaluation_and_generation(configs: dict) -> list[str]:
    out = []
    rows = _evaluation_rows(configs)
    if rows:
        out += ["Importance-sampled evaluation, S = 40, no gradients:", "",
                *_md_table(_EVALUATION, rows, _EVALUATION_MD_ORDER), ""]
    rows = _generation_rows(configs)
    if rows and _paired_generation(configs):
        g = next(iter(_section(configs, "generation").values()))
        out += [f"Generation (ancestral sampling, {g['steps']} steps from the prior): the fast "
                f"sampler (`model.sample`, the default) against the literal per-step sampler "
                f"(`model.sample(..., literal=True)`: the step protocol's distribution objects), "
                f"timed in one rotation; the speed-up is the ratio of medians, paired the median "
                f"of the per-round ratios. Both draw the same sequences from one seed (checked "
                f"first, in float64):", "", *_md_table(_GENERATION_PAIRED, rows), ""]
    elif rows:
        out += ["Generation (ancestral sampling):", "", *_md_table(_GENERATION, rows), ""]
    return out


def _md_particles(configs: dict) -> list[str]:
    parts = _section(configs, "particles")
    if not parts:
        return []
    rows = [row for n, p in parts.items() for row in _particle_rows(n, p)]
    smc = [{"smc_steps_ms": None, "smc_steps_over_is": None, **p["evaluation"], "config": n}
           for n, p in parts.items()]
    return ["Training with K particles (`--objective iwae|fivo --particles K`), one update "
            "(forward, backward, Adam) against the one-particle ELBO update, and against K of "
            "them (the median of each round's ratio):", "",
            *_md_table(_measured(_PARTICLES, rows, ("over_iwae", "over_iwae_amortised")),
                       rows),
            "", "Particle-filter (SMC) estimate of log p(x) against importance sampling, the "
            "same S, no gradients:", "",
            *_md_table(_measured(_SMC, smc, ("smc_steps_ms", "smc_steps_over_is")), smc), ""]


def _md_scaling(s: dict) -> list[str]:
    by_steps = (Col("steps", md=f"T (batch {s['by_steps'][0]['batch']})"),
                Col("ms", "{:.0f}", md="ms / step"),
                Col("ms_per_time_step", "{:.2f}", md="ms per time step"))
    by_batch = (Col("batch", md=f"batch (T {s['by_batch'][0]['steps']})"),
                Col("ms", "{:.1f}", md="ms / step"),
                Col("us_per_sequence_step", "{:.1f}", md="us per sequence-step"))
    out = [f"Scaling, {s['model']['name']} sizes, `ours`, training step:", "",
           *_md_table(by_steps, s["by_steps"]), "", *_md_table(by_batch, s["by_batch"])]
    out += ["", f"Longest T over the cheapest per time step: "
            f"{s['longest_over_cheapest_per_step']:.2f} "
            f"({'flat in T' if s['flat_in_steps'] else 'NOT flat in T'})."]
    return out


def markdown_report(result: dict) -> str:
    """The tables of ``docs/PERFORMANCE.md`` from a result (``--json``): one per configuration,
    then evaluation, generation, memory and scaling."""
    m = result["machine"]
    kept = "; freed memory kept mapped (vrnn.host.allocator)"
    out = [f"Machine: {_machine(m)}; load average at the start "
           f"{m['load_average'][0] if m.get('load_average') else 'n/a'}"
           f"{kept if m.get('keeps_freed_memory') else ''}"
           ".", ""]
    for name, r in result["configs"].items():
        if "skipped" in r:
            out += [f"**{name}**: skipped ({r['skipped']}).", ""]
        else:
            out += _md_training(name, r["training"]) if "training" in r else []
    out += _md_evaluation_and_generation(result["configs"])
    out += _md_particles(result["configs"])
    if "peak_rss_mib" in result:
        out += [f"Peak resident memory of the benchmark process: {result['peak_rss_mib']:.0f} MiB.",
                ""]
    if "scaling" in result:
        out += _md_scaling(result["scaling"])
    return "\n".join(out).rstrip() + "\n"
