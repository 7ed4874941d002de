"""Generator: loading by local path (causal and seq2seq), left padding, counters, seeded sampling."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.generation.generator import DecodingConfig, Generator
from models.generation.prompts import PROMPT_VERSION, PromptFields, build_prompt
from models.generation.service import items_by_id
from models.generation.train import TrainResult


def _prompts(catalog, n: int = 6) -> list[str]:  # noqa: ANN001 - DataFrame
    items = list(items_by_id(catalog).values())[:n]
    # different tasks and interests make prompts of different lengths, so a batch needs padding
    tasks = ["blurb", "summary", "title"]
    return [
        build_prompt(
            PromptFields(
                tasks[i % 3], "casual" if i % 3 == 0 else "concise", it.title, it.body, ("sports",) * (i % 2)
            )
        )
        for i, it in enumerate(items)
    ]


def test_loads_own_model_from_local_path(tiny_model: TrainResult, generator: Generator) -> None:
    assert type(generator.model).__name__ == "GPT2LMHeadModel"
    assert not generator.is_encoder_decoder
    assert generator.model_version == tiny_model.version and generator.prompt_format == "control"
    assert generator.tokenizer.padding_side == "left" and generator.tokenizer.pad_token == "<pad>"
    # prompt templates v5; greedy, 16 new tokens, prompt-constrained ("copy"): the settings' decoding
    assert generator.version == f"{tiny_model.version}|p{PROMPT_VERSION}|greedy-16-copy"
    assert (Path(tiny_model.path) / "model.safetensors").exists()


def test_batched_and_single_generation_agree_under_greedy(generator: Generator, catalog) -> None:  # noqa: ANN001
    prompts = _prompts(catalog)
    lengths = {generator.count_tokens(p) for p in prompts}
    assert len(lengths) > 1  # the batch really is padded
    batched = generator.generate(prompts, batch_size=len(prompts))
    single = [generator.generate([p], batch_size=1)[0] for p in prompts]
    assert [b.token_ids for b in batched] == [s.token_ids for s in single]
    assert [b.text for b in batched] == [s.text for s in single]
    assert generator.n_model_calls == 1 + len(prompts)
    assert generator.n_generated_tokens == 2 * sum(b.n_tokens for b in batched)


def test_right_padding_would_break_batching(generator: Generator, catalog) -> None:  # noqa: ANN001
    # Guard that the agreement test can fail: with right padding, a short prompt's next token is read at a pad
    # position, so its logits differ from the prompt run alone; with left padding (the generator's) they agree.
    # Logits, not decoded text: the tiny model's greedy (and copy-constrained) choices can survive the change.
    import torch

    prompts = _prompts(catalog)
    tok, model = generator.tokenizer, generator.model
    with torch.no_grad():
        alone = [model(**tok([p], return_tensors="pt")).logits[0, -1] for p in prompts]
        batched = {}
        for side in ("left", "right"):
            tok.padding_side = side
            enc = tok(prompts, return_tensors="pt", padding=True)
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # as generate() derives them
            batched[side] = model(**enc, position_ids=positions).logits[:, -1]
    tok.padding_side = "left"
    shorter = [i for i, p in enumerate(prompts) if generator.count_tokens(p) < enc["input_ids"].shape[1]]
    assert shorter
    assert all(torch.allclose(batched["left"][i], alone[i], atol=1e-3) for i in range(len(prompts)))
    assert not any(torch.allclose(batched["right"][i], alone[i], atol=1e-3) for i in shorter)


def test_sampling_is_seeded(tiny_model: TrainResult, catalog) -> None:  # noqa: ANN001
    sampling = DecodingConfig(max_new_tokens=12, do_sample=True, temperature=1.5, top_p=1.0, seed=7)
    gen = Generator.load(tiny_model.path, sampling, device="cpu")
    prompts = _prompts(catalog, 4)
    first = [g.token_ids for g in gen.generate(prompts)]
    again = [g.token_ids for g in gen.generate(prompts)]
    assert first == again
    assert gen.version.endswith("|sample-t1.5-p1-s7-12")
    greedy = Generator.load(tiny_model.path, DecodingConfig(max_new_tokens=12), device="cpu")
    assert first != [g.token_ids for g in greedy.generate(prompts)]


def test_max_new_tokens_budget(generator: Generator, catalog) -> None:  # noqa: ANN001
    outs = generator.generate(_prompts(catalog, 3), max_new_tokens=5)
    assert all(1 <= o.n_tokens <= 5 and len(o.token_ids) == o.n_tokens for o in outs)


def test_seq2seq_model_loads_with_right_padding(tmp_path: Path, tiny_model: TrainResult) -> None:
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model.path)
    config = transformers.T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=2,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    path = tmp_path / "t5"
    transformers.T5ForConditionalGeneration(config).save_pretrained(path)
    tok.save_pretrained(path)
    gen = Generator.load(path, DecodingConfig(max_new_tokens=6), device="cpu")
    assert gen.is_encoder_decoder and type(gen.model).__name__ == "T5ForConditionalGeneration"
    assert gen.tokenizer.padding_side == "right" and gen.prompt_format == "instruction"
    assert gen.model_version == f"hf:{path}"
    prompts = ["Summarize: a b c", "Summarize: a much longer prompt about the Lisbon marathon"]
    outs = gen.generate(prompts)
    # an untrained model may emit only padding (0 text tokens); the budget and the batching still hold
    assert gen.n_model_calls == 1 and all(o.n_tokens <= 6 and len(o.token_ids) == o.n_tokens for o in outs)
    assert [o.token_ids for o in outs] == [gen.generate([p])[0].token_ids for p in prompts]
