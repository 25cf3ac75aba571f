"""The benchmark's result (the ``--json`` dict) as a text report and as the Markdown tables of
``docs/PERFORMANCE.md``. Both read the JSON alone: an earlier run renders with ``--from-json``.

A result with lower-precision variants (``--precision bf16``: ``per-step bf16``, ``ours bf16``)
gets their rows in the same tables (their "of mm" is of the bf16 matmul rate, their speed-up
against the float32 per-step), and a line on the bf16 rate, ``ours bf16`` over ``ours`` and the
bf16 bound; a result without them renders exactly as before they existed."""

from __future__ import annotations

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


def _low_text(t: dict, w: int) -> list[str]:
    """For each lower precision in ``t``: its matmul rate, ``ours P`` over ``ours``, its bound."""
    lines = []
    for p in LOW_PRECISIONS:
        rate = t.get(f"sgemm_{p}_gflops")
        if rate is None:
            continue
        line = (f"{'':<{w}}{p}: matmul rate {rate:.1f} GFLOP/s ({t['sgemm_size']}^3 {p} "
                f"torch.mm; the {p} rows' 'of mm' is of it)")
        ours = t["variants"].get(f"ours {p}")
        if ours is not None:
            line += (f"; speed-up of ours {p} over ours {ours['speedup_vs_fp32']:.2f}x (paired "
                     f"{ours['paired_speedup_vs_fp32']:.2f}x)")
        line += _isolated_text(t.get("isolated", {}).get(p), p, "; ")
        b = t.get(f"bound_{p}")
        if b is not None:
            line += (f"; B-row products {b['thin_gflops']:.1f} GFLOP/s; bound "
                     f"{b['best_ms']:.1f} ms = {b['best_fraction_of_sgemm']:.0%} of {p} mm")
        lines.append(line)
    return lines


def _low_markdown(t: dict) -> list[str]:
    """The Markdown of :func:`_low_text`: one paragraph per lower precision present."""
    out = []
    for p in LOW_PRECISIONS:
        rate = t.get(f"sgemm_{p}_gflops")
        if rate is None:
            continue
        text = (f"{p} (`--precision {p}`): the {p} rows run their products in {p} on float32 "
                f"weights; their share of the matmul rate is of the {p} rate, "
                f"{rate:.1f} GFLOP/s ({t['sgemm_size']}^3 {p} `torch.mm`, same rotation), "
                f"their speed-up against the float32 per-step.")
        ours = t["variants"].get(f"ours {p}")
        if ours is not None:
            text += (f" Speed-up of `ours {p}` over `ours`: {ours['speedup_vs_fp32']:.2f}x "
                     f"(median of the per-round ratios {ours['paired_speedup_vs_fp32']:.2f}x).")
        per_step = t["variants"].get(f"per-step {p}")
        if per_step is not None:
            text += (f" Of `per-step {p}` over `per-step`: {per_step['speedup_vs_fp32']:.2f}x "
                     f"(paired {per_step['paired_speedup_vs_fp32']:.2f}x).")
        text += _isolated_text(t.get("isolated", {}).get(p), p, " ", markdown=True)
        b = t.get(f"bound_{p}")
        if b is not None:
            text += (f" Bound in {p}: the B-row products run at {b['thin_gflops']:.1f} GFLOP/s "
                     f"({b['thin_fraction_of_sgemm']:.0%} of the {p} rate); a step takes at "
                     f"least {b['best_ms']:.1f} ms ({b['best_fraction_of_sgemm']:.0%} of the "
                     f"{p} rate).")
        out += ["", text]
    return out

# -- text --------------------------------------------------------------------------------------


def _model_name(z: dict) -> str:
    """'SRNN, smoothing posterior, Res_q; ' for an SRNN row's sizes, '' for a VRNN's (and for a
    result written before the SRNN rows)."""
    if z.get("family", "vrnn") != "srnn":
        return ""
    return f"SRNN, {z['posterior']} posterior{', Res_q' if z['res_q'] else ''}; "


def _text_training(name: str, t: dict, w: int = 13) -> list[str]:
    """The rows of one configuration: each variant, the rate and bound, profile, agreement;
    ``w``: the width of the config column."""
    lines = []
    for i, (vname, v) in enumerate(t["variants"].items()):
        lines.append(f"{name if i == 0 else '':<{w}}{vname:<18}{v['ms']:>10.1f}"
                     f"{v['seq_steps_per_s']:>13,.0f}{v['gflops']:>9.1f}"
                     f"{v['fraction_of_sgemm']:>7.0%}{v['speedup_vs_per_step']:>9.2f}x")
    b = t.get("bound")
    line = f"{'':<{w}}matmul rate {t['sgemm_gflops']:.1f} GFLOP/s ({t['sgemm_size']}^3 torch.mm)"
    if b is not None:
        line += (f"; B-row products {b['thin_gflops']:.1f} GFLOP/s; bound {b['best_ms']:.1f} "
                 f"ms = {b['best_fraction_of_sgemm']:.0%} of mm")
    lines.append(line)
    lines += _low_text(t, w)
    ref = t.get("vrnn_reference")
    if ref is not None:
        lines.append(f"{'':<{w}}VRNN ours at these sizes, in the same rotation: "
                     f"{ref['ms']:.1f} ms; SRNN ours / VRNN ours "
                     f"{ref['srnn_over_vrnn']:.2f} (paired {ref['paired_srnn_over_vrnn']:.2f})")
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
        if "evaluation" in r:
            e = r["evaluation"]
            lines.append(f"  {name:<13}{'IS S=40 / ELBO pass':<22}{e['is_over_one_pass']:>7.1f}x"
                         f" (target <= {e['target']:.0f}x) {'met' if e['met'] else 'MISSED'};"
                         f" FLOP ratio {e['flop_ratio']:.1f}x")
    return lines


