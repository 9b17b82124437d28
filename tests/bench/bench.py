"""CPU training speed of mrt against PyTorch on the same models and modes.

    /usr/bin/python3 tests/bench/bench.py [--models LIST] [--modes LIST]
        [--reps N] [--steps N] [--warmup N] [--k N] [--threads N] [--profile]
        [--json FILE]

`make bench` runs it with the defaults. The models are mlp 784-1000-10,
resnet_small on 1x28x28 and torchvision's resnet18 on 3x32x32; the modes are
full training, fc only, and multirate with k steps per block and linear
drift. For each, it runs mrt (tests/bench/mrt_worker.lua under LuaJIT) and
PyTorch (tests/bench/torch_worker.py) as separate processes, alternating
which goes first from one repetition to the next, and takes the median over
the repetitions of each run's median step time. Each process prints one
JSON line, and its peak RSS is its framework's alone.

The summary reports images/s and the ratio mrt/PyTorch per model and mode,
the multirate speed-up (full step time over multirate step time) of both
frameworks, and the bound (F+B)/(F+(B+(k-1)*B_fc)/k) from mrt's median
forward time F and backward time B in full training and backward time
B_fc in fc-only training. The speed-up comes from paired runs: each worker
times blocks of k full steps and blocks of k multirate steps in turn on one
model (mode paired), and the speed-up is the median over the pairs of the
full block's time over the multirate block's, so a change in the machine's
load between runs does not enter it. The ratio of the separate full and
multirate runs is printed beside it. It also reports each convolution network's
achieved GFLOP/s (convolution and linear FLOPs counted analytically per
layer) against the sgemm GFLOP/s of numpy's BLAS measured first. The last
lines have a fixed form:

    <model> <mode> mrt=<images/s> torch=<images/s> ratio=<mrt/torch>
    <model> speedup mrt=<x> torch=<x> bound=<x>

--profile also prints mrt's per-layer table (mrt.profile) and PyTorch's
torch.autograd.profiler table for every model and mode, from extra runs.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = ["mlp", "resnet_small", "resnet18"]
MODES = ["full", "fc", "multirate"]
INPUT = {"mlp": (1, 28, 28), "resnet_small": (1, 28, 28), "resnet18": (3, 32, 32)}


def paired_speedup(result):
    """Median over the pairs of the full block's time over the multirate block's."""
    return statistics.median(f / m for f, m in zip(result["full_block_ms"],
                                                   result["multirate_block_ms"]))


def worker_command(framework, model, mode, args, profile=False):
    common = ["--batch", str(args.batch), "--warmup", str(warmup_steps(mode, args)),
              "--steps", str(timed_steps(mode, args)), "--k", str(args.k)]
    if framework == "mrt":
        cmd = ["luajit", os.path.join(ROOT, "tests/bench/mrt_worker.lua"), model, mode]
        cmd += common + ["--threads", str(args.threads)]
    else:
        cmd = [sys.executable, os.path.join(ROOT, "tests/bench/torch_worker.py"), model, mode]
        cmd += common + ["--threads", str(args.threads or os.cpu_count())]
    return cmd + (["--profile"] if profile else [])


def warmup_steps(mode, args):
    """Warm-up steps, a whole number of blocks in multirate and paired modes."""
    if mode not in ("multirate", "paired"):
        return args.warmup
    return -(-args.warmup // args.k) * args.k


def timed_steps(mode, args):
    """Timed steps, a whole number of blocks; paired mode times twice as many blocks."""
    if mode == "paired":
        return 2 * -(-args.steps // args.k) * args.k
    if mode != "multirate":
        return args.steps
    return -(-args.steps // args.k) * args.k


def worker_env():
    env = dict(os.environ)
    env["MRT_HOME"] = ROOT
    env["LUA_PATH"] = f"{ROOT}/lua/?.lua;{ROOT}/lua/?/init.lua;;"
    return env


def run_worker(framework, model, mode, args, profile=False):
    cmd = worker_command(framework, model, mode, args, profile)
    proc = subprocess.run(cmd, cwd=ROOT, env=worker_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed with status {proc.returncode}:\n"
                         f"{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["stderr"] = proc.stderr
    return result


def step_time_ms(result, mode, k):
    """The run's median time per step; multirate steps are averaged over whole blocks first."""
    times = result["step_ms"]
    if mode != "multirate":
        return statistics.median(times)
    blocks = [sum(times[i:i + k]) / k for i in range(0, len(times) - k + 1, k)]
    return statistics.median(blocks)


