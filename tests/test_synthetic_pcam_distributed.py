"""SyntheticPCam under torch.distributed: two real gloo ranks, each with its own pool producer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from pcam_files import random_patches, write_release_split
from synthesis_models import tiny_model_dir

ITEMS = 10
RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
from torch.utils.data import DataLoader
from histoaug import PoolConfig, SyntheticPCam

dist.init_process_group("gloo")
dataset = SyntheticPCam(sys.argv[1], ratio=0.5, synthesizer=sys.argv[2], backend="torch",
                        generate_options={"steps": 1}, pool=PoolConfig(batch_size=2, lookahead_epochs=0))
images = []
for batch, _ in DataLoader(dataset, batch_size=2, sampler=dataset.sampler(), num_workers=1):
    images.append(batch.numpy())
visited = list(dataset.sampler())
synthetic = [i for i in visited if dataset.is_synthetic(i)]
dataset.warm_up()
print(json.dumps({"visited": visited, "synthetic": synthetic, "produced": dataset.pool_stats().produced,
                  "served": len(visited) == sum(len(b) for b in images)}), flush=True)
dataset.close()
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.usefixtures("no_pool_leftovers")
def test_two_gloo_ranks_cover_the_epoch_once_and_generate_only_their_shards(tmp_path, tmp_path_factory):
    images, labels = random_patches(ITEMS, seed=0)
    write_release_split(tmp_path / "real", "train", images, labels)
    model = tiny_model_dir(tmp_path_factory)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ranks = [subprocess.Popen(
        [sys.executable, "-c", RANK_SCRIPT, str(tmp_path / "real"), str(model)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
             "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)},
    ) for rank in range(2)]
    reports = []
    for process in ranks:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    shards = [set(report["visited"]) for report in reports]
    assert shards[0].isdisjoint(shards[1])
    assert sorted(shards[0] | shards[1]) == list(range(ITEMS))  # together: the epoch, once
    for report in reports:
        assert report["served"] and report["synthetic"]
        assert report["produced"] == len(report["synthetic"])  # each producer made its shard only
    assert sum(len(r["synthetic"]) for r in reports) == round(0.5 * ITEMS)
