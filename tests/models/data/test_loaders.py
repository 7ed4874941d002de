"""Real-dataset loaders on small fixture files written in each dataset's own layout."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from models.data.ingest import ingest_snapshot
from models.data.loaders import load_dataset, load_mind, load_movielens, read_delimited
from models.data.schema import RAW_TABLES
from models.data.sources import write_raw_snapshot
from models.settings import get_settings

GENRE_FLAGS_100K = 19  # u.item ends with one 0/1 flag per genre of u.genre


def _flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(GENRE_FLAGS_100K))


def write_movielens_100k(folder: Path, with_users: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(
        "1\t10\t5\t881250949\n"  # liked -> click
        "1\t20\t3\t881250950\n"  # seen, not clicked
        "2\t10\t4\t891717742\n"  # 4 is the click threshold
        "2\t20\tabc\t891717743\n"  # unparseable rating: kept for quarantine
        "3\t20\t2\tnot-a-time\n"  # unparseable timestamp: kept for quarantine
    )
    # Flags: 3 = Animation, 4 = Children's, 5 = Comedy; 8 = Drama. Latin-1 title as in the real u.item.
    (folder / "u.item").write_bytes(
        (
            f"10|Toy Story (1995)|01-Jan-1995||http://example.org/10|{_flags(3, 4, 5)}\n"
            f"20|Señor Café (1996)|15-Mar-1996||http://example.org/20|{_flags(8)}\n"
        ).encode("latin-1")
    )
    if with_users:
        (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|10001\n")
    return folder


def write_movielens_1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("1::10::5::978300760\n1::20::2::978302109\n6::20::4::978301968\n")
    (folder / "movies.dat").write_bytes(
        "10::Toy Story (1995)::Animation|Children's|Comedy\n20::Amélie (2001)::Comedy|Romance\n".encode(
            "latin-1"
        )
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n6::M::50::16::70072\n")
    return folder


NEWS = [
    ("N1", "sports", "football_nfl", "Team wins the final", "A late goal decides the match.", "", "[]", "[]"),
    ("N2", "finance", "markets", "Stocks rally", "", "", "[]", "[]"),  # empty abstract -> title as body
    ("N3", "health", "wellness", "Sleep better", "Five habits for better sleep.", "", "[]", "[]"),
    ("N4", "travel", "destinations", "Lisbon in spring", "Where to go in Lisbon.", "", "[]", "[]"),
]
BEHAVIORS = [
    ("1", "U1", "11/11/2019 9:05:58 AM", "N3 N4", "N1-1 N2-0"),
    ("2", "U2", "11/12/2019 1:00:00 PM", "", "N2-0 N1-0 N3-1"),
    ("3", "U1", "11/13/2019 10:00:00 AM", "N3 N4", "N2-1"),
]


def write_mind(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("".join("\t".join(row) + "\n" for row in NEWS))
    (folder / "behaviors.tsv").write_text("".join("\t".join(row) + "\n" for row in BEHAVIORS))
    return folder


def _events(data: pd.DataFrame, kind: str) -> pd.DataFrame:
    return data[data.event_type == kind]


def test_movielens_100k_ratings_become_impressions_ratings_and_clicks(tmp_path: Path) -> None:
    data = load_movielens(write_movielens_100k(tmp_path / "ml-100k"))
    for name, frame in data.tables().items():
        assert list(frame.columns) == RAW_TABLES[name].column_names
    events = data.events
    # 5 ratings -> 5 impressions + 5 rating events; ratings 5 and 4 are clicks, 3, 2 and 'abc' are not.
    assert len(_events(events, "impression")) == 5 and len(_events(events, "rating")) == 5
    clicks = _events(events, "click")
    assert set(zip(clicks.user_id, clicks.item_id, strict=True)) == {("1", "10"), ("2", "10")}
    assert (events.position == 0).all()  # each rating is a one-item request
    assert events.event_id.is_unique
    click = clicks[clicks.user_id == "1"].iloc[0]
    impression = _events(events, "impression").set_index("request_id").loc[click.request_id]
    assert click.event_ts == impression.event_ts == pd.Timestamp(881250949, unit="s")
    # Unparseable values are kept as the raw text for ingest to quarantine, not dropped.
    assert "abc" in set(_events(events, "rating").rating)
    assert "not-a-time" in set(events.event_ts)

    items = data.items.set_index("item_id")
    assert items.loc["10", "category"] == "animation"
    assert items.loc["10", "tags"] == "animation|children's|comedy"
    assert items.loc["10", "body"] == "Toy Story is a 1995 animation, children's and comedy film."
    assert items.loc["20", "title"] == "Señor Café (1996)"  # decoded as latin-1
    assert items.loc["10", "published_at"] == pd.Timestamp("1995-01-01")
    assert set(items.creator_group) == {"unknown"}

    users = data.users.set_index("user_id")
    assert users.loc["1", "user_group"] == "18-29" and users.loc["1", "region"] == "west"  # zip 8xxxx
    assert users.loc["2", "user_group"] == "50+" and users.loc["2", "region"] == "east"  # zip 1xxxx
    assert users.loc["1", "gender"] == "M" and users.loc["1", "occupation"] == "technician"
    assert users.loc["2", "gender"] == "F" and users.loc["2", "occupation"] == "other"
    # User 3 rated but is not in u.user: kept, with unknown age band and region and no gender or occupation.
    assert users.loc["3", "user_group"] == "unknown" and users.loc["3", "region"] == "unknown"
    assert users.loc["3", "gender"] is None and users.loc["3", "occupation"] is None
    assert users.loc["1", "signup_at"] == pd.Timestamp(881250949, unit="s")  # first rating


def test_movielens_without_users_file_has_unknown_groups(tmp_path: Path) -> None:
    data = load_movielens(write_movielens_100k(tmp_path / "ml", with_users=False))
    assert set(data.users.user_group) == {"unknown"} and set(data.users.region) == {"unknown"}
    assert data.users.gender.isna().all() and data.users.occupation.isna().all()  # nullable: no placeholder
    assert sorted(data.users.user_id) == ["1", "2", "3"]


def test_movielens_1m_layout(tmp_path: Path) -> None:
    data = load_movielens(write_movielens_1m(tmp_path / "ml-1m"))
    clicks = _events(data.events, "click")
    # Ratings 5 and 4 -> clicks; rating 2 is an impression without one.
    assert set(zip(clicks.user_id, clicks.item_id, strict=True)) == {("1", "10"), ("6", "20")}
    assert data.events.event_ts.dtype == "datetime64[ns]" and data.events.rating.dtype == "float64"
    items = data.items.set_index("item_id")
    assert items.loc["20", "title"] == "Amélie (2001)"
    assert items.loc["20", "published_at"] == pd.Timestamp("2001-01-01")  # year in the title
    assert items.loc["20", "tags"] == "comedy|romance" and items.loc["20", "category"] == "comedy"
    users = data.users.set_index("user_id")
    assert users.loc["1", "user_group"] == "under-18" and users.loc["6", "user_group"] == "50+"
    assert users.loc["6", "region"] == "south"  # zip 7xxxx
    # users.dat: UserID::Gender::Age::Occupation::Zip; occupation codes 10 and 16 are named as in 1M's README
    assert users.loc["1", "gender"] == "F" and users.loc["1", "occupation"] == "K-12 student"
    assert users.loc["6", "gender"] == "M" and users.loc["6", "occupation"] == "self-employed"


def test_movielens_latest_csv_layout(tmp_path: Path) -> None:
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.5,964982703\n1,2,3.5,964981247\n"
    )
    # Quoted titles hold commas; half-star ratings of 4 and above are clicks.
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n2,Heat (1995),(no genres listed)\n'
    )
    data = load_movielens(folder)
    items = data.items.set_index("item_id")
    assert (
        items.loc["1", "title"] == "American President, The (1995)" and items.loc["1", "category"] == "comedy"
    )
    assert items.loc["2", "category"] == "unknown" and items.loc["2", "tags"] is None
    assert list(_events(data.events, "click").item_id) == ["1"]


def test_movielens_folder_inside_the_dataset_path_is_found(tmp_path: Path) -> None:
    write_movielens_1m(tmp_path / "download" / "ml-1m")
    settings = get_settings(home=tmp_path / "home", dataset="movielens", dataset_path=tmp_path / "download")
    assert len(load_dataset(settings).items) == 2


def test_mind_impressions_labels_and_history(tmp_path: Path) -> None:
    data = load_mind(write_mind(tmp_path / "MINDsmall_train"))
    events = data.events
    for name, frame in data.tables().items():
        assert list(frame.columns) == RAW_TABLES[name].column_names
    logged = events[~events.request_id.str.startswith("h-")]
    impressions = _events(logged, "impression")
    assert len(impressions) == 6  # 2 + 3 + 1 listed items
    request_2 = impressions[impressions.request_id == "m2"].sort_values("position")
    assert list(request_2.item_id) == ["N2", "N1", "N3"] and list(request_2.position) == [0, 1, 2]
    clicks = _events(logged, "click")
    # '-1' labels are clicks at the item's index in the list.
    assert set(zip(clicks.request_id, clicks.item_id, clicks.position, strict=True)) == {
        ("m1", "N1", 0),
        ("m2", "N3", 2),
        ("m3", "N2", 0),
    }
    assert (clicks.event_ts.isin(impressions.event_ts)).all()
    # U1's history (N3, N4) becomes clicks in order, ending 1 s before U1's first request.
    history = _events(events[events.request_id.str.startswith("h-")], "click").sort_values("event_ts")
    first_request = pd.Timestamp("2019-11-11 09:05:58")
    assert list(history.item_id) == ["N3", "N4"] and set(history.user_id) == {"U1"}
    assert list(history.event_ts) == [
        first_request - pd.Timedelta(seconds=2),
        first_request - pd.Timedelta(seconds=1),
    ]
    assert len(_events(events[events.request_id.str.startswith("h-")], "impression")) == 2

    items = data.items.set_index("item_id")
    assert items.loc["N1", "body"] == "A late goal decides the match."
    assert items.loc["N2", "body"] == "Stocks rally"  # empty abstract falls back to the title
    assert items.loc["N1", "tags"] == "football_nfl" and items.loc["N1", "category"] == "sports"
    assert items.loc["N3", "published_at"] == first_request - pd.Timedelta(seconds=2)  # first seen in history
    users = data.users.set_index("user_id")
    assert users.loc["U2", "signup_at"] == pd.Timestamp("2019-11-12 13:00:00")


def test_mind_split_folders_load_together(tmp_path: Path) -> None:
    write_mind(tmp_path / "mind" / "train")
    write_mind(tmp_path / "mind" / "dev")
    data = load_mind(tmp_path / "mind")
    assert len(data.items) == 4  # the same news in both splits is kept once
    # Impression ids restart per split, so request ids carry the split name.
    assert {"mtrain-1", "mdev-1"} <= set(data.events.request_id)
    assert data.events.event_id.is_unique


def test_missing_files_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"u\.data.*ratings\.dat"):
        load_movielens(empty)
    with pytest.raises(FileNotFoundError, match=r"news\.tsv and behaviors\.tsv"):
        load_mind(empty)
    (tmp_path / "ml" / "u.data").parent.mkdir()
    (tmp_path / "ml" / "u.data").write_text("1\t10\t5\t881250949\n")
    with pytest.raises(FileNotFoundError, match=r"missing u\.item"):
        load_movielens(tmp_path / "ml")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "news.tsv").write_text("")
    with pytest.raises(FileNotFoundError, match=r"missing behaviors\.tsv"):
        load_mind(tmp_path / "half")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(get_settings(home=tmp_path, dataset="mind", dataset_path=tmp_path / "nowhere"))


def test_malformed_lines_keep_their_fields(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("1\t10\t5\t881250949\n2\t20\n3\t30\t4\t881250949\textra\n\n")
    rows = read_delimited(path, "\t", 4)
    assert len(rows) == 3  # the blank line is not a row; the short and the long ones are
    assert list(rows.iloc[1]) == ["2", "20", None, None]
    assert rows.iloc[2, 3] == "881250949\textra"


def test_bad_rows_reach_the_quarantine_through_the_snapshot(tmp_path: Path) -> None:
    # End to end with the real ingest: the loader keeps the bad values, the snapshot stores them as text,
    # and ingest quarantines exactly those rows with a reason; nothing is lost on the way.
    dataset = write_movielens_100k(tmp_path / "ml-100k")
    settings = get_settings(home=tmp_path / "home", dataset="movielens", dataset_path=dataset)
    files = write_raw_snapshot(settings)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    report = ingest_snapshot(con, files, source="movielens")
    events = report.tables["events"]
    assert events.rows_in == 5 + 5 + 2  # impressions + ratings + clicks
    # The 'abc' rating event and the impression + rating of the 'not-a-time' rating (2 < 4: no click);
    # user 3's row fails too, since its signup time (the first rating) is unknown.
    reasons = dict(con.execute("select reason, count(*) from raw.quarantine group by 1").fetchall())
    assert reasons == {
        "rating: cannot parse 'abc' as DOUBLE": 1,
        "event_ts: cannot parse 'not-a-time' as TIMESTAMP": 2,
        "missing signup_at": 1,
    }
    assert events.rows_clean + events.rows_quarantined == events.rows_in
    assert con.execute("select count(*) from raw.events where event_type = 'click'").fetchone() == (2,)
    con.close()


def write_recbole(folder: Path) -> Path:
    """A small RecBole atomic-file dataset ('toy') with one malformed row per file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t881250949\n"  # liked -> click
        "1\t20\t3\t881250950\n"  # seen, not clicked
        "2\t10\t4\t891717742.0\n"  # 4 is the click threshold; float seconds
        "2\t20\tabc\t891717743\n"  # malformed rating: quarantined
    )
    (folder / "toy.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tvec:float_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\t0.1 0.2\n"
        "20\tSeven\t\tThriller\t0.3 0.4\n"  # no year: published at its first rating
    )
    (folder / "toy.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n"
        "2\t53\tF\tother\t10001\n"
    )
    return folder


