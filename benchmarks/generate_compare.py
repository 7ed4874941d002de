"""Compare copy generators on held-out items: fallback, faithfulness, distinct-2, personalization lift, CPU cost.

Each candidate is trained here on the catalog minus its held-out items (``generation.heldout_share``), then
writes blurbs and summaries for a fixed panel of readers (two named readers with different profiles plus
seeded random ones) on seen and held-out items, through the same service, guardrails and figures as the
pipeline (``models.generation.evaluation.evaluate``). Candidates:

- ``own-lm-800``: the own small LM at the old budget (800 steps, 2 layers x 128, no item-text corpus);
- ``own-lm``: the own LM as configured now (GenerationSettings defaults: more steps, item-text corpus);
- ``champion``: the registry's champion as the pipeline trained it (nothing trained here);
- ``bert2bert``: MiniLM warm-started encoder-decoder (``EncoderDecoderModel.from_encoder_decoder_pretrained``).

Usage (prints a markdown table, writes JSON with samples):

    RECGEN_TORCH_THREADS=2 .venv/bin/python benchmarks/generate_compare.py --json reports/generate_compare.json
    .venv/bin/python benchmarks/generate_compare.py --candidates own-lm --items 200   # quicker
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from models.generation.evaluation import evaluate, sample_rows  # noqa: E402
from models.generation.generator import DecodingConfig, Generator, read_marker  # noqa: E402
from models.generation.service import (  # noqa: E402
    GenerationRequest,
    content_hash,
    generate_content,
    items_by_id,
)
from models.generation.train import heldout_item_ids, train_default_lm  # noqa: E402
from models.interests import InterestProfile  # noqa: E402
from models.settings import GenerationSettings, get_settings  # noqa: E402

STYLES = ("concise", "casual", "formal", "enthusiastic")


def simulator_items(n: int | None) -> pd.DataFrame:
    """The default simulator's catalog (first ``n`` items), with content hashes."""
    from models.data.simulator import ContentPlatformSimulator, table_to_frame

    items = table_to_frame(ContentPlatformSimulator(get_settings()).items_table())
    items["content_hash"] = [content_hash(t, b) for t, b in zip(items.title, items.body, strict=True)]
    return items.head(n) if n else items


def reader_panel(items: pd.DataFrame, n_random: int, seed: int) -> dict[str, InterestProfile]:
    """Two named readers with different profiles, plus ``n_random`` seeded ones, each in a style."""
    rng = np.random.default_rng(seed)
    cats = sorted(items["category"].unique())
    tags = sorted({t for ts in items["tags"] for t in str(ts).split("|") if t})
    out = {
        "reader_a": InterestProfile(
            "reader_a", [(cats[0], 0.7), (cats[1], 0.3)], [(tags[0], 0.6), (tags[3], 0.4)], [], "casual", 40
        ),
        "reader_b": InterestProfile(
            "reader_b",
            [(cats[-1], 0.8), (cats[2], 0.2)],
            [(tags[-1], 0.5), (tags[-4], 0.5)],
            [],
            "formal",
            40,
        ),
    }
    for i in range(n_random):
        c = rng.choice(cats, size=2, replace=False)
        t = rng.choice(tags, size=2, replace=False)
        w = float(rng.uniform(0.5, 0.9))
        style = STYLES[i % 4]
        out[f"reader_{i:02d}"] = InterestProfile(
            f"reader_{i:02d}",
            [(str(c[0]), w), (str(c[1]), 1 - w)],
            [(str(t[0]), 0.5), (str(t[1]), 0.5)],
            [],
            style,
            20,
        )
    return out


