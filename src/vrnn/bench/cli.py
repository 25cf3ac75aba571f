"""``vrnn benchmark`` / ``python -m vrnn.bench``: flags, the run over configurations, JSON."""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
from pathlib import Path

import torch

from vrnn.bench.configs import CONFIGS, SCALING_CONFIG, BenchmarkError, quick_config
from vrnn.bench.machine import (
    available_memory_bytes,
    estimated_bytes,
    load_average,
    machine_info,
)
from vrnn.bench.particles import bench_particles
from vrnn.bench.report import format_report, markdown_report
from vrnn.bench.suites import bench_evaluation, bench_generation, bench_scaling, bench_training
from vrnn.kernels import precision as precision_mod

DESCRIPTION = ("Speed benchmark: the library's VRNN training step against a straightforward "
               "per-step VRNN,\nand the SRNN's, DMM's and STORN's against their per-step "
               "readings (configs srnn-*,\ndmm-*, storn-*: the training step only, beside the "
               "VRNN's of the same sizes); with\n--precision bf16 also each of their bfloat16 "
               "copies (ours bf16, per-step bf16), against\nthe float32 ones and the bf16 "
               "matmul rate.")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from e
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vrnn benchmark", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma list of {', '.join(CONFIGS)} (default all; 'none': only the "
                        "scaling run; srnn-*: the SRNN, smoothing posterior with Res_q, at "
                        "those sizes: training step only; dmm-*, storn-*: the DMM, smoothing "
                        "posterior, and STORN, likewise)")
    p.add_argument("--quick", action="store_true",
                   help="microscopic sizes, few repeats: checks that it runs; numbers mean nothing")
    p.add_argument("--json", default=None, metavar="PATH", help="write every figure here")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="also write the tables as Markdown (docs/PERFORMANCE.md holds them)")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="time nothing: print the report (and --markdown) of an earlier --json")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed training steps per variant (default 10; --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the per-step VRNN under torch.compile (default: on, "
                        "off with --quick; the SRNN rows have no compiled variant)")
    p.add_argument("--precision", default=None, metavar="LIST",
                   help="comma list of fp32, bf16: the precisions of the training-step variants "
                        "(default fp32,bf16 where the device multiplies bfloat16 natively, "
                        "else fp32; fp32 is always timed, the reference). bf16 adds 'per-step "
                        "bf16' and 'ours bf16' (their forward under "
                        "vrnn.kernels.precision.autocast: "
                        "products in bfloat16, float32 weights), timed in the same rotation, "
                        "with a bf16 torch.mm for their matmul rate; an error on a device "
                        "without bfloat16 products")
    p.add_argument("--isolated", action=argparse.BooleanOptionalAction, default=True,
                   help="with a precision other than fp32, also time 'ours' against 'ours P' in "
                        "a fresh process of their own, as a training process runs one model "
                        "(default: on; the main rotation's figures are unchanged)")
    p.add_argument("--sgemm-size", type=int, default=None,
                   help="n of the n x n x n torch.mm that measures the matmul rate (default 2048)")
    p.add_argument("--profile", action="store_true",
                   help="also record where one step of each variant spends its time")
    p.add_argument("--no-evaluation", dest="evaluation", action="store_false",
                   help="skip the IS-evaluation timing (of the VRNN configs; the SRNN rows "
                        "time the training step only)")
    p.add_argument("--eval-separate", action=argparse.BooleanOptionalAction, default=None,
                   help="time 40 separate ELBO passes instead of 40 x one pass (default: on "
                        "except for paper-speech)")
    p.add_argument("--particles", type=_int_list, default=None,
                   help="K of the timed K-particle training steps (iwae, fivo) against the "
                        "one-particle ELBO step, and of nothing else (default 4,16)")
    p.add_argument("--particle-configs", default="handwriting,speech",
                   help="the VRNN configs (of --configs) that time the K-particle steps and SMC "
                        "against IS at S = 40 (default handwriting,speech; 'none': no such "
                        "timing)")
    p.add_argument("--no-training", dest="training", action="store_false",
                   help="skip the training-step comparison with the per-step baseline (e.g. to "
                        "time only the K-particle steps)")
    p.add_argument("--no-generation", dest="generation", action="store_false",
                   help="skip the generation timing: model.sample's fast sampler against the "
                        "literal per-step one (sample(literal=True)), 100 steps at batch 1 and "
                        "64, side by side (of the VRNN configs)")
    p.add_argument("--no-scaling", dest="scaling", action="store_false")
    p.add_argument("--scale-steps", type=_int_list, default=None,
                   help="T values of the scaling run (default 50,100,200,500,1000,2000)")
    p.add_argument("--scale-batch", type=_int_list, default=None,
                   help="B values of the scaling run (default 1,4,16,64,256)")
    return p


def resolve(args: argparse.Namespace) -> None:
    """Fill the defaults that depend on ``--quick``, and the settings no flag sets."""
    q = args.quick
    defaults = {"repeats": 3 if q else 10, "warmup": 1 if q else 2, "compile": not q,
                "particles": [2, 3] if q else [4, 16],
                "sgemm_size": 256 if q else 2048, "scale_steps": [5, 10, 20] if q else
                [50, 100, 200, 500, 1000, 2000], "scale_batch": [1, 4] if q else
                [1, 4, 16, 64, 256]}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.eval_repeats = 1 if q else 3
    args.eval_warmup = 1
    args.gen_steps = 5 if q else 100
    args.particle_repeats = args.repeats
    args.scale_repeats = 1 if q else 3
    args.scale_fixed_steps = 10 if q else 100
    if args.repeats < 1 or args.warmup < 0:
        raise ValueError("--repeats must be >= 1 and --warmup >= 0")
    if args.precision is not None:
        parse_precisions(args.precision)  # a bad value fails before anything is timed


def parse_precisions(text: str) -> list[str]:
    """``--precision``'s comma list: fp32 first (always timed: the reference), then the rest in
    the order given, each once; ValueError naming the flag on anything else."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    wrong = [v for v in values if v not in precision_mod.PRECISIONS]
    if not values or wrong:
        raise ValueError(f"--precision: expected a comma list of "
                         f"{', '.join(precision_mod.PRECISIONS)}, got {text!r}")
    return ["fp32", *dict.fromkeys(v for v in values if v != "fp32")]


def resolve_precisions(text: str | None, device: torch.device) -> list[str]:
    """The precisions to time on ``device``: ``--precision`` (ValueError naming the flag when
    the device lacks native bfloat16 products, :func:`vrnn.kernels.precision.check_supported`), or
    by default fp32 and bf16 where :func:`vrnn.kernels.precision.bf16_supported`, else fp32
    alone."""
    if text is None:
        return ["fp32", "bf16"] if precision_mod.bf16_supported(device) else ["fp32"]
    precisions = parse_precisions(text)
    for p in precisions:
        precision_mod.check_supported(p, device, "vrnn benchmark")
    return precisions


def _evaluation_args(name: str, args: argparse.Namespace) -> argparse.Namespace:
    """paper-speech: one IS pass holds minutes of work; time it once, without warm-up."""
    heavy = name == "paper-speech" and not args.quick
    sep = args.eval_separate
    return argparse.Namespace(**{
        **vars(args), "eval_separate": (not heavy) if sep is None else sep,
        "eval_repeats": 1 if heavy else args.eval_repeats,
        "eval_warmup": 0 if heavy else args.eval_warmup})


def run(args: argparse.Namespace) -> dict:
    """Every configuration of ``--configs`` (one that would not fit in memory is skipped), then
    the scaling run; with ``--json`` the result is written after each configuration."""
    device = torch.device(args.device)
    args.precisions = resolve_precisions(getattr(args, "precision", None), device)
    low = len(args.precisions) - 1  # each precision but fp32: two more variants
    names = [n.strip() for n in args.configs.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"--configs: unknown {', '.join(unknown)}; choose from "
                         f"{', '.join(CONFIGS)}")
    particle_configs = {n.strip() for n in args.particle_configs.split(",")} - {"", "none"}
    wrong = sorted(n for n in particle_configs if n not in CONFIGS
                   or CONFIGS[n].family != "vrnn")
    if wrong:
        raise ValueError(f"--particle-configs: {', '.join(wrong)} is not a VRNN config; choose "
                         f"from {', '.join(n for n, c in CONFIGS.items() if c.family == 'vrnn')}")
    result: dict = {"command": "vrnn benchmark " + " ".join(args.argv), "quick": args.quick,
                    "machine": machine_info(device), "repeats": args.repeats,
                    "warmup": args.warmup, "precisions": args.precisions, "configs": {}}
    for name in names:
        cfg = quick_config(CONFIGS[name]) if args.quick else CONFIGS[name]
        srnn = cfg.family != "vrnn"  # SRNN, DMM, STORN: training only, beside the VRNN
        n_var = 4 if args.compile and not srnn else 3  # SRNN: 2 variants and the VRNN's
        n_var += 2 * low  # per-step P and ours P for each precision P but fp32
        need, have = estimated_bytes(cfg, n_var), available_memory_bytes(device)
        if have is not None and need > have:
            result["configs"][name] = {"skipped": f"needs about {need / 2**30:.1f} GiB, "
                                                  f"{have / 2**30:.1f} GiB available"}
            print(f"[{name}] skipped: {result['configs'][name]['skipped']}", flush=True)
            continue
        what = (f"{2 + 2 * low} variants and the VRNN's ours" if srnn
                else f"{n_var} variants")
        r = {"load_average_before": load_average()}
        if args.training:
            print(f"[{name}] training step: {what} x {args.repeats} rounds ...", flush=True)
            r["training"] = bench_training(cfg, args, device)
        gc.collect()
        # the evaluation and generation timings are the VRNN's: an SRNN row has neither
        if args.evaluation and not srnn:
            print(f"[{name}] IS evaluation ...", flush=True)
            r["evaluation"] = bench_evaluation(cfg, _evaluation_args(name, args), device)
        if name in particle_configs:
            print(f"[{name}] K-particle steps (K = {', '.join(map(str, args.particles))}) and "
                  f"SMC ...", flush=True)
            r["particles"] = bench_particles(cfg, _evaluation_args(name, args), device)
        if args.generation and not srnn:
            print(f"[{name}] generation ...", flush=True)
            r["generation"] = bench_generation(cfg, args, device)
        r["load_average_after"] = load_average()
        result["configs"][name] = r
        gc.collect()
        if args.json:  # after every configuration, so that a long run keeps what it measured
            write_json(result, args.json)
    if args.scaling:
        base = CONFIGS[SCALING_CONFIG]
        print("[scaling] ...", flush=True)
        result["scaling"] = bench_scaling(quick_config(base) if args.quick else base, args,
                                          device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["peak_rss_mib"] = rss / 1024 if sys.platform != "darwin" else rss / 2**20
    return result


def main(argv: list[str] | None = None) -> int:
    """``vrnn benchmark``: returns 0, or 1 when the variants disagree (nothing is timed then),
    2 on a bad flag."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    threads = torch.get_num_threads()
    try:
        resolve(args)
        if args.threads is None and args.quick:
            args.threads = 1  # a smoke run: one thread is steadier on a shared machine
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        if args.from_json:
            result = read_json(args.from_json)
        elif args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available here")
        else:
            result = run(args)
    except ValueError as e:
        print(f"vrnn benchmark: error: {e}", file=sys.stderr)
        return 2
    except BenchmarkError as e:
        print(f"vrnn benchmark: the variants disagree, nothing timed: {e}", file=sys.stderr)
        return 1
    finally:
        torch.set_num_threads(threads)
    print()
    print(format_report(result))
    if args.json and not args.from_json:
        print(f"\nwrote {write_json(result, args.json)}")
    if args.markdown:
        out = Path(args.markdown)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown_report(result))
        print(f"wrote {out}")
    return 0


def read_json(path: str) -> dict:
    """An earlier ``--json`` result; ValueError naming the file when it is not one."""
    p = Path(path)
    try:
        result = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--from-json {path}: cannot read a benchmark result ({e})") from e
    if not isinstance(result, dict) or "machine" not in result or "configs" not in result:
        raise ValueError(f"--from-json {path}: not a `vrnn benchmark --json` result")
    return result


def write_json(result: dict, path: str) -> Path:
    """``result`` as indented JSON at ``path``, written beside it and then moved into place, so
    that a run killed mid-write leaves the previous configuration's file whole."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    return out
