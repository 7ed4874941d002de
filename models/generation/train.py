"""Train the default generator (a small GPT-2-style LM from scratch) or fine-tune a configured pretrained model.

No pretrained generative model ships offline (shared/ASSETS.md), so the embedded default is trained on the
catalog itself: a byte-level BPE tokenizer (``tokenizers``) and a ``GPT2LMHeadModel`` learn control-prefixed
examples ``<task=..> <style=..> <interests>..</interests> <title>..</title> <facts>..</facts> <out> target``
whose targets are :func:`prompts.reference_output` of the item's own text, so the model learns to copy from
the facts it is given. The loss covers only the target tokens. Both paths save with ``save_pretrained``
(model + tokenizer) plus a marker file (version, prompt format, losses) that :class:`Generator` reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from models.generation.generator import MARKER_FILE, model_dtype, read_marker, resolve_device
from models.generation.prompts import (
    EOS_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    STYLED_TASKS,
    STYLES,
    PromptFields,
    build_prompt,
    fact_text,
    fit_reason,
    resolve_style,
    training_target,
)
from models.generation.relevance import SentenceScorer, minilm_scorer, overlap_scorer, ranked_sentences
from models.generation.text import words_of
from models.progress import EpochProgress

log = logging.getLogger(__name__)

FORMAT_VERSION = 6  # bump when the example format changes, so old artifacts get new versions
# How often each task appears per item per round: blurbs and style transfer vary with interests and style.
TASK_MIX: tuple[str, ...] = ("summary", "title", "blurb", "blurb", "style_transfer", "style_transfer")
EVAL_EXAMPLES = 64


@dataclass(frozen=True)
class TrainResult:
    """Where a trained generator was saved and how training went."""

    path: Path
    version: str
    prompt_format: str
    base_model: str | None
    loss_before: float
    loss_after: float
    steps: int
    n_examples: int
    seconds: float
    device: str
    reused: bool = False
    heldout_items: tuple[str, ...] = ()  # items kept out of training (the held-out evaluation's)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def item_terms(row: Any) -> list[str]:
    """An item's category and tags as plain terms."""
    tags = [t for t in str(getattr(row, "tags", "") or "").split("|") if t]
    category = getattr(row, "category", None)
    return [str(category), *tags] if category else tags


