"""Prompt building end to end on the bundled sample with a tiny ViT: embedding, clustering, files, errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_models import save_tiny_text_model, save_tiny_vit

from histoaug import PCam, sample_root
from histoaug.cli.main import main
from histoaug.errors import InvalidArgumentError
from histoaug.prompts import PromptBank
from histoaug.training import (
    ClusterConfig,
    TransformersEmbedder,
    assign_clusters,
    embed_dataset,
    fit_clusters,
    load_prompts_dir,
    morphology_bank,
)
from histoaug.training.embedding import EmbedderLoadError
from histoaug.training.requirements import TrainingDependencyError

K = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("vit") / "vit")


@pytest.fixture(scope="module")
def built(vit_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("prompts")
    out, cache = root / "prompts", root / "cache"
    code = main(["prompts", "build", "sample", "--embedder", str(vit_dir), "--clusters", str(K),
                 "--out", str(out), "--cache-dir", str(cache), "--batch-size", "50"])
    assert code == 0
    return out, cache


def test_morphology_prompts_end_to_end(built):
    out, _ = built
    bank = PromptBank.load(out)
    assert bank.kind == "morphology" and len(bank) == 2 * K
    assert [(p.label, p.morphology) for p in bank] == [(lab, m) for lab in (0, 1) for m in range(K)]
    assert "healthy" in bank[0].text and "cancerous" in bank[K].text and "morphology type 3" in bank[3].text

    data = PCam(sample_root(), "train")
    with h5py.File(out / "prompt_ids.h5", "r") as handle:
        ids, labels, morph = handle["prompt_id"][()], handle["label"][()], handle["morphology"][()]
        assert handle.attrs["format"] == "histoaug.prompt_ids/1" and handle.attrs["n"] == len(data)
        assert handle.attrs["clusters"] == K
    assert len(ids) == len(data)
    np.testing.assert_array_equal(labels, data.labels)
    np.testing.assert_array_equal(ids, labels.astype(np.int64) * K + morph)
    assert set(np.unique(morph)) == set(range(K))  # every cluster has members

    report = json.loads((out / "report.json").read_text())
    assert sum(report["cluster_sizes"]) == len(data) and len(report["cluster_sizes"]) == K
    assert -1.0 <= report["silhouette"] <= 1.0
    assert sum(report["patches_per_prompt"]) == len(data)
    centers = load_file(out / "clusters.safetensors")["centers"]
    assert centers.shape == (K, 32)

    bank2, assignment = load_prompts_dir(out)
    assert len(bank2) == 2 * K
    np.testing.assert_array_equal(assignment.prompt_ids, ids)


def test_rebuild_reads_the_embedding_cache_and_is_identical(built, vit_dir, capsys):
    out, cache = built
    assert len(list(cache.glob("*.safetensors"))) == 1
    again = out.with_name("again")
    assert main(["prompts", "build", "sample", "--embedder", str(vit_dir), "--clusters", str(K),
                 "--out", str(again), "--cache-dir", str(cache)]) == 0
    assert "(embeddings from cache)" in capsys.readouterr().out
    assert json.loads((again / "report.json").read_text())["embeddings_from_cache"] is True
    with h5py.File(out / "prompt_ids.h5") as a, h5py.File(again / "prompt_ids.h5") as b:
        np.testing.assert_array_equal(a["prompt_id"][()], b["prompt_id"][()])


def test_existing_output_refused_then_overwritten(built, vit_dir, capsys):
    out, cache = built
    args = ["prompts", "build", "sample", "--embedder", str(vit_dir), "--clusters", str(K), "--out", str(out),
            "--cache-dir", str(cache)]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--kind", "baseline"]) == 0
    assert PromptBank.load(out).kind == "baseline"
    assert main([*args, "--overwrite"]) == 0  # leave it as the other tests expect
    assert len(PromptBank.load(out)) == 2 * K


def test_other_split_assigned_to_the_training_centres(built, vit_dir, tmp_path, capsys):
    out, cache = built
    valid_dir = tmp_path / "valid"
    assert main(["prompts", "build", "sample", "--split", "valid", "--embedder", str(vit_dir), "--centers-from",
                 str(out), "--out", str(valid_dir), "--cache-dir", str(cache)]) == 0
    bank, assignment = load_prompts_dir(valid_dir)
    assert bank.texts == PromptBank.load(out).texts
    data = PCam(sample_root(), "valid")
    embeddings = embed_dataset(data, TransformersEmbedder(str(vit_dir)), cache_dir=cache, progress=False).embeddings
    expected = assign_clusters(embeddings, load_file(out / "clusters.safetensors")["centers"].numpy())
    np.testing.assert_array_equal(assignment.morphology, expected)
    np.testing.assert_array_equal(assignment.prompt_ids, data.labels.astype(np.int64) * K + expected)
    assert assignment.attrs["split"] == "valid" and assignment.attrs["centers_from"] == str(out)
    other = save_tiny_vit(tmp_path / "other_vit", seed=1)
    assert main(["prompts", "build", "sample", "--split", "valid", "--embedder", str(other), "--centers-from",
                 str(out), "--out", str(tmp_path / "v2"), "--cache-dir", str(cache)]) == 2
    assert "fitted with" in capsys.readouterr().err


def test_baseline_prompts(tmp_path):
    out = tmp_path / "baseline"
    assert main(["prompts", "build", "sample", "--kind", "baseline", "--out", str(out)]) == 0
    bank, assignment = load_prompts_dir(out)
    assert bank.kind == "baseline" and bank.texts == PromptBank.baseline().texts
    np.testing.assert_array_equal(assignment.prompt_ids, PCam(sample_root(), "train").labels)
    assert (assignment.morphology == -1).all()
    assert not (out / "clusters.safetensors").exists()


def test_embedder_uses_the_model_and_its_hash_keys_the_cache(vit_dir, tmp_path):
    data = PCam(sample_root(), "valid")
    embedder = TransformersEmbedder(str(vit_dir))
    first = embed_dataset(data, embedder, batch_size=7, cache_dir=tmp_path, progress=False)
    assert first.embeddings.shape == (len(data), 32) and not first.from_cache
    # batched in 7s == one batch (inference is per-sample independent up to float rounding)
    whole = embedder.embed(data.read_images(np.arange(len(data))))
    torch.testing.assert_close(first.embeddings, whole, rtol=1e-4, atol=1e-5)
    assert embed_dataset(data, embedder, cache_dir=tmp_path, progress=False).from_cache
    # same blocks read and preprocessed in DataLoader workers: bit-identical
    workers = embed_dataset(data, embedder, batch_size=7, use_cache=False, num_workers=2, progress=False)
    assert torch.equal(workers.embeddings, first.embeddings)
    other = save_tiny_vit(tmp_path / "vit2", seed=1)  # other random weights -> another model hash
    second = embed_dataset(data, TransformersEmbedder(str(other)), cache_dir=tmp_path, progress=False)
    assert not second.from_cache and second.model_hash != first.model_hash
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_clustering_is_deterministic_under_a_seed():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(c, 0.3, size=(40, 8)) for c in range(5)]).astype(np.float32)
    a = fit_clusters(points, ClusterConfig(clusters=5, seed=3))
    b = fit_clusters(points, ClusterConfig(clusters=5, seed=3))
    np.testing.assert_array_equal(a.assignments, b.assignments)
    np.testing.assert_array_equal(a.centers, b.centers)
    assert a.algorithm == "KMeans" and a.sizes.sum() == 200 and a.silhouette > 0.2
    np.testing.assert_array_equal(assign_clusters(points, a.centers), a.assignments)
    mini = ClusterConfig(clusters=5, seed=3, minibatch_threshold=10)
    m1, m2 = fit_clusters(points, mini), fit_clusters(points, mini)
    assert m1.algorithm == "MiniBatchKMeans"
    np.testing.assert_array_equal(m1.assignments, m2.assignments)


def test_morphology_bank_has_label_times_types():
    bank = morphology_bank(33)
    assert len(bank) == 66 and bank.kind == "morphology"
    assert bank[34].label == 1 and bank[34].morphology == 1


# --- errors ------------------------------------------------------------------------------------
def test_more_clusters_than_patches(vit_dir, tmp_path, capsys):
    patches = len(PCam(sample_root(), "train"))
    code = main(["prompts", "build", "sample", "--embedder", str(vit_dir), "--clusters", str(patches + 1),
                 "--out", str(tmp_path / "p")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{patches + 1} clusters from {patches} patches" in err and err.count("\n") == 1
    with pytest.raises(InvalidArgumentError, match="at most 10"):
        fit_clusters(np.random.default_rng(0).normal(size=(10, 4)), ClusterConfig(clusters=11))


def test_text_model_is_not_an_embedder(tmp_path, capsys):
    text_model = save_tiny_text_model(tmp_path / "bert")
    with pytest.raises(EmbedderLoadError, match="not a vision model"):
        TransformersEmbedder(str(text_model))
    assert main(["prompts", "build", "sample", "--embedder", str(text_model), "--clusters", "4",
                 "--out", str(tmp_path / "p")]) == 2
    assert "not a vision model" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_embedder_dir_without_config(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["prompts", "build", "sample", "--embedder", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "p")]) == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["offline_variable", "unreachable_hub"])
def test_offline_hub_embedder_fails_at_once_naming_the_option(how, tmp_path, capsys, monkeypatch):
    """Offline, the default hub embedder fails in one line, with no retry warnings before it (they cost
    ~26 s): detected by the HF offline variables, or by one refused connection to the hub."""
    import histoaug.network as network

    if how == "unreachable_hub":
        for name in network.OFFLINE_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(network, "HUB_HOST", "127.0.0.1")  # nothing listens on 443 here: refused at once
        network._unreachable.cache_clear()
    assert main(["prompts", "build", "sample", "--clusters", "4", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "facebook/dino-vits16" in err and "--embedder DIR" in err
    assert ("HF_HUB_OFFLINE is set" if how == "offline_variable" else "127.0.0.1 cannot be reached") in err
    network._unreachable.cache_clear()


def test_missing_data_files(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert main(["prompts", "build", str(tmp_path / "data"), "--kind", "baseline", "--out", str(tmp_path / "p")]) == 2
    assert "camelyonpatch_level_2_split_train_x.h5" in capsys.readouterr().err


def test_missing_training_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "sklearn.cluster", None)
    with pytest.raises(TrainingDependencyError, match=r"pip install 'histoaug\[training\]'"):
        fit_clusters(np.zeros((4, 2)) + np.arange(4)[:, None], ClusterConfig(clusters=2))