def test_recbole_atomic_files_map_to_the_raw_schema(tmp_path: Path) -> None:
    from models.data.loaders import read_atomic

    folder = write_recbole(tmp_path / "toy")
    rows, types = read_atomic(folder / "toy.item")
    assert types == {
        "item_id": "token",
        "movie_title": "token_seq",
        "release_year": "token",
        "class": "token_seq",
        "vec": "float_seq",
    }
    assert len(rows) == 2 and rows.loc[0, "class"] == "Animation Children's Comedy"

    data = load_dataset(get_settings(dataset="recbole", dataset_path=folder))
    for name, frame in data.tables().items():
        assert list(frame.columns) == RAW_TABLES[name].column_names
    events = data.events
    assert len(_events(events, "impression")) == 4 and len(_events(events, "rating")) == 4
    clicks = _events(events, "click")
    assert set(zip(clicks.user_id, clicks.item_id, strict=True)) == {("1", "10"), ("2", "10")}
    assert pd.Timestamp(891717742, unit="s") in set(clicks.event_ts)
    assert "abc" in set(_events(events, "rating").rating)  # kept for ingest to quarantine

    items = data.items.set_index("item_id")
    # token_seq genres: every genre is a tag, the first the category; title from movie_title, year from
    # release_year, else the first rating.
    assert items.loc["10", "tags"] == "animation|children's|comedy"
    assert items.loc["10", "category"] == "animation"
    assert items.loc["10", "title"] == "Toy Story"
    assert items.loc["10", "body"] == "Toy Story is a 1995 animation, children's and comedy film."
    assert items.loc["10", "published_at"] == pd.Timestamp("1995-01-01")
    assert items.loc["20", "published_at"] == pd.Timestamp(881250950, unit="s")
    users = data.users.set_index("user_id")
    assert users.loc["1", "user_group"] == "18-29" and users.loc["1", "region"] == "west"
    assert users.loc["2", "user_group"] == "50+" and users.loc["2", "region"] == "east"
    assert users.loc["1", "gender"] == "M" and users.loc["1", "occupation"] == "technician"
    assert users.loc["2", "gender"] == "F" and users.loc["2", "occupation"] == "other"


