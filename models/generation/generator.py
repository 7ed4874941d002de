"""Batched text generation with any causal or seq2seq Hugging Face model, or the project's own small LM.

The model is found by name or local path (``from_pretrained``); ``AutoConfig.is_encoder_decoder`` picks
``AutoModelForSeq2SeqLM`` or ``AutoModelForCausalLM``. Decoder-only models pad on the LEFT so every prompt ends
where generation starts (positions come from the attention mask); seq2seq models pad on the right. On CUDA the
weights load in bf16 (fp16 where bf16 is unsupported), on CPU in fp32. Decoding is greedy by default; sampling
(temperature, top_p) is seeded before every call so a re-run reproduces it. The generator counts model calls
and generated tokens, which the cache tests and the metrics read.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time unless a user opts in

MARKER_FILE = (
    "recgen_generator.json"  # written beside a model trained or fine-tuned by models.generation.train
)


# GenerationSettings fields besides the decoding ones that change what is published for a request: how the
# facts are ordered and spread over readers, how openings are chosen, the second attempt and the guardrails.
OUTPUT_SETTINGS: tuple[str, ...] = (
    "second_attempt",
    "vary_phrasing",
    "fact_order",
    "target_scorer",
    "reader_diversity",
    "batch_diversity",
    "sentence_focus",
    "max_fact_words",
    "max_words",
    "min_words",
    "min_content_words",
    "max_repeated_ngrams",
    "min_sentence_words",
    "grounding_content_words",
    "blocklist",
)


def output_digest(generation_settings: Any) -> str:
    """A short hash of the ``OUTPUT_SETTINGS`` of a ``GenerationSettings`` (part of the cache key)."""
    knobs = {k: getattr(generation_settings, k) for k in OUTPUT_SETTINGS}
    return hashlib.sha1(json.dumps(knobs, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class DecodingConfig:
    """How tokens are chosen: greedy by default, or seeded sampling."""

    max_new_tokens: int = 48
    do_sample: bool = False
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 42
    constrain_to_prompt: bool = False
    no_repeat_ngram_size: int = 0
    copy_context: int = 0  # >0: copy sources word by word with this many words of context (constraints)
    output_digest: str = ""  # the other settings that change the published text (:func:`output_digest`)

    @classmethod
    def from_settings(cls, settings: Any) -> DecodingConfig:
        """The decoding ``settings.generation`` asks for (seeded by ``settings.seed``)."""
        gen = settings.generation
        return cls(
            max_new_tokens=gen.max_new_tokens,
            do_sample=gen.do_sample,
            temperature=gen.temperature,
            top_p=gen.top_p,
            seed=settings.seed,
            constrain_to_prompt=gen.constrain_to_prompt,
            no_repeat_ngram_size=gen.no_repeat_ngram_size,
            copy_context=gen.copy_context if gen.constrain_to_prompt else 0,
            output_digest=output_digest(gen),
        )

    @property
    def signature(self) -> str:
        """A short key that changes whenever the decoding would give different text (part of the cache key)."""
        if not self.do_sample:
            out = f"greedy-{self.max_new_tokens}"
        else:
            out = f"sample-t{self.temperature:g}-p{self.top_p:g}-s{self.seed}-{self.max_new_tokens}"
        if self.constrain_to_prompt:
            out += "-copy"
        if self.no_repeat_ngram_size:
            out += f"-nr{self.no_repeat_ngram_size}"
        if self.copy_context:
            out += f"-k{self.copy_context}"
        if self.output_digest:
            out += f"-o{self.output_digest}"
        return out


@dataclass(frozen=True)
class Generation:
    """One generated text with its token count and the wall time of the batch it was generated in."""

    text: str
    n_tokens: int
    latency_ms: float
    token_ids: tuple[int, ...] = ()
    finished: bool = True  # False when the max_new_tokens budget cut the text before EOS


def resolve_device(device: str = "auto") -> str:
    """``cuda`` when asked for or available under ``auto``, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def model_dtype(device: str) -> torch.dtype:
    """bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def read_marker(name_or_path: str | Path) -> dict[str, Any] | None:
    """The recgen marker of a local model dir (version, prompt format, training figures), if any."""
    path = Path(name_or_path) / MARKER_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return None


def load_model_and_tokenizer(name_or_path: str | Path, device: str = "auto") -> tuple[Any, Any, str]:
    """Load a causal or seq2seq model (chosen by its config) and its tokenizer, ready for batched generation."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = resolve_device(device)
    config = AutoConfig.from_pretrained(str(name_or_path))
    auto_cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto_cls.from_pretrained(str(name_or_path), dtype=model_dtype(device))
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    # Decoder-only: left padding keeps every prompt's last token next to the first generated one.
    tokenizer.padding_side = "right" if config.is_encoder_decoder else "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return model, tokenizer, device


