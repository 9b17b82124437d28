"""Times steady-state training steps of one PyTorch model in one mode.

tests/bench/bench.py starts this script as a subprocess (so its peak RSS is
PyTorch's alone) and reads the one JSON line it prints on stdout:

    /usr/bin/python3 tests/bench/torch_worker.py MODEL MODE [options]

MODEL: mlp (784-1000-10), resnet_small (1x28x28), resnet18 (torchvision,
3x32x32, 10 classes). MODE: full, fc (only the classifier head is trained,
the rest frozen with requires_grad False) or multirate. Multirate is a
plain re-implementation of multirate SGD with linear drift. The first step
of each block of k runs the full backward pass and folds the slow gradient
into the slow momentum buffer. The other k-1 steps run the head's backward
only, with the rest frozen. Every step moves the fast part by SGD with
momentum and the slow part by lr times its buffer. Every mode is SGD with
momentum 0.9 on one fixed random minibatch, as in mrt_worker.lua. MODE
paired times, in one process on one model, blocks of k full steps and
blocks of k multirate steps in turn (the first of each pair alternating),
and prints full_block_ms and multirate_block_ms.

Options: --batch N (128), --warmup N (5), --steps N (20), --k N (5),
--threads N (torch.set_num_threads, 2), --profile (print the
torch.autograd.profiler table of the timed steps on stderr).
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))


def build(name):
    """The model, its input shape and the name of its classifier head."""
    import reference_models

    if name == "mlp":
        return reference_models.MLP(), (1, 28, 28), "fc2"
    if name == "resnet_small":
        return reference_models.resnet_small(), (1, 28, 28), "fc"
    if name == "resnet18":
        import torchvision

        return torchvision.models.resnet18(num_classes=10), (3, 32, 32), "fc"
    raise SystemExit(f"torch_worker: unknown model '{name}'")


class Multirate:
    """Multirate SGD with linear drift over a slow and a fast parameter list."""

    def __init__(self, slow, fast, lr, k, momentum):
        self.slow, self.fast, self.k, self.momentum = slow, fast, k, momentum
        self.step_lr = lr / k
        self.fast_opt = torch.optim.SGD(fast, lr=self.step_lr, momentum=momentum)
        self.slow_buf = None
        self.t = 0

    def step(self, closure):
        full = self.t % self.k == 0
        for p in self.slow:
            p.requires_grad_(full)
        loss = closure()
        if full:
            grads = [p.grad for p in self.slow]
            if self.slow_buf is None:
                self.slow_buf = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(self.slow_buf, self.momentum)
                torch._foreach_add_(self.slow_buf, grads)
        with torch.no_grad():
            torch._foreach_add_(self.slow, self.slow_buf, alpha=-self.step_lr)
        self.fast_opt.step()
        self.t += 1
        return loss


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return -1.0


def run_paired(args, params, slow, fast, closure, lr, momentum):
    """Time blocks of k full steps and k multirate steps in turn and print them as JSON."""
    full = torch.optim.SGD(params, lr=lr, momentum=momentum)
    multirate = Multirate(slow, fast, lr * args.k, args.k, momentum)

    def block(opt):
        if opt is full:
            for p in params:
                p.requires_grad_(True)
        t0 = time.perf_counter()
        for _ in range(args.k):
            loss = opt.step(closure)
            if not torch.isfinite(loss):
                raise SystemExit(f"torch_worker: the loss is {loss.item()}")
        return 1000 * (time.perf_counter() - t0)

    warm = -(-args.warmup // args.k)
    full_ms, multirate_ms = [], []
    for pair in range(1, warm + -(-args.steps // args.k) + 1):
        if pair % 2 == 0:
            a, b = block(full), block(multirate)
        else:
            b, a = block(multirate), block(full)
        if pair > warm:
            full_ms.append(round(a, 4))
            multirate_ms.append(round(b, 4))
    print(json.dumps({
        "framework": "torch", "model": args.model, "mode": "paired", "batch": args.batch,
        "threads": torch.get_num_threads(), "k": args.k, "full_block_ms": full_ms,
        "multirate_block_ms": multirate_ms, "rss_mb": round(peak_rss_mb(), 1),
        "torch": torch.__version__,
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("mode", choices=["full", "fc", "multirate", "paired"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    model, shape, head = build(args.model)
    model.train()
    x = torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(args.batch) % 10
    params = list(model.parameters())
    fast = [p for n, p in model.named_parameters() if n.startswith(head + ".")]
    slow = [p for n, p in model.named_parameters() if not n.startswith(head + ".")]
    lr, momentum = 0.01, 0.9

    def closure():
        for p in params:
            p.grad = None
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        return loss

    if args.mode == "paired":
        run_paired(args, params, slow, fast, closure, lr, momentum)
        return
    if args.mode == "full":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    elif args.mode == "fc":
        for p in slow:
            p.requires_grad_(False)
        opt = torch.optim.SGD(fast, lr=lr, momentum=momentum)
    else:
        opt = Multirate(slow, fast, lr * args.k, args.k, momentum)

    step_ms = []
    profiler = None
    cpu_start = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            cpu_start = time.process_time()
        if step == args.warmup and args.profile:
            profiler = torch.autograd.profiler.profile()
            profiler.__enter__()
        t0 = time.perf_counter()
        loss = opt.step(closure)
        dt = time.perf_counter() - t0
        if not torch.isfinite(loss):
            raise SystemExit(f"torch_worker: the loss is {loss.item()} at step {step + 1}")
        if step >= args.warmup:
            step_ms.append(1000 * dt)
    cpu_ms = 1000 * (time.process_time() - cpu_start) / args.steps
    if profiler is not None:
        profiler.__exit__(None, None, None)
        table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        print(f"torch profile of {args.model} {args.mode}, {args.steps} steps\n{table}",
              file=sys.stderr)
    print(json.dumps({
        "framework": "torch", "model": args.model, "mode": args.mode, "batch": args.batch,
        "threads": torch.get_num_threads(), "step_ms": [round(v, 4) for v in step_ms],
        "cpu_ms": round(cpu_ms, 4),
        "rss_mb": round(peak_rss_mb(), 1), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