def _text_evaluation_and_generation(configs: dict) -> list[str]:
    lines = []
    evals = {n: r["evaluation"] for n, r in configs.items() if "evaluation" in r}
    if evals:
        lines += ["", f"{'evaluation':<13}{'ELBO pass ms':>13}{'IS S=40 ms':>12}"
                      f"{'40 passes ms':>14}{'IS/pass':>9}{'40 passes/IS':>14}"
                      f"{'IS repeat/pass':>16}{'FLOP ratio':>12}"]
        for n, e in evals.items():
            lines.append(f"{n:<13}{e['elbo_pass_ms']:>13.1f}{e['is_ms']:>12.1f}"
                         f"{e['separate_40_ms']:>14.1f}{e['is_over_one_pass']:>8.1f}x"
                         f"{e['separate_over_is']:>13.1f}x"
                         f"{e['is_repeat_over_one_pass']:>15.1f}x{e['flop_ratio']:>11.1f}x")
    gens = {n: r["generation"] for n, r in configs.items() if "generation" in r}
    if gens:
        lines += ["", f"{'generation':<13}{'steps/s B=1':>13}{'steps/s B=64':>14}"
                      f"{'frames/s B=64':>15}"]
        for n, g in gens.items():
            lines.append(f"{n:<13}{g['batch_1']['steps_per_s']:>13,.0f}"
                         f"{g['batch_64']['steps_per_s']:>14,.0f}"
                         f"{g['batch_64']['frames_per_s']:>15,.0f}")
    return lines


def _text_particles(configs: dict) -> list[str]:
    parts = {n: r["particles"] for n, r in configs.items() if "particles" in r}
    if not parts:
        return []
    lines = ["", f"{'K particles':<13}{'step':<10}{'ms':>9}{'/ ELBO step':>12}"
                 f"{'/ K ELBO steps':>16}"]
    for n, p in parts.items():
        lines.append(f"{n:<13}{'elbo':<10}{p['elbo_step_ms']:>9.1f}{1.0:>11.2f}x"
                     f"{1.0:>15.2f}x")
        for key, st in p["particle_steps"].items():
            lines.append(f"{n:<13}{key:<10}{st['ms']:>9.1f}{st['over_one_particle']:>11.2f}x"
                         f"{st['over_k_one_particle_steps']:>15.2f}x")
        e = p["evaluation"]
        lines.append(f"{n:<13}SMC S={e['samples']} {e['smc_ms']:.0f} ms, IS S={e['samples']} "
                     f"{e['is_ms']:.0f} ms: SMC / IS {e['smc_over_is']:.2f}x")
    return lines


def _text_memory_and_scaling(result: dict) -> list[str]:
    lines = []
    mems = {n: r["training"]["memory"] for n, r in result["configs"].items() if "training" in r}
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
    lines = [f"machine: {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch "
             f"threads, torch {m['torch']}, device {m['device']}", "",
             f"{'config':<{w}}{'variant':<18}{'ms/step':>10}{'seq-steps/s':>13}"
             f"{'GFLOP/s':>9}{'of mm':>7}{'speed-up':>10}"]
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
           "| variant | ms / step | sequence-steps / s | GFLOP/s | of matmul rate "
           "| speed-up vs per-step | kept for backward MiB |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    mem = t.get("memory", {})
    for vname, v in t["variants"].items():
        kept = mem.get(vname, {}).get("saved_for_backward_bytes")
        out.append(f"| {vname} | {v['ms']:.1f} | {v['seq_steps_per_s']:,.0f} | "
                   f"{v['gflops']:.1f} | {v['fraction_of_sgemm']:.0%} | "
                   f"{v['speedup_vs_per_step']:.2f} | "
                   f"{'' if kept is None else f'{kept / 2**20:.0f}'} |")
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
        out += ["", f"The VRNN's `ours` at these sizes "
                f"({ref['flops_per_step']['total'] / 1e9:.1f} GFLOP per step), timed in the "
                f"same rotation: {ref['ms']:.1f} ms / step, {ref['gflops']:.1f} GFLOP/s, "
                f"{ref['saved_for_backward_bytes'] / 2**20:.0f} MiB kept for backward. "
                f"SRNN `ours` / VRNN `ours`: {ref['srnn_over_vrnn']:.2f} "
                f"(median of the per-round ratios {ref['paired_srnn_over_vrnn']:.2f})."]
    prof = t.get("profile", {})
    if prof:
        cats = list(next(iter(prof.values()))["categories_ms"])
        out += ["", "| profile, ms | " + " | ".join(cats) + " |",
                "|---|" + "---:|" * len(cats)]
        for vname, pr in prof.items():
            out.append(f"| {vname} | " + " | ".join(
                f"{pr['categories_ms'][c]:.0f}" for c in cats) + " |")
    return out + [""]