class Generator:
    """A loaded model + tokenizer that turns prompts into texts in batches, counting calls and tokens."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_version: str,
        prompt_format: str = "instruction",
        decoding: DecodingConfig | None = None,
        batch_size: int = 16,
        device: str = "cpu",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_version = model_version
        self.prompt_format = prompt_format
        self.decoding = decoding or DecodingConfig()
        self.batch_size = batch_size
        self.device = device
        self.heldout_items: frozenset[str] = frozenset()  # items its training never saw (from the marker)
        self.n_model_calls = 0
        self.n_generated_tokens = 0
        self.generation_seconds = 0.0
        self.n_second_attempts = 0  # rows written again without splicing after the guardrails rejected them
        # The own LM may never emit a control token (a task, style or field marker) in its answer.
        self.suppressed_ids = self._control_token_ids() if prompt_format == "control" else []
        self._token_kinds: Any = None
        self._template_words: set[tuple[int, ...]] = set()

    def _control_token_ids(self) -> list[int]:
        from models.generation.prompts import SPECIAL_TOKENS

        vocab = self.tokenizer.get_vocab()
        eos = self.tokenizer.eos_token_id
        return sorted(vocab[t] for t in SPECIAL_TOKENS if t in vocab and vocab[t] != eos)

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        decoding: DecodingConfig | None = None,
        batch_size: int = 16,
        device: str = "auto",
    ) -> Generator:
        """Load a model by Hugging Face name or local path; recgen's own dirs carry version and prompt format."""
        model, tokenizer, resolved = load_model_and_tokenizer(name_or_path, device)
        marker = read_marker(name_or_path) or {}
        generator = cls(
            model,
            tokenizer,
            model_version=marker.get("version") or f"hf:{name_or_path}",
            prompt_format=marker.get("prompt_format", "instruction"),
            decoding=decoding,
            batch_size=batch_size,
            device=resolved,
        )
        generator.heldout_items = frozenset(marker.get("heldout_items", ()))
        return generator

    @classmethod
    def from_settings(cls, settings: Any, model_dir: str | Path | None = None) -> Generator:
        """The generator the settings describe: ``model_dir`` (a trained dir) or the configured model."""
        gen = settings.generation
        source = model_dir or gen.model_name_or_path
        if source is None:
            raise ValueError(
                "no generator model: train one (models.generation.train.train_default_lm) and pass its dir, "
                "or set generation.model_name_or_path"
            )
        decoding = DecodingConfig.from_settings(settings)
        return cls.load(source, decoding=decoding, batch_size=gen.batch_size, device=settings.resolved_device)

    @property
    def is_encoder_decoder(self) -> bool:
        """Whether the model is seq2seq (encoder-decoder)."""
        return bool(self.model.config.is_encoder_decoder)

    @property
    def version(self) -> str:
        """Model version, prompt template version and decoding signature: the generator part of every cache key."""
        from models.generation.prompts import PROMPT_VERSION

        return f"{self.model_version}|p{PROMPT_VERSION}|{self.decoding.signature}"

    def version_for(self, generation_settings: Any | None) -> str:
        """:attr:`version` with the output settings of ``generation_settings`` (the cache key of its texts)."""
        if generation_settings is None:
            return self.version
        from models.generation.prompts import PROMPT_VERSION

        decoding = replace(self.decoding, output_digest=output_digest(generation_settings))
        return f"{self.model_version}|p{PROMPT_VERSION}|{decoding.signature}"

    @property
    def max_prompt_tokens(self) -> int:
        """The longest prompt that still leaves room for ``max_new_tokens``."""
        config = self.model.config
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        if self.is_encoder_decoder or not limit:
            model_max = getattr(self.tokenizer, "model_max_length", 512) or 512
            return int(min(limit or model_max, model_max, 4096))
        return int(limit) - self.decoding.max_new_tokens

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` encodes to."""
        return len(self.tokenizer(text)["input_ids"])

    def _generation_kwargs(self, max_new_tokens: int) -> dict[str, Any]:
        tok = self.tokenizer
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": self.decoding.do_sample,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
        }
        if self.decoding.do_sample:
            kwargs.update(temperature=self.decoding.temperature, top_p=self.decoding.top_p, top_k=0)
        if self.decoding.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.decoding.no_repeat_ngram_size
        if self.suppressed_ids:
            kwargs["suppress_tokens"] = self.suppressed_ids
        return kwargs

    def _word_constraint(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """One word trie per prompt: the prompt's words plus the template words (see ``constraints``)."""
        from models.generation import constraints
        from models.generation.prompts import all_templates

        if self._token_kinds is None:
            self._token_kinds = constraints.TokenKinds.of(self.tokenizer)
            texts = [t.format(text="", interest="") for t in all_templates()]
            texts += [".", ",", ":", "!", "?", "-", "'", "(", ")"]
            self._template_words = constraints.template_words(self.tokenizer, self._token_kinds, texts)
        kinds = self._token_kinds
        special = set(self.tokenizer.all_special_ids) | set(self.suppressed_ids)
        end_ids = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        tries = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            kept = [t for t, m in zip(ids, mask, strict=True) if m and t not in special]
            words = set(constraints.split_words(kept, kinds)) | self._template_words
            tries.append(constraints.WordTrie(words, kinds, end_ids))
        offset = 1 if self.is_encoder_decoder else input_ids.shape[1]
        return constraints.PromptWordsProcessor(tries, kinds, offset, self.tokenizer.eos_token_id)

    def _count_new_tokens(self, new_tokens: torch.Tensor) -> list[int]:
        # Tokens up to and including the first EOS; padding after it is not generated text.
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        counts = []
        for row in new_tokens.tolist():
            n = 0
            for token in row:
                n += 1
                if token == eos:
                    break
            else:
                while n and row[n - 1] == pad and pad != eos:
                    n -= 1
            counts.append(n)
        return counts

    def _copy_constraint(self, sources: Sequence[Any], offset: int, context: int | None = None) -> Any:
        """One copy automaton per prompt over its :class:`constraints.CopySource` (openings + sentences)."""
        from models.generation import constraints

        if self._token_kinds is None:
            self._token_kinds = constraints.TokenKinds.of(self.tokenizer)
        kinds = self._token_kinds
        automata = [
            constraints.CopyAutomaton(s, self.tokenizer, kinds, context or self.decoding.copy_context)
            for s in sources
        ]
        return constraints.CopyProcessor(
            automata, kinds, offset, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        )

    @torch.inference_mode()
    def _generate_batch(
        self,
        prompts: list[str],
        max_new_tokens: int,
        sources: Sequence[Any] | None = None,
        copy_context: int | None = None,
    ) -> list[Generation]:
        started = time.perf_counter()
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        if self.decoding.do_sample:
            torch.manual_seed(self.decoding.seed)
        # Start from the model's own generation config (decoder start, forced tokens ...) and override decoding.
        config = copy.deepcopy(self.model.generation_config)
        config.update(**self._generation_kwargs(max_new_tokens))
        extra: dict[str, Any] = {}
        if self.decoding.constrain_to_prompt:
            from transformers import LogitsProcessorList

            if sources is not None and self.decoding.copy_context:
                offset = 1 if self.is_encoder_decoder else enc["input_ids"].shape[1]
                constraint = self._copy_constraint(sources, offset, copy_context)
            else:
                constraint = self._word_constraint(enc["input_ids"], enc["attention_mask"])
            extra["logits_processor"] = LogitsProcessorList([constraint])
        out = self.model.generate(**enc, generation_config=config, **extra)
        # Seq2seq outputs start with the decoder start token; decoder-only outputs repeat the prompt.
        new_tokens = out[:, 1:] if self.is_encoder_decoder else out[:, enc["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        counts = self._count_new_tokens(new_tokens)
        renders = getattr(extra.get("logits_processor", [None])[0], "render", None)
        if renders is not None and self._token_kinds is not None and self._token_kinds.wordpiece:
            # a WordPiece model (uncased BERT2BERT) decodes "lena fischer ... 4, 200": write the copied words
            # as the sources write them instead
            for i, (row, n) in enumerate(zip(new_tokens.tolist(), counts, strict=True)):
                texts[i] = renders(i, row[:n]) or texts[i]
        elapsed = time.perf_counter() - started
        self.n_model_calls += 1
        self.n_generated_tokens += sum(counts)
        self.generation_seconds += elapsed
        rows = new_tokens.tolist()
        eos = self.tokenizer.eos_token_id
        return [
            Generation(" ".join(t.split()), n, elapsed * 1000.0, tuple(row[:n]), eos in row[:n])
            for t, n, row in zip(texts, counts, rows, strict=True)
        ]

    def generate(
        self,
        prompts: list[str],
        max_new_tokens: int | None = None,
        batch_size: int | None = None,
        sources: Sequence[Any] | None = None,
        copy_context: int | None = None,
    ) -> list[Generation]:
        """Generate one text per prompt, in batches of similar length (results keep the prompts' order).

        ``sources`` (one ``constraints.CopySource`` per prompt) switch the prompt constraint to copying them
        word by word with ``copy_context`` (default ``decoding.copy_context``) words of context; without
        them it allows the prompt's words.
        """
        if not prompts:
            return []
        size = batch_size or self.batch_size
        max_new = max_new_tokens or self.decoding.max_new_tokens
        # Batching prompts of similar length wastes less compute on padding; order is restored below.
        order = sorted(range(len(prompts)), key=lambda i: self.count_tokens(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            chunk_sources = [sources[i] for i in chunk] if sources is not None else None
            batch = self._generate_batch([prompts[i] for i in chunk], max_new, chunk_sources, copy_context)
            for i, gen in zip(chunk, batch, strict=True):
                results[i] = gen
        return [r for r in results if r is not None]

    def stats(self) -> dict[str, float]:
        """Calls, tokens, seconds and tokens per second so far."""
        secs = self.generation_seconds
        return {
            "model_calls": self.n_model_calls,
            "generated_tokens": self.n_generated_tokens,
            "generation_seconds": secs,
            "tokens_per_s": self.n_generated_tokens / secs if secs > 0 else 0.0,
            "second_attempts": self.n_second_attempts,
        }