def heldout_item_ids(items: pd.DataFrame, share: float) -> set[str]:
    """Items kept out of training (by a hash of the item id, so the split is stable as the catalog grows)."""
    if share <= 0:
        return set()
    out = set()
    for item_id in items["item_id"].astype(str):
        bucket = int(hashlib.md5(f"heldout:{item_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if bucket < share:
            out.add(item_id)
    return out


def _synthetic_profile(
    rng: random.Random, own: list[str], vocabulary: list[str], body_words: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """Categories, tags and keywords of a made-up reader: often sharing one of the item's terms, often not."""
    categories = [rng.choice(vocabulary)]
    if own and rng.random() < 0.6:
        categories.insert(rng.randrange(2), own[0])
    tags = rng.sample(vocabulary, k=min(len(vocabulary), rng.randint(0, 2)))
    if len(own) > 1 and rng.random() < 0.4:
        tags.insert(0, rng.choice(own[1:]))
    keywords = rng.sample(body_words, k=min(len(body_words), rng.randint(0, 2))) if body_words else []
    return list(dict.fromkeys(categories)), list(dict.fromkeys(tags))[:2], keywords


def build_examples(
    items: pd.DataFrame,
    seed: int = 0,
    rounds: int = 1,
    max_fact_words: int = 60,
    max_words: int = 40,
    prompt_format: str = "control",
    scorer: SentenceScorer | None = None,
) -> list[tuple[str, str]]:
    """(prompt, target) pairs for every item and task, with synthetic readers and styles drawn by a seeded RNG.

    Targets vary: several phrasings per style (``prompts.training_target``), for blurbs the fact sentence most
    relevant to the reader's profile (``scorer``: MiniLM similarity by default, word overlap as a cheap
    stand-in) introduced by why the item fits (the explanation's reason, when the item carries one of the
    reader's terms). The extractive fallback is one of the possible targets, never the only one.
    """
    from models.generation.text import split_sentences

    rng = random.Random(seed)
    score = scorer or overlap_scorer
    rows = list(items.itertuples(index=False))
    vocabulary = sorted({t for row in rows for t in item_terms(row)})
    examples: list[tuple[str, str]] = []
    for _ in range(rounds):
        for row in rows:
            own = item_terms(row)
            facts = fact_text(str(row.body or ""), max_fact_words)
            sentences = split_sentences(facts)
            body_words = sorted({w for w in words_of(facts) if len(w) >= 5 and not w.isdigit()})
            for task in TASK_MIX:
                style = (
                    resolve_style(task, rng.choice(STYLES))
                    if task in STYLED_TASKS
                    else resolve_style(task, None)
                )
                interests: tuple[str, ...] = ()
                weights: tuple[float, ...] = ()
                fit = None
                sentence = None
                shown = facts
                if task == "blurb":
                    cats, tags, keywords = _synthetic_profile(rng, own, vocabulary, body_words)
                    terms = [*cats, *tags, *keywords]
                    raw = [rng.random() + 0.1 for _ in terms]
                    interests = tuple(terms)
                    weights = tuple(round(w / sum(raw), 2) for w in raw)
                    fit = fit_reason(
                        cats, tags, keywords, own[0] if own else "", own[1:], f"{row.title} {row.body}"
                    )
                    # as served: the prompt shows the sentences most relevant to the reader first, and the
                    # target copies the most relevant one
                    ranked = ranked_sentences(str(row.body or ""), terms, score)
                    shown = fact_text(" ".join(ranked), max_fact_words)
                    sentence = next(iter(split_sentences(shown)), None)
                elif task == "style_transfer" and sentences:
                    sentence = sentences[0] if rng.random() < 0.6 else rng.choice(sentences)
                # The target is built from the facts the prompt shows, so every target is copyable from it.
                fields = PromptFields(
                    task=task,
                    style=style,
                    title=str(row.title or ""),
                    body=shown,
                    interests=interests,
                    weights=weights,
                    fit=fit,
                )
                target = training_target(fields, rng, sentence, max_words=max_words)
                if target:
                    examples.append((build_prompt(fields, prompt_format, max_fact_words), target))
    return examples


def corpus_examples(items: pd.DataFrame) -> list[tuple[str, str]]:
    """The items' own titles and sentences as plain language-model text (empty prompt): fluency, not copying."""
    out = []
    for row in items.itertuples(index=False):
        out.append(("", str(row.title or "")))
        out.append(("", str(row.body or "")))
    return [(p, t) for p, t in out if t.strip()]


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``, with recgen's control tokens as special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # One token per digit: a small model copies "4,200" digit by digit far more reliably than as merged chunks.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (PAD_TOKEN, EOS_TOKEN)],
        model_max_length=100_000,
    )


def _encode_causal(
    tokenizer: Any, examples: list[tuple[str, str]], max_len: int
) -> list[tuple[list[int], int]]:
    # (ids, prompt_length); examples longer than the context are dropped rather than cut mid-target.
    eos = tokenizer.eos_token_id
    out = []
    for prompt, target in examples:
        # plain corpus text (no prompt) starts after an EOS, like a new document
        p_ids = tokenizer(prompt)["input_ids"] if prompt else [eos]
        t_ids = tokenizer(" " + target)["input_ids"] + [eos]
        if len(p_ids) + len(t_ids) <= max_len:
            out.append((p_ids + t_ids, len(p_ids)))
    return out


def _encode_seq2seq(
    tokenizer: Any, examples: list[tuple[str, str]], max_len: int
) -> list[tuple[list[int], list[int]]]:
    out = []
    eos = tokenizer.eos_token_id
    for prompt, target in examples:
        src = tokenizer(prompt)["input_ids"][:max_len]
        tgt = tokenizer(target)["input_ids"]
        if eos is not None and (not tgt or tgt[-1] != eos):
            tgt = [*tgt, eos]
        out.append((src, tgt[:max_len]))
    return out


def _padded(rows: list[list[int]], value: int) -> torch.Tensor:
    """The rows as one long tensor, each right-padded with ``value`` to the longest."""
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def _batch(inputs: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, their attention mask, and labels padded with -100 (no loss)."""
    return {
        "input_ids": _padded(inputs, pad_id),
        "attention_mask": _padded([[1] * len(ids) for ids in inputs], 0),
        "labels": _padded(labels, -100),
    }


def _causal_batch(encoded: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    # Loss on the answer only: the prompt is given, the model must learn to produce the target.
    labels = [[-100] * n_prompt + ids[n_prompt:] for ids, n_prompt in encoded]
    return _batch([ids for ids, _ in encoded], labels, pad_id)


def _seq2seq_batch(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    return _batch([src for src, _ in encoded], [tgt for _, tgt in encoded], pad_id)


def _mean_loss(model: Any, batches: list[dict[str, torch.Tensor]], device: str) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            out = model(**{k: v.to(device) for k, v in batch.items()})
            total += float(out.loss) * len(batch["input_ids"])
            n += len(batch["input_ids"])
    return total / max(n, 1)


def _length(example: Any) -> int:
    # causal: (ids, prompt_length); seq2seq: (source ids, target ids)
    first, second = example
    return len(first) + (len(second) if isinstance(second, list) else 0)


def _train_loop(
    model: Any,
    make_batch: Any,
    encoded: list[Any],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    device: str,
    seed: int,
    valid: list[Any] | None = None,
    name: str = "generator",
    blocks: int = 10,
) -> tuple[float, float]:
    """AdamW with linear warm-up and cosine decay; returns the validation loss before and after.

    The validation loss is the mean over up to EVAL_EXAMPLES of ``valid`` (examples of held-out items) drawn
    with ``seed + 1``, in batches of 16; without ``valid`` it falls back to a sample of the training examples.
    Progress is logged with :class:`EpochProgress` once per block of ``steps / blocks`` steps.
    """
    pool = valid if valid else encoded
    eval_set = random.Random(seed + 1).sample(pool, k=min(EVAL_EXAMPLES, len(pool)))
    eval_batches = [make_batch(eval_set[i : i + 16]) for i in range(0, len(eval_set), 16)]
    loss_before = _mean_loss(model, eval_batches, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    rng = random.Random(seed)
    use_amp = device.startswith("cuda")
    amp_dtype = model_dtype(device) if use_amp else torch.float32
    # Batches of neighbours in length order (from a random start) waste little compute on padding.
    by_length = sorted(range(len(encoded)), key=lambda i: (_length(encoded[i]), i))
    blocks = max(1, min(blocks, steps))
    bounds = [round(steps * (b + 1) / blocks) for b in range(blocks)]
    loss_after = loss_before
    step = 0
    valid_name = "valid_loss" if valid else "train_sample_loss"
    with EpochProgress(name, total=blocks, log=log, unit="block") as progress:
        for bound in bounds:
            model.train()
            total, n = 0.0, 0
            while step < bound:
                start = rng.randrange(max(1, len(by_length) - batch_size + 1))
                batch = make_batch([encoded[i] for i in by_length[start : start + batch_size]])
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=use_amp):
                    loss = model(**batch).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                total += float(loss.detach())
                n += 1
                step += 1
            loss_after = _mean_loss(model, eval_batches, device)
            progress.step(loss=total / max(n, 1), **{valid_name: loss_after, "steps": step})
    return loss_before, loss_after


def catalog_fingerprint(items: pd.DataFrame) -> str:
    """A hash of the catalog's texts (content hashes when present), part of the model version."""
    if "content_hash" in items.columns:
        keys = sorted(items["content_hash"].astype(str))
    else:
        keys = sorted((items["title"].astype(str) + "\n" + items["body"].astype(str)).tolist())
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()


def lm_version(items: pd.DataFrame, settings: Any, seed: int, base: str | None = None) -> str:
    """Deterministic version of a generator trained on ``items`` with ``settings`` (same inputs, same version)."""
    knobs = {
        "format": FORMAT_VERSION,
        "base": base,
        "seed": seed,
        "catalog": catalog_fingerprint(items),
        **{
            k: getattr(settings, k)
            for k in (
                "train_steps",
                "train_batch_size",
                "learning_rate",
                "vocab_size",
                "n_layer",
                "n_embd",
                "n_head",
                "n_positions",
                "max_fact_words",
                "use_lora",
                "lora_r",
                "heldout_share",
                "target_scorer",
                "example_rounds",
                "train_on_corpus",
            )
        },
    }
    digest = hashlib.sha1(json.dumps(knobs, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{'ft' if base else 'lm'}-{digest}"


def _save(model: Any, tokenizer: Any, output_dir: Path, marker: dict[str, Any]) -> None:
    # Write into a temp dir and rename, so a crash never leaves a half-written model behind a version.
    tmp = output_dir.with_name(f"{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2, default=str))
    shutil.rmtree(output_dir, ignore_errors=True)
    tmp.rename(output_dir)


def _reused(output_dir: Path, version: str) -> TrainResult | None:
    marker = read_marker(output_dir)
    if not marker or marker.get("version") != version:
        return None
    return TrainResult(
        path=output_dir,
        version=version,
        prompt_format=marker["prompt_format"],
        base_model=marker.get("base_model"),
        loss_before=float(marker["loss_before"]),
        loss_after=float(marker["loss_after"]),
        steps=int(marker["steps"]),
        n_examples=int(marker["n_examples"]),
        seconds=0.0,
        device=str(marker.get("device", "cpu")),
        reused=True,
        heldout_items=tuple(marker.get("heldout_items", ())),
    )


def train_default_lm(
    items: pd.DataFrame,
    settings: Any,
    output_dir: str | Path,
    seed: int = 42,
    device: str = "auto",
    reuse: bool = True,
) -> TrainResult:
    """Train tokenizer + small GPT-2 on the catalog's texts and save both to ``output_dir``.

    ``settings`` is a ``GenerationSettings``. With ``reuse``, a dir already holding the same version is
    returned as is (training is deterministic for the same catalog, settings and seed).
    """
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    output_dir = Path(output_dir)
    version = lm_version(items, settings, seed)
    if reuse and (found := _reused(output_dir, version)):
        return found
    device = resolve_device(device)
    started = time.perf_counter()
    torch.manual_seed(seed)
    heldout = heldout_item_ids(items, settings.heldout_share)
    train_items = items[~items["item_id"].astype(str).isin(heldout)]
    valid_items = items[items["item_id"].astype(str).isin(heldout)]
    scorer = minilm_scorer() if settings.target_scorer == "minilm" else overlap_scorer
    examples = build_examples(
        train_items,
        seed=seed,
        rounds=settings.example_rounds,
        max_fact_words=settings.max_fact_words,
        scorer=scorer,
    )
    valid_examples = build_examples(
        valid_items, seed=seed + 7, rounds=1, max_fact_words=settings.max_fact_words, scorer=scorer
    )
    lm_text = corpus_examples(train_items) if settings.train_on_corpus else []
    # The tokenizer sees the training items only: held-out items are text the model never met.
    corpus = [
        *train_items["title"].astype(str),
        *train_items["body"].astype(str),
        *(p + " " + t for p, t in examples),
    ]
    tokenizer = train_tokenizer(corpus, settings.vocab_size)
    encoded = _encode_causal(tokenizer, examples + lm_text, settings.n_positions)
    valid_encoded = _encode_causal(tokenizer, valid_examples, settings.n_positions)
    if not encoded:
        raise ValueError("no training example fits n_positions; raise generation.n_positions")
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=settings.n_positions,
        n_embd=settings.n_embd,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config).to(device)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    loss_before, loss_after = _train_loop(
        model,
        lambda b: _causal_batch(b, pad),
        encoded,
        steps=settings.train_steps,
        batch_size=settings.train_batch_size,
        learning_rate=settings.learning_rate,
        device=device,
        seed=seed,
        valid=valid_encoded,
        name="content_generator (own LM)",
    )
    seconds = time.perf_counter() - started
    result = TrainResult(
        path=output_dir,
        version=version,
        prompt_format="control",
        base_model=None,
        loss_before=loss_before,
        loss_after=loss_after,
        steps=settings.train_steps,
        n_examples=len(encoded),
        seconds=seconds,
        device=device,
        heldout_items=tuple(sorted(heldout)),
    )
    model.to("cpu")
    _save(model, tokenizer, output_dir, _marker(result, items))
    return result


def _marker(result: TrainResult, items: pd.DataFrame) -> dict[str, Any]:
    marker = result.to_dict()
    marker.pop("path")
    marker.pop("reused")
    marker.update(trained_at=datetime.now(UTC).isoformat(), n_items=len(items))
    return marker


def fine_tune(
    pretrained_name_or_path: str | Path,
    items: pd.DataFrame,
    settings: Any,
    output_dir: str | Path,
    seed: int = 42,
    device: str = "auto",
    use_lora: bool | None = None,
    reuse: bool = True,
) -> TrainResult:
    """Fine-tune a pretrained causal or seq2seq model on the catalog's examples (LoRA if asked and available).

    A recgen-trained base keeps its control prompt format; any other model learns the instruction format.
    LoRA needs the optional ``peft`` package; with ``use_lora`` and no ``peft`` this raises ``RuntimeError``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    use_lora = settings.use_lora if use_lora is None else use_lora
    if use_lora:
        try:
            import peft
        except ImportError as exc:
            raise RuntimeError(
                "generation.use_lora=True needs the optional 'peft' package, which is not installed; "
                "install peft or set RECGEN_GENERATION__USE_LORA=false for full fine-tuning"
            ) from exc
    output_dir = Path(output_dir)
    base = str(pretrained_name_or_path)
    version = lm_version(items, settings, seed, base=base)
    if reuse and (found := _reused(output_dir, version)):
        return found
    device = resolve_device(device)
    started = time.perf_counter()
    torch.manual_seed(seed)
    base_marker = read_marker(base) or {}
    prompt_format = base_marker.get("prompt_format", "instruction")
    config = AutoConfig.from_pretrained(base)
    is_seq2seq = bool(config.is_encoder_decoder)
    auto_cls = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    # Train in fp32 weights (autocast handles bf16/fp16 on GPU); half-precision weights lose small updates.
    model = auto_cls.from_pretrained(base, dtype=torch.float32).to(device)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 512
    heldout = heldout_item_ids(items, settings.heldout_share)
    held = items["item_id"].astype(str).isin(heldout)
    scorer = minilm_scorer() if settings.target_scorer == "minilm" else overlap_scorer
    examples = build_examples(
        items[~held],
        seed=seed,
        rounds=settings.example_rounds,
        max_fact_words=settings.max_fact_words,
        prompt_format=prompt_format,
        scorer=scorer,
    )
    valid_examples = build_examples(
        items[held],
        seed=seed + 7,
        max_fact_words=settings.max_fact_words,
        prompt_format=prompt_format,
        scorer=scorer,
    )
    pad = tokenizer.pad_token_id
    if is_seq2seq:
        encoded: list[Any] = _encode_seq2seq(tokenizer, examples, int(limit))
        valid_encoded: list[Any] = _encode_seq2seq(tokenizer, valid_examples, int(limit))

        def make_batch(b: list[Any]) -> dict[str, torch.Tensor]:
            return _seq2seq_batch(b, pad)
    else:
        encoded = _encode_causal(tokenizer, examples, int(limit))
        valid_encoded = _encode_causal(tokenizer, valid_examples, int(limit))

        def make_batch(b: list[Any]) -> dict[str, torch.Tensor]:
            return _causal_batch(b, pad)

    if not encoded:
        raise ValueError(f"no training example fits the model's context of {limit} tokens")
    if use_lora:
        lora = peft.LoraConfig(
            r=settings.lora_r,
            lora_alpha=2 * settings.lora_r,
            lora_dropout=0.05,
            target_modules="all-linear",
            task_type="SEQ_2_SEQ_LM" if is_seq2seq else "CAUSAL_LM",
        )
        model = peft.get_peft_model(model, lora)
    loss_before, loss_after = _train_loop(
        model,
        make_batch,
        encoded,
        steps=settings.train_steps,
        batch_size=settings.train_batch_size,
        learning_rate=settings.fine_tune_learning_rate,
        device=device,
        seed=seed,
        valid=valid_encoded,
        name=f"content_generator (fine-tune {base})",
    )
    if use_lora:
        model = model.merge_and_unload()  # plain weights: the loader then needs no peft
    result = TrainResult(
        path=output_dir,
        version=version,
        prompt_format=prompt_format,
        base_model=base,
        loss_before=loss_before,
        loss_after=loss_after,
        steps=settings.train_steps,
        n_examples=len(encoded),
        seconds=time.perf_counter() - started,
        device=device,
        heldout_items=tuple(sorted(heldout)),
    )
    model.to("cpu")
    _save(model, tokenizer, output_dir, _marker(result, items))
    return result
