"""The embedded default dataset: a content platform simulated with a known click model.

Users have a latent interest vector over topics; items have a topic mixture, a creator (large or
independent) and a latent popularity. Every feed request shows a slate chosen by a logging policy (a mix of
popular, random and mildly personalized picks among items already published), in random order, and each
shown item is clicked with the ground-truth probability

    P(click) = examination(position) * sigmoid(logit) * (1 - creator_bias if independent else 1)
    examination(position) = 1 / (1 + position) ** position_bias
    logit = interest_weight * interest(u, t) . topics(i) + popularity_bias * z(log popularity) - click_offset

where interest(u, t) moves linearly from the user's initial vector towards one drift topic, with weight
``drift_strength * t / n_days``. Clicks are followed by a dwell event (longer for more relevant items) and,
for ``rating_share`` of them, by a 1..5 rating that rises with relevance. :class:`ContentPlatformSimulator`
exposes that ground truth so tests and evaluations can compare what a model learns against it.

Users and items are drawn up front as small numeric arrays (numpy ``Generator`` seeded by ``seed``); their
texts and the event log are produced chunk by chunk. The event log's random numbers are addressed by
coordinates (user, day, request, slot) through a counter-based generator rather than drawn from a stream, so
a user's events do not depend on which chunk the user falls in: ``simulate`` and ``simulate_to_parquet``
give identical rows for any ``chunk_users``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.data.schema import (
    CREATOR_GROUPS,
    EVENT_TYPES,
    EVENTS,
    ITEMS,
    RAW_TABLES,
    STYLES,
    USERS,
    TableSchema,
)
from models.data.vocab import BODY_TEMPLATES, MONTHS, TITLE_TEMPLATES, TOPICS, WEEKDAYS, TopicVocabulary
from models.settings import Settings, SimulatorSettings

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND

USER_GROUPS = ("18-29", "30-49", "50+")
USER_GROUP_SHARES = (0.35, 0.40, 0.25)
# Younger users open the feed more often: groups differ in data volume, as on real platforms, which is what
# per-group evaluation (fairness reports) should be able to see. The shares above keep the mean near 1.
USER_GROUP_ACTIVITY = (1.25, 1.0, 0.7)
REGIONS = ("north", "south", "east", "west")
STYLE_SHARES = (0.3, 0.3, 0.2, 0.2)

INTEREST_CONCENTRATION = 0.25  # Dirichlet alpha: small = a user cares about one or two topics
LARGE_CREATOR_OUTPUT = 3.0  # a large creator publishes this many items for one of an independent creator
CREATOR_TOPIC_LOYALTY = 0.7  # share of a creator's items in the creator's own topic
BACKLOG_DAYS = 90  # items published before the window are spread over this many days before it

# Logging policy: each slot of a slate comes from one of three sources.
LOGGING_MIX = {"popular": 0.35, "random": 0.35, "personal": 0.30}
POPULAR_SHARPNESS = 1.5  # popular picks are drawn with weight exp(sharpness * z(log popularity))

ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "TIMESTAMP": pa.timestamp("us"),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
}


def arrow_schema(table: TableSchema) -> pa.Schema:
    """The Arrow schema of a raw table (what the Parquet snapshot stores)."""
    return pa.schema(
        [pa.field(c.name, ARROW_TYPES[c.duckdb_type], nullable=c.nullable) for c in table.columns]
    )


@dataclass
class RawDataset:
    """The three raw tables of one dataset, in the columns of ``models.data.schema``."""

    users: pd.DataFrame
    items: pd.DataFrame
    events: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        """The frames by raw table name."""
        return {"users": self.users, "items": self.items, "events": self.events}


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table in a raw schema as pandas: object strings, ``datetime64[ns]``, nullable ``Int32``."""
    frame = table.to_pandas()
    for field in table.schema:
        if pa.types.is_timestamp(field.type):
            frame[field.name] = frame[field.name].astype("datetime64[ns]")
        elif pa.types.is_int32(field.type):
            frame[field.name] = frame[field.name].astype("Int32")
    return frame