def measure_sgemm(threads):
    """GFLOP/s of a 2048^3 float32 matrix product through numpy's BLAS (OpenBLAS here)."""
    if threads:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    import numpy as np

    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def training_flops(model, mode, batch):
    """FLOPs of one training step in convolutions and linear layers, counted per layer.

    Forward counts 2*MACs per layer. Backward adds the weight gradient
    (2*MACs) of every trained layer and the input gradient (2*MACs) of every
    layer above the lowest trained one. fc mode trains the head only, so its
    backward has no input gradient.
    """
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
    import torch_worker

    net, shape, head = torch_worker.build(model)
    layers = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs = output.numel() * module.in_channels // module.groups * kh * kw
        else:
            macs = output.numel() * module.in_features
        layers.append((module, macs))

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        net(torch.zeros(batch, *shape))
    for h in handles:
        h.remove()
    head_module = dict(net.named_modules())[head]
    flops = 0
    for i, (module, macs) in enumerate(layers):
        trained = mode == "full" or module is head_module
        needs_dx = mode == "full" and i > 0
        flops += 2 * macs * (1 + trained + needs_dx)
    return flops


def load_average():
    return "%.2f %.2f %.2f" % os.getloadavg()


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--reps", type=int, default=3, help="repetitions per framework")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per run")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--k", type=int, default=5, help="multirate block length")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of both frameworks (0: every core)")
    parser.add_argument("--profile", action="store_true",
                        help="print per-layer profiles from extra runs")
    parser.add_argument("--json", help="write every run's result to this file")
    args = parser.parse_args()
    args.models = args.models.split(",")
    args.modes = args.modes.split(",")
    for m in args.models:
        if m not in MODELS:
            parser.error(f"unknown model '{m}' (expected {', '.join(MODELS)})")
    for m in args.modes:
        if m not in MODES:
            parser.error(f"unknown mode '{m}' (expected {', '.join(MODES)})")
    return args