def _md_evaluation_and_generation(configs: dict) -> list[str]:
    out = []
    evals = {n: r["evaluation"] for n, r in configs.items() if "evaluation" in r}
    if evals:
        out += ["Importance-sampled evaluation, S = 40, no gradients:", "",
                "| config | one ELBO pass ms | IS ms | IS / pass | FLOP ratio | IS over repeated "
                "x / pass | 40 separate passes / IS | samples per pass |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for n, e in evals.items():
            sep = f"{e['separate_over_is']:.2f}" if e["separate_measured"] else "n/a"
            out.append(f"| {n} | {e['elbo_pass_ms']:.1f} | {e['is_ms']:.0f} | "
                       f"{e['is_over_one_pass']:.1f}x | {e['flop_ratio']:.1f}x | "
                       f"{e['is_repeat_over_one_pass']:.1f}x | {sep} | "
                       f"{e['samples_per_pass']} |")
        out.append("")
    gens = {n: r["generation"] for n, r in configs.items() if "generation" in r}
    if gens:
        out += ["Generation (ancestral sampling):", "",
                "| config | steps / s, batch 1 | steps / s, batch 64 | frames / s, batch 64 |",
                "|---|---:|---:|---:|"]
        for n, g in gens.items():
            out.append(f"| {n} | {g['batch_1']['steps_per_s']:,.0f} | "
                       f"{g['batch_64']['steps_per_s']:,.0f} | "
                       f"{g['batch_64']['frames_per_s']:,.0f} |")
        out.append("")
    return out


def _md_particles(configs: dict) -> list[str]:
    parts = {n: r["particles"] for n, r in configs.items() if "particles" in r}
    if not parts:
        return []
    out = ["Training with K particles (`--objective iwae|fivo --particles K`), one update "
           "(forward, backward, Adam) against the one-particle ELBO update, and against K of "
           "them (the median of each round's ratio):", "",
           "| config | objective | K | ms / step | / ELBO step | / K ELBO steps |",
           "|---|---|---:|---:|---:|---:|"]
    for n, p in parts.items():
        out.append(f"| {n} | elbo | 1 | {p['elbo_step_ms']:.1f} | 1.00x | 1.00x |")
        out += [f"| {n} | {st['objective']} | {st['particles']} | {st['ms']:.1f} | "
                f"{st['over_one_particle']:.2f}x | {st['over_k_one_particle_steps']:.2f}x |"
                for st in p["particle_steps"].values()]
    out += ["", "Particle-filter (SMC) estimate of log p(x) against importance sampling, the "
            "same S, no gradients:", "", "| config | S | IS ms | SMC ms | SMC / IS |",
            "|---|---:|---:|---:|---:|"]
    for n, p in parts.items():
        e = p["evaluation"]
        out.append(f"| {n} | {e['samples']} | {e['is_ms']:.0f} | {e['smc_ms']:.0f} | "
                   f"{e['smc_over_is']:.2f}x |")
    return out + [""]


def _md_scaling(s: dict) -> list[str]:
    out = [f"Scaling, {s['model']['name']} sizes, `ours`, training step:", "",
           f"| T (batch {s['by_steps'][0]['batch']}) | ms / step | ms per time step |",
           "|---:|---:|---:|"]
    out += [f"| {r['steps']} | {r['ms']:.0f} | {r['ms_per_time_step']:.2f} |"
            for r in s["by_steps"]]
    out += ["", f"| batch (T {s['by_batch'][0]['steps']}) | ms / step | "
            "us per sequence-step |", "|---:|---:|---:|"]
    out += [f"| {r['batch']} | {r['ms']:.1f} | {r['us_per_sequence_step']:.1f} |"
            for r in s["by_batch"]]
    out += ["", f"Longest T over the cheapest per time step: "
            f"{s['longest_over_cheapest_per_step']:.2f} "
            f"({'flat in T' if s['flat_in_steps'] else 'NOT flat in T'})."]
    return out


def markdown_report(result: dict) -> str:
    """The tables of ``docs/PERFORMANCE.md`` from a result (``--json``): one per configuration,
    then evaluation, generation, memory and scaling."""
    m = result["machine"]
    kept = "; freed memory kept mapped (vrnn.host.allocator)"
    out = [f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads, "
           f"torch {m['torch']}, device {m['device']}; load average at the start "
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