def requests_for(
    items: pd.DataFrame, heldout: set[str], readers: dict[str, InterestProfile], per_split: int, seed: int
) -> list[GenerationRequest]:
    """Every reader x (``per_split`` seen + ``per_split`` held-out items) x (blurb, summary)."""
    texts = items_by_id(items)
    rng = np.random.default_rng(seed)
    seen_ids = sorted(set(texts) - heldout)
    held_ids = sorted(heldout)
    chosen = list(rng.choice(seen_ids, size=min(per_split, len(seen_ids)), replace=False))
    chosen += list(rng.choice(held_ids, size=min(per_split, len(held_ids)), replace=False))
    out = []
    for reader, profile in readers.items():
        # each reader sees a third of the chosen items, the two named readers all of them (same items)
        # a stable hash (Python's str hash differs per process, which made panels differ between runs)
        third = zlib.crc32(reader.encode()) % 3
        mine = chosen if reader in ("reader_a", "reader_b") else chosen[third::3]
        for item_id in mine:
            for task in ("blurb", "summary"):
                out.append(GenerationRequest(reader, texts[str(item_id)], profile, task))
    return out


def style_requests(
    requests: list[GenerationRequest], readers: dict[str, InterestProfile], n_items: int = 5
) -> list[GenerationRequest]:
    """Blurbs in each of the four styles for the two named readers on the same ``n_items`` items (samples)."""
    items = list(dict.fromkeys(r.item.item_id for r in requests if r.user_id == "reader_a"))[:n_items]
    by_id = {r.item.item_id: r.item for r in requests}
    return [
        GenerationRequest(reader, by_id[i], readers[reader], "blurb", style)
        for style in STYLES
        for i in items
        for reader in ("reader_a", "reader_b")
    ]