def main():
    args = parse_args()
    print(f"cpu: {cpu_model()}, {os.cpu_count()} logical cores; load average at start "
          f"{load_average()}")
    print(f"batch {args.batch}, {args.warmup} warm-up and {args.steps} timed steps per run, "
          f"{args.reps} repetitions, multirate k={args.k}")
    sgemm = measure_sgemm(args.threads)
    print(f"sgemm 2048^3 (numpy BLAS): {sgemm:.0f} GFLOP/s")

    runs = []
    table = {}
    paired = all(m in args.modes for m in MODES)
    for model in args.models:
        for rep in range(args.reps):
            order = ["mrt", "torch"] if rep % 2 == 0 else ["torch", "mrt"]
            for mode in args.modes:
                for fw in order:
                    r = run_worker(fw, model, mode, args)
                    r["rep"] = rep
                    runs.append(r)
                    ms = step_time_ms(r, mode, args.k)
                    table.setdefault((model, mode, fw), []).append((ms, r))
                    print(f"  {model:12s} {mode:9s} {fw:5s} rep {rep + 1}: {ms:8.2f} ms/step "
                          f"{args.batch * 1000 / ms:8.0f} img/s  rss {r['rss_mb']:.0f} MB",
                          flush=True)
            for fw in order if paired else []:
                r = run_worker(fw, model, "paired", args)
                r["rep"] = rep
                runs.append(r)
                speedup = paired_speedup(r)
                table.setdefault((model, "paired", fw), []).append((speedup, r))
                print(f"  {model:12s} paired    {fw:5s} rep {rep + 1}: speed-up {speedup:.3f}x "
                      f"over {len(r['full_block_ms'])} pairs of blocks", flush=True)

    summary = report(args, table, sgemm)
    if args.profile:
        for model in args.models:
            for mode in args.modes:
                for fw in ("mrt", "torch"):
                    print(run_worker(fw, model, mode, args, profile=True)["stderr"])
    print(f"load average at end {load_average()}")
    print("\n".join(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sgemm_gflops": sgemm, "runs": runs}, f, indent=1)


def median_ms(table, key):
    return statistics.median(ms for ms, _ in table[key])


def speedup_report(args, table, model):
    """Speed-ups and bound of one model, each taken per repetition, then the median.

    The speed-up of a repetition is its paired run's. The separate full and
    multirate runs of one repetition follow each other, so even their ratio
    is less exposed to the load of other processes drifting over the whole
    run than a ratio of medians would be, but far more than a paired run.
    """
    k = args.k
    reps = {}
    for mode in ("full", "fc", "multirate", "paired"):
        for fw in ("mrt", "torch"):
            for ms, r in table[(model, mode, fw)]:
                reps.setdefault(r["rep"], {})[(mode, fw)] = (ms, r)
    f, b, b_fc, bound, s_mrt, s_torch, share = [], [], [], [], [], [], []
    separate_mrt, separate_torch = [], []
    for rep in sorted(reps):
        runs = reps[rep]
        fr, fcr = runs[("full", "mrt")][1], runs[("fc", "mrt")][1]
        f.append(fr["forward_ms"])
        b.append(fr["backward_ms"])
        b_fc.append(fcr["backward_ms"])
        rep_bound = (f[-1] + b[-1]) / (f[-1] + (b[-1] + (k - 1) * b_fc[-1]) / k)
        bound.append(rep_bound)
        s_mrt.append(runs[("paired", "mrt")][0])
        s_torch.append(runs[("paired", "torch")][0])
        separate_mrt.append(runs[("full", "mrt")][0] / runs[("multirate", "mrt")][0])
        separate_torch.append(runs[("full", "torch")][0] / runs[("multirate", "torch")][0])
        share.append(s_mrt[-1] / rep_bound)
    med = statistics.median
    line = (f"{model:12s} F {med(f):7.2f} ms  B {med(b):7.2f} ms  B_fc {med(b_fc):6.2f} ms  "
            f"bound {med(bound):.2f}x  mrt {med(s_mrt):.2f}x (time ratio {1 / med(s_mrt):.3f}, "
            f"{100 * med(share):.0f}% of bound)  torch {med(s_torch):.2f}x "
            f"(time ratio {1 / med(s_torch):.3f}); separate runs: mrt "
            f"{med(separate_mrt):.2f}x torch {med(separate_torch):.2f}x")
    summary = (f"{model} speedup mrt={med(s_mrt):.2f} torch={med(s_torch):.2f} "
               f"bound={med(bound):.2f}")
    return line, summary


def report(args, table, sgemm):
    print("\nmodel        mode       mrt img/s  torch img/s  mrt/torch  mrt RSS MB  torch RSS MB")
    lines = []
    speed = {}
    for model in args.models:
        for mode in args.modes:
            ms = {fw: median_ms(table, (model, mode, fw)) for fw in ("mrt", "torch")}
            rss = {fw: max(r["rss_mb"] for _, r in table[(model, mode, fw)])
                   for fw in ("mrt", "torch")}
            ips = {fw: args.batch * 1000 / ms[fw] for fw in ms}
            speed[(model, mode)] = ms
            print(f"{model:12s} {mode:9s} {ips['mrt']:10.0f} {ips['torch']:12.0f} "
                  f"{ips['mrt'] / ips['torch']:10.2f} {rss['mrt']:11.0f} {rss['torch']:13.0f}")
            lines.append(f"{model} {mode} mrt={ips['mrt']:.0f} torch={ips['torch']:.0f} "
                         f"ratio={ips['mrt'] / ips['torch']:.2f}")
    if all(m in args.modes for m in MODES):
        print("\nmultirate speed-up over full training from paired blocks, and its bound from "
              "mrt's phases (medians over the repetitions of per-repetition values)")
        for model in args.models:
            line, summary = speedup_report(args, table, model)
            print(line)
            lines.append(summary)
    conv_models = [m for m in args.models if m != "mlp"]
    if conv_models:
        print(f"\nachieved GFLOP/s in convolutions and linear layers (sgemm: {sgemm:.0f})")
        for model in conv_models:
            for mode in args.modes:
                flops = training_flops(model, "fc" if mode == "fc" else "full", args.batch)
                ms = speed[(model, mode)]
                if mode == "multirate":
                    k = args.k
                    flops = (training_flops(model, "full", args.batch)
                             + (k - 1) * training_flops(model, "fc", args.batch)) / k
                print(f"{model:12s} {mode:9s} {flops / 1e9:6.2f} GFLOP/step  "
                      f"mrt {flops / ms['mrt'] / 1e6:6.1f} GFLOP/s  "
                      f"torch {flops / ms['torch'] / 1e6:6.1f} GFLOP/s")
    return lines


if __name__ == "__main__":
    main()
