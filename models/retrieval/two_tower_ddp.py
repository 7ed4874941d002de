"""The two-tower training on several processes: ``torchrun`` + ``torch.distributed`` (gloo on CPU, nccl on CUDA).

Every process loads the same marts, builds the same seeded batch order and trains its share of each batch
(``train_profile_model(..., rank, world_size)``: DistributedDataParallel all-reduces the gradients of every step,
so the ranks keep identical weights and choose the same best epoch). Rank 0 writes the model
(``TwoTowerRetriever.save``) and the epoch log; every rank writes ``rank<r>.json`` (steps it ran, a checksum of its
final weights) so a run can be checked.

Usage::

    torchrun --nproc_per_node 2 -m models.retrieval.two_tower_ddp --out artifacts/two_tower_ddp          # the warehouse
    torchrun --nproc_per_node 2 -m models.retrieval.two_tower_ddp --marts DIR --out DIR                  # Parquet marts

``--marts DIR`` reads ``<mart>.parquet`` for each mart of the contract plus ``item_embeddings.parquet``
(``item_id``, ``embedding``); without it the marts come from ``settings.database`` (opened read-only by each
rank). Settings come from the environment as everywhere (``RECGEN_PROFILE__EPOCHS=...``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from pathlib import Path

import duckdb
import pandas as pd
import torch
import torch.distributed as dist

from models.recdata import MART_COLUMNS, RecData
from models.retrieval.two_tower import train_profile_model
from models.settings import Settings, get_settings
from models.torch_utils import limit_cpu_threads

log = logging.getLogger(__name__)


def read_marts_dir(path: Path) -> RecData:
    """Marts and item embeddings from ``<mart>.parquet`` files in ``path``."""
    frames = {name: pd.read_parquet(path / f"{name}.parquet") for name in MART_COLUMNS}
    return RecData.from_frames(frames, pd.read_parquet(path / "item_embeddings.parquet"))


def read_warehouse(settings: Settings) -> RecData:
    """Marts and item embeddings from the DuckDB warehouse, opened read-only (several ranks read at once)."""
    from models import evaluation

    con = duckdb.connect(str(settings.database), read_only=True)
    try:
        frames = evaluation.read_marts(con)
        embeddings = evaluation.read_item_embeddings(con)
    finally:
        con.close()
    if embeddings is None:
        raise SystemExit(f"{settings.database} has no ml.item_embeddings: run the embeddings step first")
    return evaluation.build_data(frames, embeddings)


def weights_checksum(model: torch.nn.Module) -> str:
    """sha256 over the state dict's tensors in key order (equal on every rank after a DDP run)."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    """Initialize the process group from torchrun's environment, train, save on rank 0."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the model and the epoch log")
    parser.add_argument(
        "--marts", type=Path, default=None, help="folder of Parquet marts (default: warehouse)"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    device = settings.resolved_device
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format=f"[rank {rank}] %(message)s"
    )
    limit_cpu_threads(settings.torch_threads)
    try:
        data = read_marts_dir(args.marts) if args.marts else read_warehouse(settings)
        encoder, epochs = train_profile_model(data, settings, rank=rank, world_size=world)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "rank": rank,
                    "world_size": world,
                    "backend": backend,
                    "steps": epochs["steps"].tolist(),
                    "weights_sha256": weights_checksum(encoder.model),
                }
            )
        )
        if rank == 0:
            encoder.save(args.out)
            epochs.to_csv(args.out / "epochs.csv", index=False)
            log.info("saved the two-tower model (%d ranks, %s) to %s", world, backend, args.out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
