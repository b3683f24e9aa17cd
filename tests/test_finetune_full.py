from pathlib import Path

import numpy as np
import pytest
import torch

from bilaf.backbones import Preprocess
from bilaf.finetune_full import FullFinetuneError, Recipe, build_classifier, lr_at, train_full

RECIPE = Recipe(epochs=2, total_batch=16, base_lr=0.4, warmup_epochs=1, eval_every=1, seed=0)
PREP = Preprocess(image_size=32)


def toy_images(n=48, seed=0):
    """Three classes of 28x28 images that differ in where they are bright: learnable quickly."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, :, c * 9 : c * 9 + 9] += 180
    return images, labels


def model():
    return build_classifier("test_efficientnet", None, 3, RECIPE.drop_path)


def run(tmp_path, recipe=RECIPE, net=None, name="ckpt.pt"):
    x, y = toy_images()
    tx, ty = toy_images(30, seed=1)
    return train_full(
        net or model(), "test_efficientnet", x, y, tx, ty, recipe, PREP, tmp_path / name
    )


def test_lr_schedule_warms_up_then_decays_to_zero():
    r = Recipe(epochs=10, warmup_epochs=2, total_batch=1024)
    lrs = [lr_at(s, 3, r) for s in range(30)]
    assert r.lr == pytest.approx(6e-3)  # 3e-3 x 1024 / 512
    assert lrs[5] == pytest.approx(r.lr) and all(np.diff(lrs[:6]) > 0)
    assert all(np.diff(lrs[5:]) <= 0) and lrs[-1] < 0.01 * r.lr


def test_training_loss_falls_and_results_are_recorded(tmp_path):
    out = run(tmp_path, Recipe(**{**RECIPE.__dict__, "epochs": 4}))
    losses = [h["train_loss"] for h in out["history"]]
    assert losses[-1] < losses[0]
    assert out["test_logits"].shape == (30, 3)
    assert out["effective_batch_size"] == 16 and out["lr"] == pytest.approx(0.4 * 16 / 512)
    assert 0 <= out["last_top1"] <= 100 and out["best_top1"] >= out["history"][0]["top1"]


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    torch.manual_seed(0)
    whole = model()
    run(tmp_path, net=whole, name="whole.pt")
    torch.manual_seed(0)
    first = model()
    run(tmp_path, Recipe(**{**RECIPE.__dict__, "epochs": 1}), net=first, name="split.pt")
    ckpt = torch.load(tmp_path / "split.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["arch"] == "test_efficientnet"
    torch.manual_seed(123)  # a fresh process: different init, all state comes from the file
    resumed = model()
    out = run(tmp_path, net=resumed, name="split.pt")  # the same 2-epoch recipe, resumed
    assert [h["epoch"] for h in out["history"]] == [1, 2]
    expected, got = whole.state_dict(), resumed.state_dict()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], msg=key)


def test_checkpoint_from_another_architecture_is_refused_and_kept(tmp_path):
    run(tmp_path, Recipe(**{**RECIPE.__dict__, "epochs": 1}))
    before = (tmp_path / "ckpt.pt").read_bytes()
    x, y = toy_images()
    other = build_classifier("test_resnet", None, 3, 0.0)
    with pytest.raises(FullFinetuneError, match="from architecture 'test_efficientnet'"):
        train_full(other, "test_resnet", x, y, x, y, RECIPE, PREP, tmp_path / "ckpt.pt")
    assert (tmp_path / "ckpt.pt").read_bytes() == before


def test_empty_selection_is_an_error(tmp_path):
    x, y = toy_images()
    with pytest.raises(FullFinetuneError, match="empty"):
        train_full(
            model(), "test_efficientnet", x[:0], y[:0], x, y, RECIPE, PREP, tmp_path / "c.pt"
        )


def test_folder_images_decode_on_demand_and_train(tmp_path):
    from PIL import Image

    from bilaf.data import get_source
    from bilaf.finetune_full import DecodedImages

    x, y = toy_images(n=12)
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = tmp_path / "train" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    table = get_source("imagefolder").load("train", None, {"train": str(tmp_path / "train")})
    decoded = DecodedImages(table, PREP)
    assert decoded.shape == (12,) and decoded[[3, 0]].shape == (2, 32, 32, 3)
    assert decoded[2:5].dtype == np.uint8
    recipe = Recipe(**{**RECIPE.__dict__, "epochs": 1})
    out = train_full(
        model(),
        "test_efficientnet",
        decoded,
        table.labels,
        decoded,
        table.labels,
        recipe,
        PREP,
        tmp_path / "c.pt",
    )
    assert out["test_logits"].shape == (12, 3)


def folder_split(root, n, seed):
    """``toy_images`` saved as an ImageFolder (class = subfolder); their labels in load order."""
    from PIL import Image

    from bilaf.data import get_source

    x, y = toy_images(n=n, seed=seed)
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return get_source("imagefolder").load("train", None, {"train": str(root)}).labels


def fake_store(path, labels):
    """A complete feature store whose rows are the split's images in order (features unused)."""
    from dataclasses import asdict

    import zarr

    group = zarr.open_group(str(path), mode="w")
    group.create_array("features", data=np.ones((labels.size, 2), dtype=np.float32))
    group.create_array("labels", data=np.asarray(labels, dtype=np.int64))
    group.create_array("source_index", data=np.arange(labels.size, dtype=np.int64))
    group.attrs.update({"preprocess": asdict(PREP), "complete": True})
    return path


