"""Bench results on disk: ``<name>.json`` (everything) and ``<name>.md`` (the tables the README shows)."""

from __future__ import annotations

import json
from pathlib import Path

from loraforge.runs import atomic_write


def cpu_name() -> str:
    """The CPU's model name, for the header of every bench result (numbers from different kinds differ)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def write_results(out: str | Path, name: str, results: dict, markdown: str) -> tuple[Path, Path]:
    out = Path(out)
    paths = out / f"{name}.json", out / f"{name}.md"
    for path, text in zip(paths, (json.dumps(results, indent=2, ensure_ascii=False) + "\n", markdown)):
        atomic_write(path, text)
    return paths


def publish(out: str | Path, name: str, results: dict, markdown: str, lines: list[str] = ()) -> None:
    """A bench script's ending: print its detail lines, write ``<name>.json`` / ``<name>.md``, print where."""
    for line in lines:
        print(line)
    for path in write_results(out, name, results, markdown):
        print(path)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _mfu(share: float, fast_bf16: bool) -> str:
    """MFU against the bf16 peak, or '-' where bf16 is emulated (a near-zero peak makes it meaningless)."""
    return f"{100 * share:.1f}%" if fast_bf16 else "-"


def _ratio(row: dict, key: str) -> str:
    return f"{row[key]:.2f}x" if key in row else "-"


def _dev_loss(row: dict, steps: int) -> str:
    if row["dev_loss"] is None:
        return "-"
    return f"{row['dev_loss']:.4f}" + (f" (after {row['steps']} steps)" if row["steps"] != steps else "")


def train_markdown(results: dict) -> str:
    s, peaks = results["settings"], results["matmul_peak_flops"]
    machine = results["machine"]
    where = (f"{machine['gpu']} (host: {machine['cpu']})" if machine.get("gpu")
             else f"{machine['cpu']}, {machine['cores']} cores")
    weights = " with random weights (same architecture; the weights could not be copied there)" \
        if s.get("random_weights") else ""
    head = (f"LoRA r=16 alpha=32 all-linear, model `{s['model']}`{weights}, "
            f"{s['steps']} steps x batch {s['batch_size']} "
            f"(max length {s['max_length']}), throughput after {results['warmup_steps_skipped']} warm-up steps; "
            f"{where}, torch {machine['torch']}. Measured matmul peak: "
            f"fp32 {peaks['fp32'] / 1e12:.3f} TFLOP/s, bf16 {peaks['bf16'] / 1e12:.3f} TFLOP/s "
            f"(fast bf16: {results['fast_bf16']}).\n\n")
    gpu = any(r.get("peak_vram_mb") for r in results["jobs"])
    best, plain = results.get("trl_baseline"), results.get("trl_as_it_comes")
    vs = f" `{best}`" if best else " TRL"
    also = plain is not None and plain != best  # the as-it-comes ratios get their own columns
    header = ["job", "precision", "LM head at", "target tok/s", "total tok/s", "peak RSS (GB)"]
    header += ["peak VRAM (GB)", f"VRAM vs{vs}"] if gpu else []
    header += ["dev loss", "TFLOP/s", "MFU (bf16 peak)", "MFU (fp32 peak)", f"speed vs{vs}", f"RSS vs{vs}"]
    header += [f"speed vs `{plain}`", f"RSS vs `{plain}`"] if also else []
    header += ["job wall (s)"]
    rows = []
    for r in results["jobs"]:
        row = [r["job"], r["precision"], r["lm_head_positions"], f"{r['target_tokens_per_s']:.1f}",
               f"{r['tokens_per_s']:.1f}", f"{r['peak_rss_mb'] / 1024:.2f}"]
        row += [f"{r['peak_vram_mb'] / 1024:.2f}", _ratio(r, "vram_vs_trl")] if gpu else []
        row += [_dev_loss(r, s["steps"]), f"{r['flops_per_s'] / 1e12:.4f}",
                _mfu(r["mfu_bf16"], results["fast_bf16"]), f"{100 * r['mfu_fp32']:.1f}%", _ratio(r, "speedup_vs_trl"),
                _ratio(r, "rss_vs_trl")]
        row += [_ratio(r, "speedup_vs_trl_as_it_comes"), _ratio(r, "rss_vs_trl_as_it_comes")] if also else []
        row += [r.get("wall_seconds", "-")]
        rows.append(row)
    foot = ("\nA job's wall time includes loading the model, data, compiling and the warm-up steps; "
            "the rates exclude them.\n")
    if best:
        foot += (f"\nThe ratios are against the fastest TRL row of this run (`{best}`, TRL at its best here)"
                 + (f" and against the fastest TRL row as it comes (`{plain}`)" if also else "")
                 + "; a `-lean-loading` TRL row loads through loraforge's `load_model` and is never a baseline.\n")
    options = {r["job"]: r["trl_options"] for r in results["jobs"] if r.get("trl_options")}
    if options:
        foot += "TRL rows' SFTConfig options beyond the shared settings: " + "; ".join(
            f"`{job}` " + ", ".join(f"{k}={v}" for k, v in opts.items()) for job, opts in options.items()) + ".\n"
    packed = [r for r in results["jobs"] if r.get("train_examples", 0) > s["steps"] * s["batch_size"]]
    for r in packed:
        foot += (f"`{r['job']}` packs: it was given {r['train_examples']} examples, so that its {r['steps']} steps of "
                 f"packed rows need no second pass.\n")
    attention = {r["job"]: r["attention"] for r in results["jobs"] if r.get("attention")}
    for job, paths in attention.items():
        foot += f"`{job}` attention calls: " + ", ".join(f"{k} {v}" for k, v in sorted(paths.items())) + ".\n"
    if results.get("failed"):
        reasons = results.get("failures", {})
        foot += "Failed jobs: " + "; ".join(f"`{job}` ({reasons[job]})" if reasons.get(job) else f"`{job}`"
                                            for job in results["failed"]) + ".\n"
    if results.get("trl_bf16_steps") == 0:
        foot += "TRL with bf16 was not run (`--trl-bf16-steps 0`).\n"
    return head + table(header, rows) + foot


def generate_markdown(results: dict) -> str:
    s = results["settings"]
    head = (f"Greedy generation, model `{s['model']}`, {s['prompts']} prompts, max {s['max_new_tokens']} new tokens; "
            f"tokens = new tokens up to the first stop token.\n\n")
    rows = [[r["method"], r["batch_size"], "-" if r.get("tie_margin") is None else r["tie_margin"],
             f"{r['tokens_per_s']:.1f}", f"{r['seconds']:.1f}", r["tokens"], r.get("redecoded", 0),
             r.get("differ_from_batch1", 0)] for r in results["runs"]]
    foot = (f"\nSpeed-up: {results['speedup']:.2f}x; greedy outputs identical to batch 1 for "
            f"{results['prompts'] - results['mismatches']}/{results['prompts']} prompts "
            f"({results['mismatches']} differ).\n")
    if results.get("gap_noise"):
        n = results["gap_noise"]
        foot += (f"Gap noise (how far batching moved the top-1 vs top-2 logit gap, over {n['steps']} decode steps "
                 f"with shared prefixes): max {n['max']:.3g}, p99 {n['p99']:.3g}, median {n['median']:.3g}.\n")
    header = ["method", "batch", "tie margin", "tokens/s", "seconds", "tokens", "re-decoded rows", "outputs ≠ batch 1"]
    return head + table(header, rows) + foot
