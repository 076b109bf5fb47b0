"""DistributedDataParallel: torchrun with 2 CPU processes (gloo) trains the same weights as one process.

Global batch equal on both sides (2 ranks x batch 1 vs 1 process x batch 2): each rank draws its
slots of the same global batch (GliomaMTLLib.train.sampling), DDP averages the gradients, the uncertainty
weights of the loss are all-reduced by the trainer, and instance norm keeps samples independent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from GliomaMTLLib.train.config import load_recipe
from GliomaMTLLib.train.trainer import train

REPO = Path(__file__).resolve().parents[1]

# seg pre-training (DDP with unused genotype parameters) then joint training (uncertainty weighting).
# SGD, not the recipe's Adam: Adam's first steps move every weight by about lr * sign(gradient), so
# a weight whose gradient is ~0 flips by 2 lr on a last-bit difference in the summation order of
# the all-reduce; SGD keeps weight differences proportional to gradient differences.
SETTINGS = ["train.iterations=2", "stages.main.optim.name=sgd", "stages.main.optim.lr=0.01", "stages.main.augment.noise_prob=0.5", "stages.main.augment.sequence_dropout=0.2"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_ranks_match_one_process(tmp_path):
    from safetensors.torch import load_file

    cache = tmp_path / "cache"
    single = tmp_path / "single"
    recipe = load_recipe("shi2023", [f"data.cache_dir={cache}", *SETTINGS, "stages.main.batch_size=2"], smoke=True)
    train(recipe, single, quiet=True)

    ddp = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
        "-m", "GliomaMTLLib.train.train", "--config", "shi2023", "--smoke", "--quiet", "--out", str(ddp),
        "--set", f"data.cache_dir={cache}", *SETTINGS, "stages.main.batch_size=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    run_info = json.loads((ddp / "run.json").read_text())
    assert run_info["status"] == "finished" and run_info["hardware"]["world_size"] == 2
    log = [json.loads(line) for line in (ddp / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(e["global_batch"] == 2 for e in log)  # rank 0 alone wrote the log

    a = load_file(str(single / "weights" / "main.safetensors"))
    b = load_file(str(ddp / "weights" / "main.safetensors"))
    assert set(a) == set(b)
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-5), f"{key}: max diff {(a[key] - b[key]).abs().max()}"
    # and training did move the weights (the comparison is not between two untrained networks)
    from GliomaMTLLib.nets import build_network

    torch.manual_seed(int(recipe["seed"]))  # the trainer's seed for its first stage
    init = build_network(recipe["stages"]["main"]["network"]).state_dict()
    assert sum(not torch.equal(init[k], a[k]) for k in a) > len(a) // 2
