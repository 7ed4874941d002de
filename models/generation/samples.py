"""A small seeded catalog with the columns of marts.item_features, for tests and benchmarks without a warehouse.

The texts carry names, places and numbers so the grounding check and the copy-from-facts training have
something real to work on.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from models.interests import InterestProfile

_TOPICS: dict[str, dict[str, list[str]]] = {
    "sports": {
        "tags": ["football", "running", "tennis", "cycling"],
        "events": ["marathon", "final", "derby", "open", "tour stage"],
        "verbs": ["wins", "loses", "dominates", "survives"],
    },
    "travel": {
        "tags": ["hiking", "islands", "rail", "budget"],
        "events": ["coastal trail", "night train", "island hop", "old town walk", "mountain hut"],
        "verbs": ["reviews", "explores", "maps", "rediscovers"],
    },
    "food": {
        "tags": ["baking", "vegan", "street-food", "wine"],
        "events": ["bakery", "market", "tasting menu", "noodle bar", "harvest festival"],
        "verbs": ["opens", "reinvents", "celebrates", "tests"],
    },
    "technology": {
        "tags": ["ai", "privacy", "gadgets", "open-source"],
        "events": ["chip launch", "privacy audit", "robot demo", "battery test", "code release"],
        "verbs": ["unveils", "questions", "benchmarks", "ships"],
    },
    "music": {
        "tags": ["jazz", "indie", "classical", "festivals"],
        "events": ["album", "tour", "concert", "festival set", "quartet recital"],
        "verbs": ["releases", "headlines", "revives", "records"],
    },
    "science": {
        "tags": ["space", "climate", "biology", "physics"],
        "events": ["telescope survey", "glacier study", "gene trial", "particle run", "reef census"],
        "verbs": ["reports", "measures", "confirms", "charts"],
    },
}
_FIRST = [
    "Lena",
    "Marco",
    "Aiko",
    "Samir",
    "Grace",
    "Tomas",
    "Nadia",
    "Owen",
    "Priya",
    "Jonas",
    "Elif",
    "Rafael",
]
_LAST = [
    "Fischer",
    "Okafor",
    "Tanaka",
    "Haddad",
    "Lindqvist",
    "Moreau",
    "Kowalski",
    "Brennan",
    "Iyer",
    "Duarte",
]
_PLACES = ["Lisbon", "Kyoto", "Bergen", "Oaxaca", "Tallinn", "Cork", "Busan", "Valencia", "Graz", "Halifax"]
_ADJ = ["quiet", "crowded", "surprising", "careful", "bold", "late", "patient", "rapid"]


def sample_items(n: int = 40, seed: int = 0, start: str = "2026-10-01") -> pd.DataFrame:
    """``n`` seeded items with the columns of marts.item_features that generation reads."""
    rng = np.random.default_rng(seed)
    topics = list(_TOPICS)
    rows = []
    t0 = datetime.fromisoformat(start)
    for i in range(n):
        category = topics[i % len(topics)]
        spec = _TOPICS[category]
        person = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        place = str(rng.choice(_PLACES))
        event = str(rng.choice(spec["events"]))
        verb = str(rng.choice(spec["verbs"]))
        tags = list(rng.choice(spec["tags"], size=2, replace=False))
        count = int(rng.integers(2, 90)) * 50
        year = int(rng.integers(2019, 2027))
        hours = int(rng.integers(2, 12))
        title = f"{person} {verb} the {place} {event}"
        body = (
            f"{person} {verb} the {place} {event} after a {rng.choice(_ADJ)} {year} season. "
            f"About {count} people followed the {event} in {place}, many of them new to {tags[0]}. "
            f"The day lasted {hours} hours and ended with a {rng.choice(_ADJ)} finish. "
            f"Fans of {tags[1]} will find the {event} worth a look."
        )
        rows.append(
            {
                "item_id": f"i{i:04d}",
                "title": title,
                "body": body,
                "category": category,
                "tags": "|".join(tags),
                "creator_id": f"c{i % 7}",
                "creator_group": "independent" if i % 3 == 0 else "large",
                "published_at": t0 - timedelta(hours=int(rng.integers(0, 500))),
                "content_hash": hashlib.md5(f"{title}\n{body}".encode()).hexdigest(),
            }
        )
    return pd.DataFrame(rows)


def sample_profile(user_id: str, categories: list[str], style: str = "casual") -> InterestProfile:
    """An InterestProfile over ``categories`` (equal weights) with the given style."""
    weight = 1.0 / max(len(categories), 1)
    return InterestProfile(
        user_id=user_id,
        top_categories=[(c, weight) for c in categories],
        top_tags=[(t, 0.5) for c in categories[:1] for t in _TOPICS.get(c, {"tags": []})["tags"][:2]],
        preferred_style=style,
        n_events=10,
    )