def bert2bert_dir(out: Path, encoder_path: str) -> Path:
    """A MiniLM-warm-started encoder-decoder saved with its tokenizer, ready for ``fine_tune``."""
    from transformers import AutoTokenizer, EncoderDecoderModel

    tok = AutoTokenizer.from_pretrained(encoder_path)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(encoder_path, encoder_path)
    model.config.decoder_start_token_id = tok.cls_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.sep_token_id
    model.generation_config.decoder_start_token_id = tok.cls_token_id
    model.generation_config.eos_token_id = tok.sep_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    tok.eos_token = tok.sep_token
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def train_candidate(
    name: str, items: pd.DataFrame, work: Path, args: argparse.Namespace, seed: int
) -> tuple[Path, dict]:
    """Train one candidate with ``seed`` (a dir under ``work`` holding the same version is reused)."""
    base = GenerationSettings(heldout_share=args.heldout_share)
    started = time.perf_counter()
    if name == "champion":  # the registry's champion (after the pipeline), not trained here
        from models.generation.artifacts import REGISTRY_NAME, model_location
        from models.registry import ModelRegistry

        champion = ModelRegistry(get_settings().artifacts_dir).champion(REGISTRY_NAME)
        if champion is None:
            raise SystemExit("no generator champion: materialize content_generator first")
        metrics = champion.metrics
        return Path(model_location(champion)), {
            "train_seconds": float(metrics.get("train_seconds") or 0.0),
            "steps": int(champion.config.get("steps") or 0),
            "valid_loss_before": metrics.get("loss_before"),
            "valid_loss_after": metrics.get("loss_after"),
        }
    if name == "own-lm-800":
        settings = base.model_copy(
            update={"train_steps": 800, "train_batch_size": 8, "train_on_corpus": False}
        )
        result = train_default_lm(items, settings, work / f"{name}-s{seed}", seed=seed, device="cpu")
    elif name == "own-lm":
        result = train_default_lm(items, base, work / f"{name}-s{seed}", seed=seed, device="cpu")
        settings = base
    elif name == "bert2bert":
        from models.generation.train import fine_tune

        path = work / "b2b-base"
        if not (path / "config.json").exists():
            bert2bert_dir(path, get_settings().encoder.model_name_or_path)
        settings = base.model_copy(
            update={
                "train_steps": args.b2b_steps,
                "train_batch_size": 8,
                "fine_tune_learning_rate": args.b2b_lr,
                "example_rounds": 1,
            }
        )
        result = fine_tune(
            path, items, settings, work / f"{name}-s{seed}", seed=seed, device="cpu", use_lora=False
        )
    else:
        raise ValueError(f"unknown candidate {name!r}")
    return result.path, {
        # a reused model reports the training time its marker recorded
        "train_seconds": float((read_marker(result.path) or {}).get("seconds", 0.0))
        if result.reused
        else time.perf_counter() - started,
        "steps": settings.train_steps,
        "valid_loss_before": result.loss_before,
        "valid_loss_after": result.loss_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--candidates", nargs="*", default=["own-lm-800", "own-lm", "bert2bert"], help="none with --model-dir"
    )
    parser.add_argument("--items", type=int, default=None, help="first N simulator items (default: all)")
    parser.add_argument("--per-split", type=int, default=30, help="seen and held-out items per reader panel")
    parser.add_argument("--readers", type=int, default=10, help="random readers besides the two named ones")
    parser.add_argument("--heldout-share", type=float, default=0.1)
    parser.add_argument("--b2b-steps", type=int, default=300)
    parser.add_argument("--b2b-lr", type=float, default=1e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds (one model each)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the reader panel and its items")
    parser.add_argument(
        "--workdir", type=Path, help="keep trained candidates here (a dir of the same version is reused)"
    )
    parser.add_argument(
        "--model-dir",
        nargs="+",
        default=[],
        metavar="NAME=DIR",
        help="also evaluate already trained dirs (as candidate NAME, nothing trained; e.g. a model trained by "
        "an earlier run of this script under an older example format)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--samples-from", type=Path, help="print the sample tables of a --json file and stop")
    args = parser.parse_args()
    if args.samples_from:
        for result in json.loads(args.samples_from.read_text())["results"]:
            print(f"## {result['candidate']} (seed {result.get('seed')})\n\n{sample_tables(result)}\n")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    settings = get_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    items = simulator_items(args.items)
    heldout = heldout_item_ids(items, args.heldout_share)
    if args.candidates == ["champion"]:
        path, _ = train_candidate("champion", items, Path("."), args, args.seed)
        heldout = set((read_marker(path) or {}).get("heldout_items", heldout))
    readers = reader_panel(items, args.readers, args.seed)
    requests = requests_for(items, heldout, readers, args.per_split, args.seed)
    texts = items_by_id(items)
    from models.encoders import TextEncoder

    encoder = TextEncoder(settings.encoder.model_name_or_path)
    print(f"catalog: {len(items)} simulator items, {len(heldout)} held out; {len(requests)} requests")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        for spec in args.model_dir:
            name, _, where = spec.partition("=")
            marker = read_marker(where) or {}
            train = {
                "train_seconds": float(marker.get("seconds", 0.0)),
                "steps": int(marker.get("steps", 0)),
                "valid_loss_before": marker.get("loss_before"),
                "valid_loss_after": marker.get("loss_after"),
            }
            results.append(
                evaluate_candidate(name, 0, Path(where), train, requests, texts, readers, heldout, encoder)
            )
        for name in args.candidates:
            for seed in args.seeds if name != "champion" else [args.seed]:
                path, train = train_candidate(name, items, work, args, seed)
                results.append(
                    evaluate_candidate(name, seed, path, train, requests, texts, readers, heldout, encoder)
                )
    keys = [
        ("fallback_rate", "fallback"),
        ("heldout_fallback_rate", "held-out fallback"),
        ("faithfulness", "faithfulness"),
        ("heldout_faithfulness", "held-out faithfulness"),
        ("distinct_2", "distinct-2"),
        ("heldout_distinct_2", "held-out distinct-2"),
        ("distinct_2_copy_ceiling", "copy ceiling of distinct-2"),
        ("personalization_lift", "lift"),
        ("heldout_personalization_lift", "held-out lift"),
        ("style_accuracy", "style acc."),
        ("tokens_per_s", "tokens/s"),
        ("p95_latency_ms", "p95 ms"),
    ]
    print("\n| generator | seeds | params (M) | train s | " + " | ".join(k[1] for k in keys) + " |")
    print("|---" * (4 + len(keys)) + "|")
    for name in dict.fromkeys(r["candidate"] for r in results):
        mine = [r for r in results if r["candidate"] == name]
        cells = []
        for k, _ in keys:
            values = [float(r["figures"][k]) for r in mine if r["figures"][k] is not None]
            mean = float(np.mean(values)) if values else float("nan")
            cells.append(f"{mean:.3f}" + (f" ± {float(np.std(values)):.3f}" if len(values) > 1 else ""))
        train_s = float(np.mean([r["train_seconds"] for r in mine]))
        print(
            f"| {name} | {len(mine)} | {mine[0]['params_m']:.1f} | {train_s:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"requests": len(requests), "args": vars(args), "results": results}, indent=2, default=str
            )
        )
        print(f"\nwrote {args.json}")


