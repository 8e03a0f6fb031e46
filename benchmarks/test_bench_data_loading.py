"""pytest-benchmark view of the data-loading comparison (see data_loading.py for the method).

    pytest benchmarks/test_bench_data_loading.py --benchmark-only
"""

from __future__ import annotations

import pytest
from data_loading import TorchvisionStylePCam, build_files, run_epoch

from histoaug import PCam

ITEMS = 8192


@pytest.fixture(scope="module", params=[False, True], ids=["uncompressed", "gzip"])
def pcam_folder(request, tmp_path_factory):
    return build_files(tmp_path_factory.mktemp("pcam"), ITEMS, compressed=request.param)


@pytest.mark.parametrize("reader", [PCam, TorchvisionStylePCam], ids=["histoaug", "torchvision-style"])
def test_dataloader_epoch(benchmark, pcam_folder, reader):
    dataset = reader(pcam_folder, "train")
    run_epoch(dataset, batch_size=256, workers=2)  # warm the page cache
    result = benchmark.pedantic(run_epoch, args=(dataset,), kwargs={"batch_size": 256, "workers": 2},
                                rounds=3, iterations=1)
    benchmark.extra_info["items_per_s"] = result["items_per_s"]
    assert result["items"] == ITEMS
