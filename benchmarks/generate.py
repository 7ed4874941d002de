"""Generation throughput: tokens/s and items/s of the copy generator at batch sizes 1, 8 and 32.

Runs on CPU, and on the GPU too when CUDA is available (bf16/fp16 there). The generator is the registry's
champion (after `make run`), or the configured pretrained model, or — when neither exists — the default LM
trained here on the catalog first (marts.item_features when the warehouse has it, else the simulator's items).
Prompts are blurbs and summaries of distinct items, so nothing is cached; decoding is the configured one
(greedy by default). Usage:

    .venv/bin/python benchmarks/generate.py
    .venv/bin/python benchmarks/generate.py --prompts 64 --batch-sizes 1 8 32 --json reports/generate_bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from models.generation.artifacts import REGISTRY_NAME, model_location  # noqa: E402
from models.generation.generator import DecodingConfig, Generator  # noqa: E402
from models.generation.prompts import PromptFields  # noqa: E402
from models.generation.service import (  # noqa: E402
    content_hash,
    copy_source,
    fitted_prompt,
    items_by_id,
)
from models.generation.train import train_default_lm  # noqa: E402
from models.registry import ModelRegistry  # noqa: E402
from models.settings import Settings, get_settings  # noqa: E402
from models.torch_utils import limit_cpu_threads  # noqa: E402


def catalog(settings: Settings) -> tuple[pd.DataFrame, str]:
    """The warehouse's items when there are any, else the simulator's catalog."""
    if settings.database.exists():
        import duckdb

        from models.generation.daily import read_items

        try:
            con = duckdb.connect(str(settings.database), read_only=True)
            try:
                items = read_items(con)
            finally:
                con.close()
            if len(items):
                return items, f"marts.item_features ({settings.database})"
        except duckdb.Error:
            pass  # no marts yet (or the file is locked): fall back to the simulator
    from models.data.simulator import ContentPlatformSimulator, table_to_frame

    items = table_to_frame(ContentPlatformSimulator(settings).items_table())
    items["content_hash"] = [content_hash(t, b) for t, b in zip(items.title, items.body, strict=True)]
    return items, "simulator"


def generator_source(settings: Settings, items: pd.DataFrame, workdir: Path) -> tuple[str | Path, str]:
    """Where the benchmarked model comes from: champion, configured model, or trained now."""
    champion = ModelRegistry(settings.artifacts_dir).champion(REGISTRY_NAME)
    if champion is not None:
        return model_location(champion), f"registry champion {champion.version}"
    if settings.generation.model_name_or_path:
        return settings.generation.model_name_or_path, "configured pretrained model"
    started = time.perf_counter()
    result = train_default_lm(items, settings.generation, workdir / "lm", seed=settings.seed, device="cpu")
    took = time.perf_counter() - started
    return result.path, (
        f"trained now on {len(items)} items in {took:.1f}s (loss {result.loss_before:.3f} -> "
        f"{result.loss_after:.3f})"
    )


def bench(
    gen: Generator, prompts: list[str], batch_size: int, sources: list | None = None
) -> dict[str, float]:
    """Time generating every prompt at ``batch_size`` (wall and this process's CPU time); one warm-up first."""
    gen.generate(
        prompts[:batch_size], batch_size=batch_size, sources=sources[:batch_size] if sources else None
    )
    calls, tokens, secs = gen.n_model_calls, gen.n_generated_tokens, gen.generation_seconds
    started, cpu_started = time.perf_counter(), time.process_time()
    gen.generate(prompts, batch_size=batch_size, sources=sources)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    n_tokens = gen.n_generated_tokens - tokens
    return {
        "batch_size": batch_size,
        "items": len(prompts),
        "model_calls": gen.n_model_calls - calls,
        "tokens": n_tokens,
        "seconds": wall,
        "model_seconds": gen.generation_seconds - secs,
        "tokens_per_s": n_tokens / wall,
        # on a shared machine wall time includes waiting for a core; CPU time is what the work cost
        "cpu_seconds": cpu,
        "tokens_per_cpu_s": n_tokens / cpu if cpu > 0 else float("nan"),
        "items_per_s": len(prompts) / wall,
        "ms_per_batch": 1000 * wall / max(1, gen.n_model_calls - calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=64, help="prompts per measurement")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    settings = get_settings()
    limit_cpu_threads(settings.torch_threads)  # RECGEN_TORCH_THREADS=1 on a shared CPU
    items, source = catalog(settings)
    print(f"catalog: {len(items)} items from {source}")
    with tempfile.TemporaryDirectory() as tmp:
        model_path, how = generator_source(settings, items, Path(tmp))
        print(f"generator: {how}")
        gen_settings = settings.generation
        decoding = DecodingConfig.from_settings(settings)
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        results = []
        for device in devices:
            gen = Generator.load(model_path, decoding, device=device)
            prompts, sources = [], []
            for i, it in enumerate(items_by_id(items.head(args.prompts)).values()):
                # alternate blurbs and summaries of distinct items: nothing repeats
                task = "blurb" if i % 2 == 0 else "summary"
                interests = (it.category,) if task == "blurb" else ()
                fit = it.category if task == "blurb" else None
                fields = PromptFields(task, "casual", it.title, it.body, interests, fit=fit)
                prompt, n_words = fitted_prompt(fields, gen, gen_settings.max_fact_words)
                prompts.append(prompt)
                sources.append(copy_source(fields, n_words, i))
            # the service's copy decoding (sentences copied after an opening) when the settings ask for it
            copying = decoding.constrain_to_prompt and decoding.copy_context > 0
            dtype = str(next(gen.model.parameters()).dtype).removeprefix("torch.")
            print(
                f"\n{device} ({dtype}, {torch.get_num_threads()} threads), {len(prompts)} prompts, "
                f"max_new_tokens={decoding.max_new_tokens}, {decoding.signature}"
            )
            print(
                f"{'batch':>5} {'tokens/s':>10} {'tok/cpu-s':>10} {'items/s':>9} {'ms/batch':>9} {'tokens':>7} "
                f"{'seconds':>8}"
            )
            # a bar over the batch sizes on stderr (elapsed, time left); rows go out through tqdm.write
            for batch_size in tqdm(args.batch_sizes, desc=f"{device} batch sizes", unit="batch size"):
                row = {
                    "device": device,
                    "dtype": dtype,
                    **bench(gen, prompts, batch_size, sources if copying else None),
                }
                results.append(row)
                tqdm.write(
                    f"{batch_size:>5} {row['tokens_per_s']:>10.1f} {row['tokens_per_cpu_s']:>10.1f} "
                    f"{row['items_per_s']:>9.2f} "
                    f"{row['ms_per_batch']:>9.1f} {row['tokens']:>7} {row['seconds']:>8.2f}"
                )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"catalog": source, "generator": how, "results": results}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