def sample_tables(result: dict, per_style: int = 5, n_items: int = 5) -> str:
    """Markdown: ``per_style`` model rows per style, and the two named readers' blurbs of the same items."""
    lines = ["| style | task | item | text |", "|---|---|---|---|"]
    for r in result["samples"]:
        if r["passed_guardrails"]:
            lines.append(f"| {r['style']} | {r['task']} | {r['item_id']} | {r['text']} |")
    named: dict[str, dict[str, str]] = {}
    for r in result["named_readers"]:
        if r["task"] == "blurb":
            named.setdefault(r["item_id"], {})[r["user_id"]] = r["text"] + (
                "" if r["passed_guardrails"] else " (fallback)"
            )
    both = [i for i, by in named.items() if {"reader_a", "reader_b"} <= set(by)][:n_items]
    lines += ["", "| item | reader_a (casual) | reader_b (formal) |", "|---|---|---|"]
    lines += [f"| {i} | {named[i]['reader_a']} | {named[i]['reader_b']} |" for i in both]
    by_style: dict[str, dict[str, dict[str, str]]] = {}
    for r in result.get("style_samples", []):
        text = r["text"] + ("" if r["passed_guardrails"] else " (fallback)")
        by_style.setdefault(r["style"], {}).setdefault(r["item_id"], {})[r["user_id"]] = text
    for style, by_item in by_style.items():
        lines += ["", f"| {style} blurb: item | reader_a | reader_b |", "|---|---|---|"]
        lines += [f"| {i} | {t.get('reader_a', '')} | {t.get('reader_b', '')} |" for i, t in by_item.items()]
    return "\n".join(lines)


def evaluate_candidate(
    name: str,
    seed: int,
    path: Path,
    train: dict,
    requests: list[GenerationRequest],
    texts: dict,
    readers: dict[str, InterestProfile],
    heldout: set[str],
    encoder: object,
) -> dict:
    """Generate the panel's copy with one trained candidate and compute its figures (``evaluate``)."""
    settings = get_settings()
    decoding = DecodingConfig.from_settings(settings)
    gen = Generator.load(path, decoding, batch_size=settings.generation.batch_size, device="cpu")
    n_params = sum(p.numel() for p in gen.model.parameters()) / 1e6
    before = gen.stats()
    rows = generate_content(requests, gen, None, settings.generation)
    after = gen.stats()
    secs = after["generation_seconds"] - before["generation_seconds"]
    stats = {
        "tokens_per_s": (after["generated_tokens"] - before["generated_tokens"]) / max(secs, 1e-9),
        "second_attempts": after["second_attempts"] - before["second_attempts"],
    }
    figures = evaluate(rows, texts, readers, stats, heldout_items=heldout, embed=encoder.encode)  # type: ignore[attr-defined]
    named = [r for r in rows if r.user_id in ("reader_a", "reader_b")]
    # samples only (not in the figures): the two named readers' blurbs in every style on the same items
    styled = generate_content(style_requests(requests, readers), gen, None, settings.generation)
    print(
        f"{name} seed {seed}: fallback {figures['fallback_rate']:.3f} heldout {figures['heldout_fallback_rate']:.3f} "
        f"faith {figures['faithfulness']:.3f} d2 {figures['distinct_2']:.3f} "
        f"lift {figures['personalization_lift']:.4f} train {train['train_seconds']:.0f}s "
        f"tok/s {stats['tokens_per_s']:.0f} reasons {figures['fallback_reasons']}",
        flush=True,
    )
    return {
        "candidate": name,
        "seed": seed,
        "params_m": n_params,
        **train,
        "generate_seconds": secs,
        "figures": figures,
        "samples": [r.to_dict() for r in sample_rows(rows, 5)],
        "named_readers": [r.to_dict() for r in named],
        "style_samples": [r.to_dict() for r in styled],
    }


if __name__ == "__main__":
    main()
