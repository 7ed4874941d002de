"""Valid NDCG of the ranker ranks real lists also on rating-only data (one-item requests)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.ranking import grouped_ndcg, ranking_groups


def test_one_item_requests_are_ranked_per_user_and_day() -> None:
    pairs = pd.DataFrame(
        {
            # a feed request with a slate of two, then three one-item requests (MovieLens ratings)
            "request_id": ["r1", "r1", "ml-1-10", "ml-1-20", "ml-2-10"],
            "user_id": ["1", "1", "1", "1", "2"],
            "event_ts": pd.to_datetime(
                [
                    "1997-10-01 10:00",
                    "1997-10-01 10:00",
                    "1997-10-02 20:00",
                    "1997-10-02 20:03",
                    "1997-10-02 21:00",
                ]
            ),
        }
    )
    groups = ranking_groups(pairs)
    assert list(groups) == ["r1", "r1", "user|1|1997-10-02", "user|1|1997-10-02", "user|2|1997-10-02"]

    # user 1 liked item 10 and disliked item 20 on 1997-10-02: scoring 20 above 10 must cost NDCG
    labels = np.array([1, 0, 1, 0, 1])
    right = np.array([0.9, 0.1, 0.8, 0.2, 0.5])
    wrong = np.array([0.9, 0.1, 0.2, 0.8, 0.5])
    assert grouped_ndcg(groups, labels, right) == 1.0
    assert grouped_ndcg(groups, labels, wrong) < 1.0
    # ranked per request, both orders look perfect: early stopping would see nothing
    per_request = pairs["request_id"].to_numpy()
    assert grouped_ndcg(per_request, labels, right) == grouped_ndcg(per_request, labels, wrong) == 1.0
