"""``torchrun --nproc_per_node 2 -m models.retrieval.two_tower_ddp``: two real processes (gloo) train the two-tower model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from models.recdata import RecData
from models.retrieval.two_tower import TwoTowerRetriever, evaluate_retrieval, train_profile_model
from tests.models.conftest import make_synthetic_marts, tiny_settings

# no dropout (neither in the encoder nor of item ids): then a step's gradient over two ranks' halves of a batch
# is the one-process gradient of the whole batch, up to float rounding, and the two runs can be compared closely
PROFILE = {
    "epochs": 4, "hidden_dim": 32, "n_heads": 2, "batch_size": 16, "max_history": 20, "dropout": 0.0,
    "id_dropout": 0.0,
}  # fmt: skip


def test_torchrun_two_processes_match_one_process(tmp_path: Path) -> None:
    frames, embeddings = make_synthetic_marts()
    marts = tmp_path / "marts"
    marts.mkdir()
    for name, frame in frames.items():
        frame.to_parquet(marts / f"{name}.parquet")
    embeddings.to_parquet(marts / "item_embeddings.parquet")
    env = {
        **os.environ,
        "RECGEN_HOME": str(tmp_path / "home"),
        "RECGEN_DEVICE": "cpu",
        "RECGEN_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        **{f"RECGEN_PROFILE__{k.upper()}": str(v) for k, v in PROFILE.items()},
    }
    out = tmp_path / "ddp"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "models.retrieval.two_tower_ddp", "--marts", str(marts), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["backend"] == "gloo"
    # DDP all-reduced every step: both processes end with the same weights, and ran the same steps
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["steps"] == ranks[1]["steps"]

    data = RecData.from_frames(*make_synthetic_marts())
    single, single_log = train_profile_model(data, tiny_settings(profile=PROFILE))
    # each rank took half of every global batch: as many steps per epoch as one process (minus batches too
    # small to split, none here)
    assert ranks[0]["steps"] == single_log["steps"].tolist()
    ddp = TwoTowerRetriever.load(out)
    assert len(pd.read_csv(out / "epochs.csv")) == PROFILE["epochs"]
    a = evaluate_retrieval(single, data, "valid")
    b = evaluate_retrieval(ddp, data, "valid")
    # same data, same global batches, no dropout: the two-process model is the one-process model up to rounding
    assert b["recall@20"] > 0.4
    assert b["ndcg@10"] == pytest.approx(a["ndcg@10"], abs=0.01)
    assert b["recall@20"] == pytest.approx(a["recall@20"], abs=0.01)
    one = single.catalog_space(data.items, data.item_text)
    two = ddp.catalog_space(data.items, data.item_text)
    assert torch.allclose(one.vecs, two.vecs, atol=1e-3)
