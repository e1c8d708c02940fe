"""What each knob buys, measured interleaved: each variant against its twin in one process,
round by round in turn, so a shared machine's slow spells hit both (docs/implementations.md; issue
12).

    python experiments/knobs_interleaved.py [--pairs 40] [--out results/knobs/interleaved.json]
        [-k SUBSTRING]

For each comparison (a multi-step implementation against its one-step twin, or an
implementation in mixed precision against itself in float32) both trainers are built from the
same initial weights; each round times K calls of one side (K chosen for about
``--round-seconds``) and then the other, in random order, reading the hypervisor's steal
around each round; each pair also runs one round of the calibration's matmul chain, in the
same random order, so a variant's share of the matmul rate is read against the rate of that
moment too (``variant_pct_of_matmul_beside``). The ratio is variant / twin seconds per training
step; the estimate is the
Hodges-Lehmann median of the paired log-ratios with its Wilcoxon interval
(``bench.stats.paired``, unscaled: one process, so no process bias to widen for), over the pairs
without a contended round. A ratio below 1 means the knob makes a step faster.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import implementations  # noqa: E402
from bench.host import STEAL_LIMIT, cpu_steal_counters, steal_fraction  # noqa: E402
from bench.stats.paired import hodges_lehmann, kept_pairs  # noqa: E402
from bench.tasks import (  # noqa: E402
    TASKS,
    initial_weights,
    load_for_task,
    train_flops_per_sample,
)
from bench.timing.harness import (  # noqa: E402
    choose_steps_per_round,
    first_call_and_warm_up,
    fixed_batch,
)
from bench.timing.machine import calibrate_matmul, machine_info, matmul_timer, sync  # noqa: E402

# (task, variant implementation, variant options, twin implementation, twin options)
COMPARISONS = (
    [
        (task, impl, {}, implementations.MULTI_STEP[impl], {})
        for task in ("linreg", "mlp", "cnn")
        for impl in ("keras_fit_spe", "custom_graph_loop", "custom_xla_loop")
        if not (task == "cnn" and impl == "custom_xla_loop")  # XLA's CNN: 1-2 s per 16-step call
    ]
    + [
        (task, impl, {"precision": precision}, impl, {})
        for task in ("mlp", "cnn")
        for precision in ("mixed_bfloat16", "mixed_float16")
        for impl in ("keras_fit", "custom_graph", "custom_xla", "custom_xla_loop")
        if not (precision == "mixed_float16" and task == "cnn")  # no float16 conv kernels on CPU
        if not (task == "cnn" and impl in ("custom_xla", "custom_xla_loop"))
        if not (precision == "mixed_float16" and impl in ("custom_xla", "custom_xla_loop"))
    ]
    + [
        (task, impl, {}, twin, {})
        for task in ("linreg", "mlp")  # the CNN under XLA's loop: 1-2 s per call
        for impl, twin in implementations.MICRO_BATCH.items()
    ]
)


def label(impl: str, options: dict) -> str:
    extra = [f"{k}={v}" for k, v in options.items()]
    return impl + (f"[{', '.join(extra)}]" if extra else "")


def timed_side(impl: str, options: dict, task, data, round_seconds: float):
    trainer = implementations.get(impl)(task, initial_weights(task), **options)
    n = int(getattr(trainer, "steps_per_call", 1))
    x, y = fixed_batch(task, task.batch_size, data, n)

    def call():
        return trainer.step(x, y)

    compile_s = first_call_and_warm_up(call, max(1, math.ceil(10 / n)))
    k = choose_steps_per_round(call, round_seconds)

    def one_round() -> tuple[float, float | None]:
        start = cpu_steal_counters()
        t0 = time.perf_counter()
        for _ in range(k):
            loss = call()
        sync(loss)
        seconds = (time.perf_counter() - t0) / (k * n)
        return seconds, steal_fraction(start, cpu_steal_counters())

    return one_round, {"compile_s": compile_s, "calls_per_round": k, "steps_per_call": n}


def compare(
    task_name, impl, options, twin, twin_options, pairs, round_seconds, gflops, matmul, rng
):
    """``pairs`` rounds of each side in random order, each pair with a round of the
    calibration's matmul chain (``matmul``: ``harness.matmul_timer``) beside it, so the
    variant's share of the matmul rate is also read against the rate of that moment."""
    task = TASKS[task_name]
    data = load_for_task(task)
    variant, v_meta = timed_side(impl, options, task, data, round_seconds)
    base, b_meta = timed_side(twin, twin_options, task, data, round_seconds)
    n, matmul_round = matmul
    v_s, b_s, v_st, b_st, m_s = [], [], [], [], []
    for _ in range(pairs):
        sides = [("v", variant), ("b", base), ("m", None)]
        rng.shuffle(sides)
        for name, side in sides:
            if side is None:
                m_s.append(matmul_round())
                continue
            seconds, steal = side()
            (v_s if name == "v" else b_s).append(seconds)
            (v_st if name == "v" else b_st).append(np.nan if steal is None else steal)
    v_s, b_s, m_s = np.array(v_s), np.array(b_s), np.array(m_s)
    keep = kept_pairs(b_s, v_s, np.array(b_st), np.array(v_st), STEAL_LIMIT, minimum=10)
    est = hodges_lehmann(np.log(v_s[keep] / b_s[keep]))
    flops = train_flops_per_sample(task) * task.batch_size
    # The variant's GFLOP/s over the matmul chain's in the same pair: a slow spell of the
    # machine slows both, so the share holds where the session's best calibration does not.
    beside = (flops / v_s[keep]) / (2 * n**3 / m_s[keep])
    return {
        "task": task_name,
        "variant": label(impl, options),
        "twin": label(twin, twin_options),
        "variant_ms": 1e3 * float(np.median(v_s[keep])),
        "twin_ms": 1e3 * float(np.median(b_s[keep])),
        "ratio": est.ratio,
        "low": est.low,
        "high": est.high,
        "speedup": 1 / est.ratio,
        "pairs_kept": int(keep.sum()),
        "pairs": pairs,
        "variant_pct_of_matmul": 100 * flops / float(np.median(v_s[keep])) / 1e9 / gflops,
        "variant_pct_of_matmul_beside": 100 * float(np.median(beside)),
        "variant_pct_of_matmul_beside_iqr": [
            100 * float(q) for q in np.percentile(beside, [25, 75])
        ],
        "matmul_gflops_beside": [2 * n**3 / float(s) / 1e9 for s in m_s],
        "variant_meta": v_meta,
        "twin_meta": b_meta,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--round-seconds", type=float, default=0.15)
    parser.add_argument("-k", default="", help="only comparisons whose label contains this")
    parser.add_argument("--out", type=Path, default=ROOT / "results/knobs/interleaved.json")
    args = parser.parse_args(argv)
    from bench.tfimport import import_tensorflow

    import_tensorflow()  # without TensorFlow's CPU-only start-up lines
    rng = random.Random(0)
    calibration = calibrate_matmul(seconds=2.0)
    matmul = matmul_timer()
    results = []
    t0 = time.perf_counter()
    for task_name, impl, options, twin, twin_options in COMPARISONS:
        name = f"{task_name}: {label(impl, options)} vs {label(twin, twin_options)}"
        if args.k not in name:
            continue
        r = compare(
            task_name,
            impl,
            options,
            twin,
            twin_options,
            args.pairs,
            args.round_seconds,
            calibration["calibration_gflops"],
            matmul,
            rng,
        )
        results.append(r)
        print(
            f"{name}: {r['variant_ms']:.3g} vs {r['twin_ms']:.3g} ms/step, speedup "
            f"{r['speedup']:.2f}x (ratio {r['ratio']:.3f}, 95% {r['low']:.3f}-{r['high']:.3f}, "
            f"{r['pairs_kept']}/{r['pairs']} pairs), {r['variant_pct_of_matmul']:.0f}% of matmul "
            f"({r['variant_pct_of_matmul_beside']:.0f}% of the matmul round beside it)",
            flush=True,
        )
    info = machine_info("knobs-interleaved", calibration)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": info, "wall_s": time.perf_counter() - t0, "results": results}, indent=1
        )
    )
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