# --- counter-based random numbers ------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijective, well-mixing hash of 64-bit integers (wraps on overflow)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


class _CoordinateRandom:
    """Uniform numbers addressed by integer coordinates: the same (stream, coords) always give the same value.

    Each value hashes the seed, a stream number (one per purpose, so clicks and dwell never share numbers)
    and the coordinates; arrays of coordinates broadcast like numpy arithmetic.
    """

    def __init__(self, seed: int) -> None:
        self._base = _splitmix(np.uint64(seed % 2**64))

    def key(self, stream: int, *coords: np.ndarray | int) -> np.ndarray:
        h = _splitmix(self._base ^ np.uint64(stream))
        for c in coords:
            h = _splitmix(h ^ np.asarray(c).astype(np.uint64))
        return h

    def uniform(self, stream: int, *coords: np.ndarray | int) -> np.ndarray:
        # The top 53 bits give a double in [0, 1) with full resolution.
        return (self.key(stream, *coords) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def normal(self, stream: int, *coords: np.ndarray | int) -> np.ndarray:
        # Box-Muller from two independent streams; 1 - u keeps log away from 0.
        u1 = self.uniform(stream, *coords)
        u2 = self.uniform(stream + 1_000_003, *coords)
        return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


# One stream number per random quantity of the event log.
_S_COUNT, _S_TIME, _S_SOURCE, _S_PICK, _S_TOPIC, _S_FILL, _S_ORDER = 1, 2, 3, 4, 5, 6, 7
_S_CLICK, _S_DELAY, _S_DWELL, _S_RATED, _S_RATING, _S_REQUEST = 8, 9, 10, 11, 12, 13
_EVENT_CODES = {name: i for i, name in enumerate(EVENT_TYPES)}
_EVENT_SUFFIX = {"impression": "i", "click": "c", "dwell": "d", "rating": "r"}


def _poisson_from_uniform(u: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Poisson(lam) draws by inverting the CDF at ``u`` (vectorized; fine for the small rates used here)."""
    lam = np.broadcast_to(lam, u.shape).astype(np.float64)
    k = np.zeros(u.shape, dtype=np.int64)
    p = np.exp(-lam)
    cdf = p.copy()
    active = u > cdf
    n = 0
    while active.any() and n < 1000:
        n += 1
        k[active] += 1
        p = p * lam / n
        cdf = cdf + p
        active &= u > cdf
    return k


def _first_unique(candidates: np.ndarray, k: int) -> np.ndarray:
    """Per row, the first ``k`` distinct non-negative values in column order (-1 where a row has fewer)."""
    rows, cols = candidates.shape
    order = np.argsort(candidates, axis=1, kind="stable")
    ordered = np.take_along_axis(candidates, order, axis=1)
    repeat_sorted = np.zeros_like(ordered, dtype=bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    keep = ~repeat & (candidates >= 0)
    keep &= np.cumsum(keep, axis=1) <= k
    out = np.full((rows, k), -1, dtype=candidates.dtype)
    slot = np.cumsum(keep, axis=1) - 1
    r, c = np.nonzero(keep)
    out[r, slot[r, c]] = candidates[r, c]
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class _DayPool:
    """Items the logging policy may show on one day, grouped by main topic, with popularity weights."""

    items: np.ndarray  # global item indices, sorted by main topic
    popular_cdf: np.ndarray
    topic_start: np.ndarray
    topic_size: np.ndarray


class ContentPlatformSimulator:
    """Users, items and the event log of a simulated content platform, with its ground-truth click model."""

    def __init__(self, settings: SimulatorSettings | Settings) -> None:
        s = settings.simulator if isinstance(settings, Settings) else settings
        self.settings = s
        self.topics: tuple[TopicVocabulary, ...] = TOPICS[: s.n_topics]
        self.topic_names: tuple[str, ...] = tuple(t.name for t in self.topics)
        self.start_us = int(np.datetime64(s.start_date, "us").astype(np.int64))
        self.end_us = self.start_us + s.n_days * US_PER_DAY
        users_seed, items_seed, drift_seed, events_seed, text_seed = np.random.SeedSequence(s.seed).spawn(5)
        self._make_items(np.random.default_rng(items_seed))
        self._make_users(np.random.default_rng(users_seed))
        self.drift_topic_index = int(np.random.default_rng(drift_seed).integers(s.n_topics))
        self._random = _CoordinateRandom(int(events_seed.generate_state(1, np.uint64)[0]))
        self._text_seed = int(text_seed.generate_state(1)[0])
        self._pools: dict[int, _DayPool] = {}
        self._user_width = len(str(max(s.n_users - 1, 0)))
        self._item_width = len(str(max(s.n_items - 1, 0)))

    # --- latent state ----------------------------------------------------------------------------------

    def _make_items(self, rng: np.random.Generator) -> None:
        s, n, t = self.settings, self.settings.n_items, self.settings.n_topics
        n_creators = max(2, round(n / 6))
        self.creator_independent = rng.random(n_creators) < s.independent_creator_share
        if 0 < s.independent_creator_share < 1 and len(np.unique(self.creator_independent)) == 1:
            # Tiny catalogs could draw a single group; keep both so group comparisons are defined.
            self.creator_independent[-1] = not self.creator_independent[0]
        creator_topic = rng.integers(t, size=n_creators)
        output = np.where(self.creator_independent, 1.0, LARGE_CREATOR_OUTPUT)
        self.item_creator = rng.choice(n_creators, size=n, p=output / output.sum())
        loyal = rng.random(n) < CREATOR_TOPIC_LOYALTY
        self.item_topic = np.where(loyal, creator_topic[self.item_creator], rng.integers(t, size=n))
        main_weight = rng.uniform(0.6, 0.95, size=n)
        mixture = rng.dirichlet(np.full(t, 0.5), size=n) * (1.0 - main_weight)[:, None]
        mixture[np.arange(n), self.item_topic] += main_weight
        self.item_topics = mixture
        log_popularity = rng.normal(size=n)
        self.item_popularity_z = (log_popularity - log_popularity.mean()) / (log_popularity.std() or 1.0)
        self.item_independent = self.creator_independent[self.item_creator]
        in_window_share = min(0.9, s.items_published_per_day_share * s.n_days)
        in_window = rng.random(n) < in_window_share
        window_offset = rng.random(n) * s.n_days * US_PER_DAY
        backlog_offset = -rng.uniform(1e-6, 1.0, size=n) * BACKLOG_DAYS * US_PER_DAY
        self.item_published_us = self.start_us + np.where(in_window, window_offset, backlog_offset).astype(
            np.int64
        )

    def _make_users(self, rng: np.random.Generator) -> None:
        s, n, t = self.settings, self.settings.n_users, self.settings.n_topics
        self.user_interest = rng.dirichlet(np.full(t, INTEREST_CONCENTRATION), size=n)
        self.user_group = rng.choice(len(USER_GROUPS), size=n, p=USER_GROUP_SHARES)
        activity = np.asarray(USER_GROUP_ACTIVITY)[self.user_group] * rng.gamma(2.0, 0.5, size=n)
        self.user_rate = s.requests_per_user_day * activity
        self.user_style = rng.choice(len(STYLES), size=n, p=STYLE_SHARES)
        self.user_region = rng.integers(len(REGIONS), size=n)
        # Declared interests are what a sign-up form would say: usually the true top topic, sometimes a
        # wrong one, the runner-up only when it is strong, and nothing at all for some users.
        ranked = np.argsort(-self.user_interest, axis=1)
        wrong = rng.random(n) < 0.15
        self.declared_first = np.where(wrong, rng.integers(t, size=n), ranked[:, 0])
        second_strong = self.user_interest[np.arange(n), ranked[:, 1]] > 0.25
        self.declared_second = np.where(
            second_strong & (ranked[:, 1] != self.declared_first), ranked[:, 1], -1
        )
        self.declared_none = rng.random(n) < 0.1
        new = rng.random(n) < s.new_user_share
        joined_in_window = rng.random(n) * (s.n_days - 1) * US_PER_DAY
        joined_before = -rng.uniform(1.0, 730.0, size=n) * US_PER_DAY
        self.user_signup_us = self.start_us + np.where(new, joined_in_window, joined_before).astype(np.int64)

    # --- ground truth ----------------------------------------------------------------------------------

    @property
    def drift_topic(self) -> str:
        """The topic every user's interest moves towards over the window (when drift_strength > 0)."""
        return self.topic_names[self.drift_topic_index]

    def user_index(self, user_ids: object) -> np.ndarray:
        """Row indices of simulator user ids ('u0042' -> 42)."""
        return pd.Series(np.asarray(user_ids, dtype=object)).str.slice(1).astype(np.int64).to_numpy()

    def item_index(self, item_ids: object) -> np.ndarray:
        """Row indices of simulator item ids ('i007' -> 7)."""
        return pd.Series(np.asarray(item_ids, dtype=object)).str.slice(1).astype(np.int64).to_numpy()

    def days_since_start(self, ts: object) -> np.ndarray:
        """Time since the window start in days, for timestamps (anything ``pd.to_datetime`` reads)."""
        us = pd.to_datetime(pd.Series(np.atleast_1d(np.asarray(ts)))).to_numpy().astype("datetime64[us]")
        return (us.astype(np.int64) - self.start_us) / US_PER_DAY

    def examination(self, positions: object) -> np.ndarray:
        """Probability that a user looks at a slot: 1 / (1 + position) ** position_bias."""
        return 1.0 / (1.0 + np.asarray(positions, dtype=np.float64)) ** self.settings.position_bias

    def _interest(self, users: np.ndarray, t_days: np.ndarray) -> np.ndarray:
        weight = (
            self.settings.drift_strength * np.clip(t_days, 0.0, self.settings.n_days) / self.settings.n_days
        )
        interest = (1.0 - weight)[..., None] * self.user_interest[users]
        interest[..., self.drift_topic_index] += weight
        return interest

    def _logit(self, users: np.ndarray, items: np.ndarray, t_days: np.ndarray) -> np.ndarray:
        s = self.settings
        affinity = np.einsum("...t,...t->...", self._interest(users, t_days), self.item_topics[items])
        return (
            s.interest_weight * affinity + s.popularity_bias * self.item_popularity_z[items] - s.click_offset
        )

    def _click_probability(
        self, users: np.ndarray, items: np.ndarray, positions: np.ndarray, t_days: np.ndarray
    ) -> np.ndarray:
        penalty = np.where(self.item_independent[items], 1.0 - self.settings.creator_bias, 1.0)
        return self.examination(positions) * _sigmoid(self._logit(users, items, t_days)) * penalty

    def interest_at(self, user_ids: object, ts: object) -> np.ndarray:
        """Users' true interest vectors (rows sum to 1, columns follow ``topic_names``) at times ``ts``."""
        return self._interest(self.user_index(user_ids), self.days_since_start(ts))

    def relevance(self, user_ids: object, item_ids: object, ts: object) -> np.ndarray:
        """sigmoid(logit): the click probability of an examined item before the creator penalty."""
        return _sigmoid(
            self._logit(self.user_index(user_ids), self.item_index(item_ids), self.days_since_start(ts))
        )

    def click_probability(
        self, user_ids: object, item_ids: object, positions: object, ts: object
    ) -> np.ndarray:
        """The ground-truth P(click) of showing items to users at slate positions at times ``ts``."""
        return self._click_probability(
            self.user_index(user_ids),
            self.item_index(item_ids),
            np.asarray(positions, dtype=np.float64),
            self.days_since_start(ts),
        )

    # --- tables ----------------------------------------------------------------------------------------

    def _ids(self, prefix: str, index: np.ndarray, width: int) -> pa.Array:
        text = pc.cast(pa.array(np.asarray(index, dtype=np.int64)), pa.string())
        return pc.binary_join_element_wise(prefix, pc.utf8_lpad(text, width, padding="0"), "")

    def users_table(self, lo: int = 0, hi: int | None = None) -> pa.Table:
        """Users ``lo``..``hi`` (row indices) in the raw ``users`` schema."""
        idx = np.arange(lo, min(hi if hi is not None else self.settings.n_users, self.settings.n_users))
        names = np.asarray(self.topic_names, dtype=object)
        declared = names[self.declared_first[idx]].copy()
        second = self.declared_second[idx]
        has_second = second >= 0
        declared[has_second] = declared[has_second] + "|" + names[second[has_second]]
        declared[self.declared_none[idx]] = None
        columns = {
            "user_id": self._ids("u", idx, self._user_width),
            "user_group": pa.array(np.asarray(USER_GROUPS, dtype=object)[self.user_group[idx]], pa.string()),
            "region": pa.array(np.asarray(REGIONS, dtype=object)[self.user_region[idx]], pa.string()),
            # the simulated users have no gender or occupation (nothing in their behaviour depends on one)
            "gender": pa.nulls(len(idx), pa.string()),
            "occupation": pa.nulls(len(idx), pa.string()),
            "preferred_style": pa.array(np.asarray(STYLES, dtype=object)[self.user_style[idx]], pa.string()),
            "declared_interests": pa.array(declared, pa.string()),
            "signup_at": pa.array(self.user_signup_us[idx].astype("datetime64[us]")),
        }
        return pa.table(columns, schema=arrow_schema(USERS))

    def _item_text(self, i: int) -> tuple[str, str, str]:
        """Title, body and tags of item ``i``, from its topic vocabularies (its own seeded ``random``)."""
        rnd = random.Random(f"{self._text_seed}:{i}")
        main = self.topics[self.item_topic[i]]
        weights = self.item_topics[i].tolist()

        def fill(template: str, topic: TopicVocabulary) -> str:
            noun, noun2 = rnd.sample(topic.nouns, 2)
            text = template.format(
                noun=noun,
                noun2=noun2,
                verb=rnd.choice(topic.verbs),
                adj=rnd.choice(topic.adjectives),
                person=rnd.choice(topic.people),
                place=rnd.choice(topic.places),
                org=rnd.choice(topic.organizations),
                num=f"{rnd.randrange(100, 90_000):,}",
                pct=f"{rnd.uniform(1, 60):.1f}",
                small=rnd.randrange(2, 13),
                year=rnd.randrange(2026, 2032),
                weekday=rnd.choice(WEEKDAYS),
                month=rnd.choice(MONTHS),
            )
            return text[0].upper() + text[1:]

        title = fill(rnd.choice(TITLE_TEMPLATES), main)
        # The first sentence is always on the main topic; the rest follow the item's topic mixture.
        templates = rnd.sample(BODY_TEMPLATES, rnd.randint(4, 8))
        sentences = [fill(templates[0], main)]
        sentences += [fill(tpl, rnd.choices(self.topics, weights=weights)[0]) for tpl in templates[1:]]
        tags = rnd.sample(main.tags, rnd.randint(2, min(4, len(main.tags))))
        return title, " ".join(sentences), "|".join(tags)

    def items_table(self, lo: int = 0, hi: int | None = None) -> pa.Table:
        """Items ``lo``..``hi`` (row indices) in the raw ``items`` schema."""
        idx = np.arange(lo, min(hi if hi is not None else self.settings.n_items, self.settings.n_items))
        texts = [self._item_text(int(i)) for i in idx]
        creator_width = len(str(len(self.creator_independent) - 1))
        columns = {
            "item_id": self._ids("i", idx, self._item_width),
            "title": pa.array([t[0] for t in texts], pa.string()),
            "body": pa.array([t[1] for t in texts], pa.string()),
            "category": pa.array(
                np.asarray(self.topic_names, dtype=object)[self.item_topic[idx]], pa.string()
            ),
            "tags": pa.array([t[2] for t in texts], pa.string()),
            "creator_id": self._ids("c", self.item_creator[idx], creator_width),
            "creator_group": pa.array(
                np.asarray(CREATOR_GROUPS, dtype=object)[self.item_independent[idx].astype(int)], pa.string()
            ),
            "published_at": pa.array(self.item_published_us[idx].astype("datetime64[us]")),
        }
        return pa.table(columns, schema=arrow_schema(ITEMS))

    def _day_pool(self, day: int) -> _DayPool:
        if day not in self._pools:
            # Strictly before the day starts, so every request of the day comes after the publication.
            eligible = np.flatnonzero(self.item_published_us < self.start_us + day * US_PER_DAY)
            eligible = eligible[np.argsort(self.item_topic[eligible], kind="stable")]
            size = np.bincount(self.item_topic[eligible], minlength=self.settings.n_topics)
            weight = np.exp(POPULAR_SHARPNESS * self.item_popularity_z[eligible])
            self._pools[day] = _DayPool(eligible, np.cumsum(weight), np.cumsum(size) - size, size)
        return self._pools[day]

    def _slates(self, users: np.ndarray, keys: np.ndarray, pool: _DayPool, k: int) -> np.ndarray:
        """The logging policy: ``k`` distinct items per request (global indices), in random slot order."""
        rnd, n = self._random, len(pool.items)
        slots = np.arange(2 * k + 4)
        source = rnd.uniform(_S_SOURCE, keys[:, None], slots)
        pick = rnd.uniform(_S_PICK, keys[:, None], slots)
        local = np.minimum((pick * n).astype(np.int64), n - 1)  # uniform picks, overwritten below
        popular = source < LOGGING_MIX["popular"]
        local[popular] = np.searchsorted(pool.popular_cdf, pick[popular] * pool.popular_cdf[-1])
        # Personal picks: a topic drawn from the user's initial interests (the policy does not see drift),
        # then an item of that topic.
        personal = source >= LOGGING_MIX["popular"] + LOGGING_MIX["random"]
        rows, cols = np.nonzero(personal)
        cum = np.cumsum(self.user_interest[users[rows]], axis=1)
        topic_u = rnd.uniform(_S_TOPIC, keys[rows], cols)[:, None] * cum[:, -1:]
        topic = np.minimum((cum < topic_u).sum(axis=1), self.settings.n_topics - 1)
        size = pool.topic_size[topic]
        in_topic = pool.topic_start[topic] + np.minimum((pick[rows, cols] * size).astype(np.int64), size - 1)
        local[rows, cols] = np.where(size > 0, in_topic, local[rows, cols])
        local = np.minimum(local, n - 1)
        slate = _first_unique(local, k)
        # Small catalogs repeat picks; top up short slates with uniform picks, then deterministically.
        for round_ in range(1, 21):
            short = np.flatnonzero((slate < 0).any(axis=1))
            if len(short) == 0:
                break
            extra = rnd.uniform(_S_FILL, keys[short, None], round_, slots)
            more = np.minimum((extra * n).astype(np.int64), n - 1)
            slate[short] = _first_unique(np.concatenate([slate[short], more], axis=1), k)
        for row in np.flatnonzero((slate < 0).any(axis=1)):
            unused = np.setdiff1d(np.arange(n), slate[row][slate[row] >= 0])
            slate[row] = _first_unique(np.concatenate([slate[row], unused])[None, :], k)[0]
        order = np.argsort(rnd.uniform(_S_ORDER, keys[:, None], np.arange(k)), axis=1)
        return pool.items[np.take_along_axis(slate, order, axis=1)]

    def _day_events(self, users: np.ndarray, day: int) -> dict[str, np.ndarray] | None:
        """All events of ``users`` on one day, as column arrays (None when there are none)."""
        s, rnd = self.settings, self._random
        counts = _poisson_from_uniform(rnd.uniform(_S_COUNT, users, day), self.user_rate[users])
        req_user = np.repeat(users, counts)
        starts = np.cumsum(counts) - counts
        req_seq = np.arange(len(req_user)) - np.repeat(starts, counts)
        keys = rnd.key(_S_REQUEST, req_user, day, req_seq)
        req_ts = self.start_us + day * US_PER_DAY + (rnd.uniform(_S_TIME, keys) * US_PER_DAY).astype(np.int64)
        joined = req_ts >= self.user_signup_us[req_user]
        req_user, req_seq, keys, req_ts = req_user[joined], req_seq[joined], keys[joined], req_ts[joined]
        pool = self._day_pool(day)
        if len(req_user) == 0 or len(pool.items) == 0:
            return None
        k = min(s.slate_size, len(pool.items))
        items = self._slates(req_user, keys, pool, k).ravel()
        n_req = len(req_user)
        user = np.repeat(req_user, k)
        seq = np.repeat(req_seq, k)
        key = np.repeat(keys, k)
        ts = np.repeat(req_ts, k)
        position = np.tile(np.arange(k), n_req)
        t_days = (ts - self.start_us) / US_PER_DAY
        p_click = self._click_probability(user, items, position, t_days)
        clicked = rnd.uniform(_S_CLICK, key, position) < p_click

        c_user, c_item, c_seq, c_pos, c_key = (
            user[clicked],
            items[clicked],
            seq[clicked],
            position[clicked],
            key[clicked],
        )
        relevance = _sigmoid(self._logit(c_user, c_item, t_days[clicked]))
        click_ts = ts[clicked] + ((1.0 + 9.0 * rnd.uniform(_S_DELAY, c_key, c_pos)) * US_PER_SECOND).astype(
            np.int64
        )
        # Dwell: median 8 s for an irrelevant click up to about 160 s for a perfect match, log-normal noise.
        dwell = np.round(
            np.exp(np.log(8.0 + 150.0 * relevance) + 0.6 * rnd.normal(_S_DWELL, c_key, c_pos)), 1
        )
        dwell = np.maximum(dwell, 0.1)
        dwell_ts = click_ts + (dwell * US_PER_SECOND).astype(np.int64)
        rated = rnd.uniform(_S_RATED, c_key, c_pos) < s.rating_share
        stars = np.clip(np.rint(1.0 + 4.0 * relevance + 0.8 * rnd.normal(_S_RATING, c_key, c_pos)), 1, 5)
        rating_ts = dwell_ts + 2 * US_PER_SECOND

        n_imp, n_clk, n_rat = len(user), int(clicked.sum()), int(rated.sum())
        return {
            "user": np.concatenate([user, c_user, c_user, c_user[rated]]),
            "item": np.concatenate([items, c_item, c_item, c_item[rated]]),
            "day": np.full(n_imp + 2 * n_clk + n_rat, day, dtype=np.int64),
            "seq": np.concatenate([seq, c_seq, c_seq, c_seq[rated]]),
            "position": np.concatenate([position, c_pos, c_pos, c_pos[rated]]),
            "type": np.concatenate(
                [
                    np.full(n_imp, _EVENT_CODES["impression"]),
                    np.full(n_clk, _EVENT_CODES["click"]),
                    np.full(n_clk, _EVENT_CODES["dwell"]),
                    np.full(n_rat, _EVENT_CODES["rating"]),
                ]
            ),
            # Follow-up events stay inside the window even for requests in its last seconds.
            "ts": np.minimum(np.concatenate([ts, click_ts, dwell_ts, rating_ts[rated]]), self.end_us - 1),
            "dwell": np.concatenate([np.full(n_imp + n_clk, np.nan), dwell, np.full(n_rat, np.nan)]),
            "rating": np.concatenate([np.full(n_imp + 2 * n_clk, np.nan), stars[rated]]),
        }

    def events_table(self, lo: int = 0, hi: int | None = None) -> pa.Table:
        """Events of users ``lo``..``hi`` over the whole window, in the raw ``events`` schema.

        Rows are ordered by user, time, event type and position, so chunks concatenate to the same order as
        one big chunk.
        """
        users = np.arange(lo, min(hi if hi is not None else self.settings.n_users, self.settings.n_users))
        days = [
            d for d in (self._day_events(users, day) for day in range(self.settings.n_days)) if d is not None
        ]
        if not days:
            return arrow_schema(EVENTS).empty_table()
        cols = {name: np.concatenate([d[name] for d in days]) for name in days[0]}
        order = np.lexsort((cols["position"], cols["type"], cols["ts"], cols["user"]))
        cols = {name: values[order] for name, values in cols.items()}
        as_text = {
            name: pc.cast(pa.array(cols[name]), pa.string()) for name in ("user", "day", "seq", "position")
        }
        request_id = pc.binary_join_element_wise(
            "r", as_text["user"], "-", as_text["day"], "-", as_text["seq"], ""
        )
        event_types = pa.array(list(EVENT_TYPES), pa.string())
        suffix = pa.array([_EVENT_SUFFIX[t] for t in EVENT_TYPES], pa.string())
        event_id = pc.binary_join_element_wise(
            request_id, "-", as_text["position"], pc.take(suffix, pa.array(cols["type"])), ""
        )
        columns = {
            "event_id": event_id,
            "request_id": request_id,
            "user_id": self._ids("u", cols["user"], self._user_width),
            "item_id": self._ids("i", cols["item"], self._item_width),
            "event_type": pc.take(event_types, pa.array(cols["type"])),
            "event_ts": pa.array(cols["ts"].astype("datetime64[us]")),
            "position": pa.array(cols["position"].astype(np.int32)),
            "dwell_seconds": pa.array(cols["dwell"], from_pandas=True),
            "rating": pa.array(cols["rating"], from_pandas=True),
        }
        return pa.table(columns, schema=arrow_schema(EVENTS))

    def chunks(self) -> Iterator[tuple[int, int]]:
        """(lo, hi) user ranges of ``chunk_users`` users each."""
        step = self.settings.chunk_users
        for lo in range(0, self.settings.n_users, step):
            yield lo, min(lo + step, self.settings.n_users)

    def item_chunks(self) -> Iterator[tuple[int, int]]:
        """(lo, hi) item ranges of ``chunk_users`` items each (item texts are built a chunk at a time)."""
        step = self.settings.chunk_users
        for lo in range(0, self.settings.n_items, step):
            yield lo, min(lo + step, self.settings.n_items)


def simulate(settings: SimulatorSettings | Settings) -> RawDataset:
    """Simulate the whole dataset in memory (small sizes; the same chunks as ``simulate_to_parquet``)."""
    sim = ContentPlatformSimulator(settings)
    users = pa.concat_tables([sim.users_table(lo, hi) for lo, hi in sim.chunks()])
    items = pa.concat_tables([sim.items_table(lo, hi) for lo, hi in sim.item_chunks()])
    events = pa.concat_tables([sim.events_table(lo, hi) for lo, hi in sim.chunks()])
    return RawDataset(table_to_frame(users), table_to_frame(items), table_to_frame(events))


def simulate_to_parquet(settings: SimulatorSettings | Settings, out_dir: Path) -> dict[str, list[Path]]:
    """Stream the simulated dataset to ``out_dir/<table>/part-NNNNN.parquet``, one chunk in memory at a time."""
    sim = ContentPlatformSimulator(settings)
    out_dir = Path(out_dir)
    files: dict[str, list[Path]] = {name: [] for name in RAW_TABLES}
    for name in RAW_TABLES:
        (out_dir / name).mkdir(parents=True, exist_ok=True)

    def write(name: str, table: pa.Table) -> None:
        path = out_dir / name / f"part-{len(files[name]):05d}.parquet"
        pq.write_table(table, path, compression="zstd")
        files[name].append(path)

    for lo, hi in sim.item_chunks():
        write("items", sim.items_table(lo, hi))
    for lo, hi in sim.chunks():
        write("users", sim.users_table(lo, hi))
        write("events", sim.events_table(lo, hi))
    return files


__all__ = [
    "ContentPlatformSimulator",
    "RawDataset",
    "arrow_schema",
    "simulate",
    "simulate_to_parquet",
    "table_to_frame",
]