def test_the_stage_trains_on_the_selection_and_evaluate_scores_it(tmp_path, capsys):
    import json

    from bilaf.cli import main
    from bilaf.finetune import load_model

    pool_labels = folder_split(tmp_path / "train", 12, seed=0)
    test_labels = folder_split(tmp_path / "test", 6, seed=1)
    pool = fake_store(tmp_path / "pool.zarr", pool_labels)
    test = fake_store(tmp_path / "test.zarr", test_labels)
    selection = tmp_path / "sel.json"
    picks = np.flatnonzero(pool_labels != 2)[:6].tolist()  # class 2 gets no labeled sample
    selection.write_text(json.dumps(picks))
    argv = ["finetune-full", "--source", "imagefolder", "--train-dir", tmp_path / "train"]
    argv += ["--test-dir", tmp_path / "test", "--features", pool, "--test-features", test]
    argv += ["--selection", selection, "--backbone", "test_efficientnet", "--n-classes", 3]
    argv += ["--epochs", 1, "--total-batch", 4, "--warmup-epochs", 1, "--eval-every", 1]
    argv += ["--checkpoint-dir", tmp_path / "ckpt", "--out", tmp_path / "m.npz"]
    assert main([str(a) for a in argv]) == 0
    model, meta = load_model(tmp_path / "m.npz")
    assert str(model["mode"]) == "full" and model["test_logits"].shape == (6, 3)
    assert meta["finetune_mode"] == "full" and meta["n_classes"] == 3 and meta["n_labeled"] == 6
    assert meta["labeled_class_histogram"] == np.bincount(pool_labels[picks], minlength=3).tolist()
    assert meta["classes_missing_from_labeled"] == [2]
    assert {"last_top1", "best_top1"} <= meta.keys()  # report.metric chooses which to show
    assert meta["device"] == "cpu" and Path(meta["checkpoint"]).is_file()
    assert meta["recipe"]["epochs"] == 1 and meta["effective_batch_size"] == 4

    out = tmp_path / "metrics.json"
    argv = ["evaluate", "--model", tmp_path / "m.npz", "--features", test, "--out", out]
    argv += ["--run", "dataset=toy", "method=random", "budget=6", "seed=0"]
    assert main([str(a) for a in argv]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["top1"] == pytest.approx(meta["last_top1"]) and metrics["n_test"] == 6
    assert metrics["budget"] == 6 and metrics["finetune_mode"] == "full"


def test_evaluation_batches_are_the_extraction_input():
    from bilaf.features import model_input
    from bilaf.finetune_full import _batch

    x, _ = toy_images(n=4)
    torch.testing.assert_close(_batch(x, PREP, "cpu"), model_input(x, PREP, "cpu"))
    train = _batch(x, PREP, "cpu", torch.Generator().manual_seed(0), RECIPE.min_crop)
    assert train.shape == (4, 3, 32, 32) and train.dtype == torch.float32


class Linear(torch.nn.Module):
    """A model without batch norm: two processes of half a batch each must then train exactly as
    one process of the whole batch (DDP averages the gradients)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Linear(3 * 32 * 32, 3)

    def forward(self, x):
        return self.head(x.flatten(1))


def train_linear(tmp_path, name):
    x, y = toy_images()
    tx, ty = toy_images(30, seed=1)
    net = Linear()
    recipe = Recipe(**{**RECIPE.__dict__, "epochs": 3})
    out = train_full(net, "linear", x, y, tx, ty, recipe, PREP, tmp_path / f"{name}.pt")
    return net, out


def _ddp_worker(rank, port, folder):
    import os

    os.environ.update(
        WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    net, out = train_linear(Path(folder), f"rank{rank}")
    torch.save({"state": net.state_dict(), "out": out}, Path(folder) / f"rank{rank}.result")


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_same_lr_and_total_batch(tmp_path):
    """The total batch (so the lr) is fixed whatever the process count: 2 gloo processes end
    with the single process's weights, lr and effective batch."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2)
    single, alone = train_linear(tmp_path, "single")
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.result", weights_only=False)
        out = result["out"]
        assert out["world_size"] == 2 and out["per_device_batch_size"] == 8
        assert out["effective_batch_size"] == alone["effective_batch_size"] == 16
        assert out["lr"] == alone["lr"]
        for key, value in single.state_dict().items():
            torch.testing.assert_close(result["state"][key], value, rtol=1e-5, atol=1e-6)


def test_every_epoch_reshuffles_in_one_process(tmp_path, monkeypatch):
    """The official DeiT-based code calls set_epoch only under DDP, so one GPU replays one order;
    here each epoch draws its own order from (seed, epoch) whatever the process count."""
    seen = []
    real = torch.randperm

    def spy(n, *args, **kwargs):
        order = real(n, *args, **kwargs)
        seen.append(order.tolist())
        return order

    monkeypatch.setattr(torch, "randperm", spy)
    run(tmp_path, Recipe(**{**RECIPE.__dict__, "epochs": 3}))
    orders = [o for o in seen if len(o) == 48]  # the labeled set's orders, one per epoch
    assert len(orders) == 3 and len({tuple(o) for o in orders}) == 3


def test_a_one_task_slurm_job_is_not_a_distributed_run(monkeypatch):
    import torch.distributed as dist

    from bilaf.finetune_full import _distributed_rank_world

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for key, value in {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}.items():
        monkeypatch.setenv(key, value)
    assert _distributed_rank_world() == (0, 1) and not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process
    assert _distributed_rank_world() == (0, 1) and not dist.is_initialized()