def test_recbole_users_file_without_gender_or_occupation_gives_nulls(tmp_path: Path) -> None:
    folder = write_recbole(tmp_path / "toy")
    (folder / "toy.user").write_text("user_id:token\tage:token\n1\t24\n2\t\n")
    users = load_dataset(get_settings(dataset="recbole", dataset_path=folder)).users.set_index("user_id")
    assert users.loc["1", "user_group"] == "18-29" and users.loc["2", "user_group"] == "unknown"
    assert users["gender"].isna().all() and users["occupation"].isna().all()


def test_recbole_header_without_a_type_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "bad.inter").write_text("user_id:token\titem_id\trating:float\ttimestamp:float\n1\t2\t3\t4\n")
    with pytest.raises(ValueError, match="bad.inter: header field 'item_id'"):
        load_dataset(get_settings(dataset="recbole", dataset_path=folder))
    with pytest.raises(FileNotFoundError, match="expected <name>.inter"):
        (tmp_path / "empty").mkdir()
        load_dataset(get_settings(dataset="recbole", dataset_path=tmp_path / "empty"))


def test_recbole_malformed_row_reaches_the_quarantine(tmp_path: Path) -> None:
    # The real snapshot + ingest: raw rows = clean + quarantined, the bad rating quarantined with its field.
    folder = write_recbole(tmp_path / "toy")
    settings = get_settings(home=tmp_path / "home", dataset="recbole", dataset_path=folder)
    files = write_raw_snapshot(settings)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    report = ingest_snapshot(con, files, source="recbole")
    events = report.tables["events"]
    assert events.rows_in == 4 + 4 + 2
    assert events.rows_clean + events.rows_quarantined == events.rows_in
    assert events.rows_quarantined == 1
    quarantined = con.execute("select source_table, field, reason from raw.quarantine").fetchall()
    assert quarantined == [("events", "rating", "rating: cannot parse 'abc' as DOUBLE")]
    assert con.execute("select count(*) from raw.events").fetchone() == (events.rows_clean,)
    assert con.execute("select count(*) from raw.items").fetchone() == (2,)
    assert con.execute("select count(*) from raw.users").fetchone() == (2,)
    con.close()


def test_a_movies_body_is_one_well_formed_sentence_of_its_own_facts() -> None:
    from models.data.loaders import _genre_sentence
    from models.generation.guardrails import sentence_problems

    body = _genre_sentence("Silence of the Lambs, The (1991)", ["drama", "thriller"], 1991)
    assert body == "The Silence of the Lambs is a 1991 drama and thriller film."
    assert _genre_sentence("Fargo", [], None) == "Fargo is a film."
    # the copy generator copies an item's sentences: a title plus a verbless genre list was not one
    assert sentence_problems(body, "summary") == []
    assert sentence_problems("Fargo. A crime and drama film.", "summary")
