"""gpu_suite's records -> the markdown section for benchmarks/RESULTS.md."""

from __future__ import annotations

import datetime


def _ok(records: list[dict], part: str) -> list[dict]:
    return [r for r in records if r["part"] == part and r["status"] == "ok"]


def _train_row(r: dict) -> str:
    if r["status"] != "ok":
        s = r["spec"]
        return (f"| {r['label']} | - | {s['seq_len']} | {s['batch']} | | | | "
                f"{r['status']}: {r.get('error', '')[:90]} | | | | | |")
    x = r["result"]
    roof = f"{100 * x['mfu_vs_roof']:.1f}%" if "mfu_vs_roof" in x else "-"
    return (f"| {r['label']} | {x['params'] / 1e6:,.1f}M | {x['seq_len']} | {x['batch']} | "
            f"{x['attention']} | {x['remat']} | {'yes' if x.get('scan_layers') else 'no'} | "
            f"{x['compile_s']:.1f} | {x['step_ms']:.1f} | {x['tokens_per_sec']:,.0f} | "
            f"{100 * x['mfu']:.1f}% | {roof} | {x['memory_gib']:.1f} |")


def markdown(records: list[dict], dry: bool) -> str:
    """The suite's results so far as markdown (written after every part)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### GPU suite{' (CPU dry run: tiny shapes, numbers mean nothing)' if dry else ''}"
             f" — {now}", ""]
    for r in _ok(records, "env"):
        e = r["result"]
        v = ", ".join(f"{k} {e['versions'][k]}" for k in e["versions"])
        lines += [f"Device: {e['device_count']}x {e['device_kind']} ({e['platform']}) "
                  f"{e['nvidia_smi']}; Python {e['python']}; {v}.",
                  f"Attention `auto` resolves to **{e['attention_auto']}** "
                  f"{e['attention_warning']}".rstrip() + ".", ""]
    for r in _ok(records, "roof"):
        x = r["result"]
        lines += [f"Measured matmul roof ({x['n']}^3): bf16 {x['bfloat16_tflops']:.3g} TFLOP/s, "
                  f"fp32 {x['float32_tflops']:.3g} TFLOP/s.", ""]
    trains = [r for r in records if r["part"] == "train"]
    if trains:
        ok = [r["result"] for r in trains if r["status"] == "ok"]
        peak = (f"{ok[0]['peak_flops'] / 1e12:.3g} TFLOP/s ({ok[0]['peak_source']})"
                if ok else "-")
        lines += ["Training, random tokens, AdamW, float32 params; MFU = PaLM model FLOPs "
                  f"(jaxlm.flops) over the data-sheet peak {peak}, and over the measured bf16 "
                  "roof. Step time: median of the timed steps after 2 warm-ups.", "",
                  "| run | params | seq | batch | attention | remat | scan | compile (s) | "
                  "step (ms) | tokens/s | MFU | MFU vs roof | peak mem (GiB) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
                  *(_train_row(r) for r in trains), ""]
    for r in _ok(records, "decode"):
        x = r["result"]
        lines += [f"Decode (greedy, {x['layers']} layers x {x['d_model']}, {x['dtype']}, "
                  f"prompt 16, KV cache; transformers on {x['device']}, torch {x['torch']}):", "",
                  "| batch | new tokens | jaxlm tokens/s | transformers tokens/s | ratio |",
                  "|---|---|---|---|---|",
                  *(f"| {y['batch']} | {y['new_tokens']} | {y['jaxlm_tokens_per_sec']:,.0f} | "
                    f"{y['transformers_tokens_per_sec']:,.0f} | {y['ratio']:.2f}x |"
                    for y in x["rows"]), ""]
    for r in _ok(records, "numerics"):
        x = r["result"]
        lines += [f"bf16 numerics ({x['steps']} steps, same init and batches): final loss "
                  f"fp32 {x['float32'][-1]:.4f} vs bf16 {x['bfloat16'][-1]:.4f}; mean gap over "
                  f"the last {x['tail_steps']} steps {x['tail_mean_gap']:.4f}; max per-step "
                  f"gap {x['max_abs_diff']:.4f}: **{'ok' if x['ok'] else 'NOT OK'}**.", ""]
    for r in _ok(records, "train_py"):
        x = r["result"]
        bpb = f", eval {x['eval_bpb']:.4f} bits/byte" if x.get("eval_bpb") else ""
        mfu = f", MFU {100 * x['mfu']:.1f}%" if x.get("mfu") else ""
        lines += [f"`python train.py {' '.join(x['overrides'])}`: {x['step']} steps in "
                  f"{x['wall_s']:.0f} s wall, {x['tokens_per_sec']:,.0f} tokens/s{mfu}{bpb}.", ""]
    lines += ["| part | status | seconds |", "|---|---|---|",
              *(f"| {r['label']} | {r['status']}"
                f"{': ' + r.get('error', '')[:80] if r['status'] != 'ok' else ''} | "
                f"{r['seconds']:.0f} |" for r in records)]
    return "\n".join(lines) + "\n"
