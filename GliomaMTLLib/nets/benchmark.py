"""Forward-time and size benchmark of the network family (prints a table; never a test).

Usage::

    python -m GliomaMTLLib.nets.benchmark --threads 2 --repeats 3
    python -m GliomaMTLLib.nets.benchmark --features 16,32,64,128 --sizes 128,96 --head seggated

Each row: features, input size, parameters, MB (float32), and for ``--repeats`` forward passes
under ``torch.inference_mode`` (after one warm-up run): the minimum and median wall seconds and
the median process CPU seconds (user + sys). On a machine shared with other jobs the wall time
inflates; the minimum is the best estimate of an idle machine.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from GliomaMTLLib.nets.config import NetConfig
from GliomaMTLLib.nets.cpu import tune_malloc_for_large_tensors
from GliomaMTLLib.nets.multitask import MultiTaskNet, count_parameters, parameter_megabytes

DEFAULT_FEATURES = ("8,16,32,64", "12,24,48,96", "16,32,64,128")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_forward(net: MultiTaskNet, shape: tuple[int, ...], repeats: int, **kwargs) -> tuple[float, float, float]:
    """(min wall, median wall, median process CPU) seconds of ``net(x)`` for a random x of ``shape``."""
    x = torch.randn(*shape)
    net.eval()
    walls, cpus = [], []
    with torch.inference_mode():
        net(x, **kwargs)
        for _ in range(repeats):
            c0, t0 = _cpu_seconds(), time.perf_counter()
            net(x, **kwargs)
            walls.append(time.perf_counter() - t0)
            cpus.append(_cpu_seconds() - c0)
    return min(walls), statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--in-channels", type=int, default=4)
    parser.add_argument("--features", action="append", help="comma-separated; repeatable")
    parser.add_argument("--sizes", default="128,96", help="cubic input sizes, comma-separated")
    parser.add_argument("--shape", action="append", default=[], help="explicit z,y,x input shape; repeatable")
    parser.add_argument("--head", default="none", help="none | bottleneck | multilevel | seggated")
    parser.add_argument("--dist", action="store_true", help="add the distance decoder")
    parser.add_argument("--light-top", action="store_true", help="NetConfig.light_top")
    parser.add_argument("--no-malloc-tune", action="store_true", help="keep glibc's default mmap threshold")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    tuned = False if args.no_malloc_tune else tune_malloc_for_large_tensors()
    shapes = [(s, s, s) for s in (int(v) for v in args.sizes.split(",") if v)]
    shapes += [tuple(int(v) for v in s.split(",")) for s in args.shape]
    tasks = {} if args.head == "none" else {"idh": ("wildtype", "mutant"), "codel_1p19q": ("intact", "codeleted")}
    head = "bottleneck" if args.head == "none" else args.head
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, head {args.head}, "
          f"dist {args.dist}, light_top {args.light_top}, malloc tuned {tuned}")
    print(f"{'features':<18} {'input':<16} {'params':>10} {'MB':>7} {'min s':>7} {'median s':>8} {'CPU s':>7}")
    for feats in args.features or DEFAULT_FEATURES:
        features = tuple(int(v) for v in feats.split(","))
        cfg = NetConfig(in_channels=args.in_channels, features=features, tasks=tasks, head_style=head,
                        distance_decoder=args.dist, light_top=args.light_top)
        net = MultiTaskNet(cfg)
        for shape in shapes:
            fastest, median, cpu = time_forward(net, (1, args.in_channels, *shape), args.repeats)
            print(f"{feats:<18} {'x'.join(map(str, shape)):<16} {count_parameters(net):>10} "
                  f"{parameter_megabytes(net):>7.2f} {fastest:>7.2f} {median:>8.2f} {cpu:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
