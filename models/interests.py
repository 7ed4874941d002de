"""The readable interest profile: the shape shared by the profile model, generation, explanations and serving."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class InterestProfile:
    """What a user is into, in words, with weights that sum to 1 within each list.

    Produced by ``models.profile`` from a time-ordered history (or from declared attributes for cold-start
    users); read by ``models.generation`` (prompt conditioning, personalization metric) and by the service
    (explanations).
    """

    user_id: str
    top_categories: list[tuple[str, float]] = field(default_factory=list)
    top_tags: list[tuple[str, float]] = field(default_factory=list)
    keywords: list[tuple[str, float]] = field(default_factory=list)
    preferred_style: str = "concise"
    n_events: int = 0
    cold_start: bool = False

    @property
    def segment(self) -> str:
        """A coarse key (style + top two categories) that generation caches on."""
        cats = "+".join(sorted(c for c, _ in self.top_categories[:2])) or "none"
        return f"{self.preferred_style}:{cats}"

    def interest_terms(self, n: int = 5) -> list[str]:
        """The user's strongest interests as plain words (categories first, then tags and keywords)."""
        terms: list[str] = []
        for name, _ in [*self.top_categories, *self.top_tags, *self.keywords]:
            if name not in terms:
                terms.append(name)
        return terms[:n]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InterestProfile:
        return cls(
            user_id=str(data["user_id"]),
            top_categories=[(str(a), float(b)) for a, b in data.get("top_categories", [])],
            top_tags=[(str(a), float(b)) for a, b in data.get("top_tags", [])],
            keywords=[(str(a), float(b)) for a, b in data.get("keywords", [])],
            preferred_style=str(data.get("preferred_style") or "concise"),
            n_events=int(data.get("n_events", 0)),
            cold_start=bool(data.get("cold_start", False)),
        )
