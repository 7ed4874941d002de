"""Real datasets (MovieLens, MIND, RecBole atomic files) mapped to the raw schema of ``models.data.schema``.

Mapping choices, so downstream code never special-cases a dataset:

- **MovieLens** has ratings only. Each rating becomes a one-item feed request: an ``impression`` (position 0,
  exact, since the item was the only one "shown"), a ``rating`` event, and a ``click`` when the rating is
  >= 4 (a liked movie counts as a positive engagement; 1-3 stay as seen-but-not-clicked). All three carry the
  rating's timestamp. Items: body = one sentence of the title, release year and genres ("Toy Story is a 1995
  animation, children's and comedy film.": there is no plot text), category = first
  genre, tags = all genres (lower case), creator 'unknown' / 'unknown'; published_at = release date (100k),
  1 January of the title's year (1M, latest), else the first rating of the item. Users: age band and US zip
  region from the users file when present, else 'unknown'; gender ('M' / 'F') and occupation (100k's names;
  1M's codes mapped to the names of its README) when present, else null; signup_at = the user's first rating.
- **MIND**: every behaviors row is a request; each listed news item is an impression with position = its
  index in the list, and a ``click`` for label 1. Unlabelled items (the test split) are impressions only. The
  history column holds clicks from before the log with no time: they become impression + click pairs (one-
  item requests at position 0) spaced one second apart and ending one second before the user's first logged
  request, so they land in the training period and the marts join them like any other click. body =
  abstract (the title when the abstract is empty), tags = subcategory, published_at = the item's first
  appearance in the log.
- **RecBole atomic files** (``<name>.inter`` / ``.item`` / ``.user``, tab-separated, header ``field:type`` with
  types ``token``, ``token_seq``, ``float``, ``float_seq``; https://recbole.io/docs/user_guide/data/atomic_files.html)
  are mapped like MovieLens: each interaction row is a one-item request (impression + rating when the file
  has a ``rating`` field, + click when rating >= 4; without a rating field every interaction is a click).
  Items: title = ``movie_title`` / ``title`` / ``name`` (a token_seq, joined with spaces), the genres
  (``class`` / ``genre`` / ``genres`` / ``categories``, a token_seq) are the tags and the first genre the
  category, published_at = 1 January of ``release_year`` / ``year`` (else the first rating). Users: age band
  from ``age`` -> user_group, US zip region from ``zip_code`` -> region, ``gender`` and ``occupation`` as they
  are (null when the file has no such field or the value is blank): the user attributes the fairness report
  groups by. The same ml-100k data read through this loader or the MovieLens one gives the same attributes.

Parse errors are not dropped: a value that does not parse (a rating of 'abc', a broken date) stays in its
column as the raw string (the column then has object dtype), a row with too few fields gets None for the
missing ones, and a row with too many keeps the surplus in its last field. The ingest step
(``models.data.ingest``) then quarantines those rows with a reason. An unreadable MIND label becomes an
event whose event_type is ``mind-label:<raw>``, which ingest rejects as an unknown event type.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from models.data.schema import EVENTS, ITEMS, USERS, TableSchema
from models.data.simulator import RawDataset, simulate
from models.settings import Settings

MOVIELENS_100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# MovieLens 1M stores age as the start of a band; map the bands onto the simulator's groups (25-34 is
# split across two of them and goes to the one holding most of it).
MOVIELENS_1M_AGE_GROUPS = {
    "1": "under-18",
    "18": "18-29",
    "25": "18-29",
    "35": "30-49",
    "45": "30-49",
    "50": "50+",
    "56": "50+",
}
# First digit of a US zip code -> the simulator's four regions (census-style: 0-2 east coast, 3 and 7 south,
# 4-6 midwest as 'north', 8-9 west). Non-US codes (letters) are 'unknown'.
ZIP_REGIONS = dict(
    zip(
        "0123456789",
        ("east", "east", "east", "south", "north", "north", "north", "south", "west", "west"),
        strict=True,
    )
)
# MovieLens 1M's occupation codes (its README), as names like 100k's u.user ones.
MOVIELENS_1M_OCCUPATIONS = dict(
    enumerate(
        (
            "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
            "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
            "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
            "tradesman/craftsman", "unemployed", "writer",
        )
    )
)  # fmt: skip
CLICK_RATING = 4.0  # MovieLens ratings at or above this count as clicks
UNKNOWN = "unknown"
MIND_TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"


# --- robust reading and parsing ---------------------------------------------------------------------------


def read_delimited(path: Path, sep: str, n_fields: int, encoding: str = "utf-8") -> pd.DataFrame:
    """Lines of ``path`` split on ``sep`` into ``n_fields`` text columns (0..n-1), keeping malformed rows.

    Too few fields give None in the missing columns; too many stay joined in the last column. Bytes that do
    not decode are replaced (U+FFFD) rather than failing the file.
    """
    rows = []
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(sep, n_fields - 1)
            rows.append(fields + [None] * (n_fields - len(fields)))
    return pd.DataFrame(rows, columns=range(n_fields), dtype=object)


def _read_csv_text(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """A headed CSV (MovieLens latest layout) as text columns; quoted fields may hold commas."""
    return pd.read_csv(
        path,
        dtype=str,
        keep_default_na=False,
        encoding=encoding,
        encoding_errors="replace",
        quoting=csv.QUOTE_MINIMAL,
    ).replace({"": None})


def _clean(raw: pd.Series) -> pd.Series:
    """Stripped text with blanks as None."""
    text = raw.astype(object).str.strip()  # non-strings (None) become NaN
    return text.where(text.notna() & (text != ""), None).astype(object)


def keep_unparsed(raw: pd.Series, parse: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``parse(raw)`` where it works; where a present value does not parse, the raw text (object dtype)."""
    text = _clean(raw)
    parsed = parse(text)
    failed = parsed.isna() & text.notna()
    if not failed.any():
        return parsed
    mixed = parsed.astype(object)
    mixed[failed] = text[failed]
    return mixed


def _numbers(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _unix_seconds(text: pd.Series) -> pd.Series:
    return pd.to_datetime(pd.to_numeric(text, errors="coerce"), unit="s")


def _timestamps(fmt: str) -> Callable[[pd.Series], pd.Series]:
    return lambda text: pd.to_datetime(text, format=fmt, errors="coerce")


def _as_timestamps(values: pd.Series) -> pd.Series:
    """Only the values that are timestamps (raw strings left by a failed parse become NaT)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    return pd.to_datetime(values.map(lambda v: v if isinstance(v, pd.Timestamp) else pd.NaT), errors="coerce")


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value))


def _conform(frame: pd.DataFrame, table: TableSchema) -> pd.DataFrame:
    """Columns in schema order; typed columns get the house dtypes unless they hold raw unparsed text."""
    frame = frame.reindex(columns=table.column_names).reset_index(drop=True)
    for col in table.columns:
        series = frame[col.name]
        if col.duckdb_type == "TIMESTAMP" and series.dtype == object:
            if series.map(lambda v: _is_missing(v) or isinstance(v, pd.Timestamp)).all():
                frame[col.name] = pd.to_datetime(series.map(lambda v: pd.NaT if _is_missing(v) else v))
            else:
                frame[col.name] = series.map(lambda v: None if _is_missing(v) else v)
        elif col.duckdb_type == "TIMESTAMP":
            frame[col.name] = series.astype("datetime64[ns]")
        elif col.duckdb_type == "INTEGER" and series.dtype != object:
            frame[col.name] = series.astype("Int32")
        elif col.duckdb_type == "DOUBLE" and series.dtype != object:
            frame[col.name] = series.astype("float64")
        elif col.duckdb_type == "VARCHAR":
            frame[col.name] = series.astype(object).where(series.notna(), None)
    return frame


def _age_group(age: pd.Series) -> pd.Series:
    years = pd.to_numeric(age, errors="coerce")
    bands = pd.cut(
        years, bins=[-np.inf, 18, 30, 50, np.inf], right=False, labels=["under-18", "18-29", "30-49", "50+"]
    )
    return bands.astype(object).where(years.notna(), UNKNOWN)


def _zip_region(zip_code: pd.Series) -> pd.Series:
    return _clean(zip_code).map(lambda z: ZIP_REGIONS.get(z[0], UNKNOWN) if isinstance(z, str) else UNKNOWN)


def _join_words(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


_TRAILING_ARTICLE = re.compile(
    r"^(?P<name>.+), (?P<article>The|A|An|La|Le|Les|L'|Il|El|Das|Der|Die|Det|Den)$"
)
_TITLE_YEAR = re.compile(r"^(?P<name>.*?)\s*\((?P<year>\d{4})\)$")


def _reading_title(title: str) -> str:
    """A catalog title as it is read: "Silence of the Lambs, The (1991)" -> "The Silence of the Lambs"."""
    match = _TITLE_YEAR.match(title)
    name = match.group("name") if match else title
    inverted = _TRAILING_ARTICLE.match(name)
    if inverted:
        article = inverted.group("article")
        name = f"{article}{'' if article.endswith(chr(39)) else ' '}{inverted.group('name')}"
    return name


def _genre_sentence(title: str | None, genres: list[str], year: int | None = None) -> str:
    """One sentence of a movie's own facts: "Toy Story is a 1995 animation, children's and comedy film."

    The catalog has no plot text, and a title plus a verbless genre list ("Fargo. A crime film.") is not a
    sentence: the copy generator, which copies the item's own sentences, could only fall back on it.
    """
    name = _reading_title(title) if title else "This title"
    described = " ".join(
        part for part in (str(year) if year else "", _join_words(genres) if genres else "") if part
    )
    if not described:
        return f"{name} is a film."
    article = "an" if described[0].lower() in "aeiou" or described.startswith(("18", "8")) else "a"
    return f"{name} is {article} {described} film."


# --- MovieLens --------------------------------------------------------------------------------------------


def _find_layout_folder(path: Path, markers: tuple[str, ...]) -> Path | None:
    """``path`` or its single subfolder holding one of ``markers`` (archives unpack into ml-100k/ etc.)."""
    for folder in [path, *sorted(p for p in path.iterdir() if p.is_dir())]:
        if any((folder / m).exists() for m in markers):
            return folder
    return None


def movielens_layout(path: Path) -> tuple[str, Path]:
    """('100k' | '1m' | 'latest', folder) of a MovieLens folder; FileNotFoundError naming what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"MovieLens folder {path} does not exist")
    layouts = {"u.data": "100k", "ratings.dat": "1m", "ratings.csv": "latest"}
    folder = _find_layout_folder(path, tuple(layouts))
    if folder is None:
        raise FileNotFoundError(
            f"{path}: no MovieLens ratings file: expected u.data (100k layout), ratings.dat (1M layout) "
            "or ratings.csv (latest layout)"
        )
    layout = next(v for k, v in layouts.items() if (folder / k).exists())
    return layout, folder


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"missing {path.name}: expected {path}")
    return path


def _movielens_events(ratings: pd.DataFrame) -> pd.DataFrame:
    """Impression + rating (+ click when rating >= 4) per rating row (columns user, item, rating, ts as text)."""
    user, item = _clean(ratings["user"]), _clean(ratings["item"])
    rating = keep_unparsed(ratings["rating"], _numbers)
    ts = keep_unparsed(ratings["ts"], _unix_seconds)
    request_id = "ml-" + user.fillna("?").astype(str) + "-" + item.fillna("?").astype(str)
    base = pd.DataFrame(
        {"request_id": request_id, "user_id": user, "item_id": item, "event_ts": ts, "position": 0}
    )
    base["_row"] = np.arange(len(base))
    impressions = base.assign(event_type="impression", event_id=request_id + "-i", _order=0)
    rated = base.assign(event_type="rating", event_id=request_id + "-r", rating=rating, _order=1)
    liked = pd.to_numeric(rating, errors="coerce") >= CLICK_RATING
    clicks = base[liked].assign(event_type="click", event_id=request_id[liked] + "-c", _order=2)
    events = pd.concat([impressions, rated, clicks], ignore_index=True)
    events = events.sort_values(["_row", "_order"], kind="stable")
    return _conform(events, EVENTS)


def _first_times(keys: pd.Series, ts: pd.Series) -> pd.Series:
    """Earliest parseable timestamp per key."""
    return _as_timestamps(ts).groupby(keys.to_numpy()).min()


def _movielens_users(events: pd.DataFrame, profiles: pd.DataFrame | None) -> pd.DataFrame:
    """One row per user seen in the ratings or the users file; a missing age band or region is 'unknown', a
    missing gender or occupation null."""
    first = _first_times(events["user_id"], events["event_ts"])
    ids = pd.Index(events["user_id"].dropna().unique())
    if profiles is not None:
        ids = ids.union(pd.Index(profiles["user_id"].dropna().unique()), sort=False)
    users = pd.DataFrame({"user_id": ids.astype(object)})
    if profiles is not None:
        users = users.merge(profiles.drop_duplicates("user_id"), on="user_id", how="left")
    else:
        users["user_group"], users["region"] = UNKNOWN, UNKNOWN
    users["user_group"] = users["user_group"].fillna(UNKNOWN)
    users["region"] = users["region"].fillna(UNKNOWN)
    for attribute in ("gender", "occupation"):  # nullable: no 'unknown' placeholder
        known = users[attribute] if attribute in users else pd.Series(None, index=users.index, dtype=object)
        users[attribute] = known.astype(object).where(known.notna(), None)
    users["preferred_style"] = None
    users["declared_interests"] = None
    users["signup_at"] = users["user_id"].map(first)
    return _conform(users, USERS)


def _movielens_items(
    ids: pd.Series, titles: pd.Series, genres: list[list[str]], released: pd.Series, events: pd.DataFrame
) -> pd.DataFrame:
    item_id, title = _clean(ids), _clean(titles)
    lower = [[g.lower() for g in gs] for gs in genres]
    first_rating = _first_times(events["item_id"], events["event_ts"])
    published = released.astype(object).where(released.notna(), item_id.map(first_rating))
    items = pd.DataFrame(
        {
            "item_id": item_id,
            "title": title,
            "body": [
                _genre_sentence(t, gs, r.year if isinstance(r, pd.Timestamp) else None)
                for t, gs, r in zip(title, lower, released, strict=True)
            ],
            "category": [gs[0] if gs else UNKNOWN for gs in lower],
            "tags": ["|".join(gs) if gs else None for gs in lower],
            "creator_id": UNKNOWN,
            "creator_group": UNKNOWN,
            "published_at": published,
        }
    )
    return _conform(items, ITEMS)


def _title_year(title: pd.Series) -> pd.Series:
    """1 January of the '(1995)' year at the end of a MovieLens title (NaT when there is none)."""
    year = _clean(title).str.extract(r"\((\d{4})\)\s*$")[0]
    return pd.to_datetime(year, format="%Y", errors="coerce")


def load_movielens(path: Path) -> RawDataset:
    """A MovieLens folder (100k, 1M or latest-csv layout, detected from its files) as a RawDataset."""
    layout, folder = movielens_layout(Path(path))
    profiles: pd.DataFrame | None = None
    if layout == "100k":
        ratings = read_delimited(folder / "u.data", "\t", 4).set_axis(
            ["user", "item", "rating", "ts"], axis=1
        )
        genre_names = list(MOVIELENS_100K_GENRES)
        if (folder / "u.genre").exists():
            listed = read_delimited(folder / "u.genre", "|", 2, encoding="latin-1")
            genre_names = [str(g).strip() for g in listed[0]]
        raw_items = read_delimited(_require(folder / "u.item"), "|", 5 + len(genre_names), encoding="latin-1")
        flags = raw_items.iloc[:, 5:].apply(lambda c: _clean(c) == "1")
        genres = [[g for g, on in zip(genre_names, row, strict=True) if on] for row in flags.to_numpy()]
        # 'unknown' is MovieLens' own flag for "no genre": drop it when a real genre is also set.
        genres = [[g for g in gs if g != "unknown"] or gs for gs in genres]
        released = keep_unparsed(raw_items[2], _timestamps("%d-%b-%Y"))
        ids, titles = raw_items[0], raw_items[1]
        if (folder / "u.user").exists():
            raw = read_delimited(folder / "u.user", "|", 5, encoding="latin-1")
            profiles = pd.DataFrame(
                {
                    "user_id": _clean(raw[0]),
                    "user_group": _age_group(raw[1]),
                    "region": _zip_region(raw[4]),
                    "gender": _clean(raw[2]),
                    "occupation": _clean(raw[3]),
                }
            )
    elif layout == "1m":
        ratings = read_delimited(folder / "ratings.dat", "::", 4).set_axis(
            ["user", "item", "rating", "ts"], axis=1
        )
        raw_items = read_delimited(_require(folder / "movies.dat"), "::", 3, encoding="latin-1")
        ids, titles = raw_items[0], raw_items[1]
        genres = [[g for g in str(v or "").split("|") if g] for v in _clean(raw_items[2])]
        released = _title_year(titles)
        if (folder / "users.dat").exists():
            raw = read_delimited(folder / "users.dat", "::", 5, encoding="latin-1")
            profiles = pd.DataFrame(
                {
                    "user_id": _clean(raw[0]),
                    "user_group": _clean(raw[2]).map(lambda a: MOVIELENS_1M_AGE_GROUPS.get(a, UNKNOWN)),
                    "region": _zip_region(raw[4]),
                    "gender": _clean(raw[1]),
                    "occupation": pd.to_numeric(_clean(raw[3]), errors="coerce").map(
                        MOVIELENS_1M_OCCUPATIONS.get, na_action="ignore"
                    ),
                }
            )
    else:
        raw_ratings = _read_csv_text(folder / "ratings.csv")
        ratings = raw_ratings.iloc[:, :4].set_axis(["user", "item", "rating", "ts"], axis=1)
        raw_items = _read_csv_text(_require(folder / "movies.csv"), encoding="utf-8")
        ids, titles = raw_items.iloc[:, 0], raw_items.iloc[:, 1]
        genres = [
            [g for g in str(v or "").split("|") if g and g != "(no genres listed)"]
            for v in _clean(raw_items.iloc[:, 2])
        ]
        released = _title_year(titles)
    events = _movielens_events(ratings)
    users = _movielens_users(events, profiles)
    items = _movielens_items(ids, titles, genres, released, events)
    return RawDataset(users=users, items=items, events=events)


# --- MIND -------------------------------------------------------------------------------------------------


def mind_folders(path: Path) -> list[Path]:
    """The MIND split folders under ``path`` (itself, or subfolders such as train/ and dev/)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"MIND folder {path} does not exist")
    markers = ("news.tsv", "behaviors.tsv")
    if any((path / m).exists() for m in markers):
        folders = [path]
    else:
        folders = [p for p in sorted(path.iterdir()) if p.is_dir() and any((p / m).exists() for m in markers)]
    if not folders:
        raise FileNotFoundError(f"{path}: no MIND files: expected news.tsv and behaviors.tsv")
    for folder in folders:
        for marker in markers:
            _require(folder / marker)
    return folders


def _mind_news(folders: list[Path]) -> pd.DataFrame:
    parts = [read_delimited(f / "news.tsv", "\t", 8) for f in folders]
    news = pd.concat(parts, ignore_index=True)
    news[0] = _clean(news[0])
    # The same article appears in every split's news.tsv: keep one copy.
    return news.drop_duplicates(subset=[0], keep="first").reset_index(drop=True)


def _mind_behaviors(folders: list[Path]) -> pd.DataFrame:
    parts = []
    for folder in folders:
        raw = read_delimited(folder / "behaviors.tsv", "\t", 5).set_axis(
            ["impression_id", "user_id", "time", "history", "impressions"], axis=1
        )
        # Impression ids restart at 1 in every split; prefix them when several splits are loaded.
        prefix = "m" if len(folders) == 1 else f"m{folder.name}-"
        raw["request_id"] = prefix + _clean(raw["impression_id"]).fillna("?").astype(str)
        parts.append(raw)
    behaviors = pd.concat(parts, ignore_index=True)
    behaviors["user_id"] = _clean(behaviors["user_id"])
    behaviors["ts"] = keep_unparsed(behaviors["time"], _timestamps(MIND_TIME_FORMAT))
    return behaviors


def _split_tokens(text: pd.Series) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Whitespace-separated tokens of each row: (row index, index within the row, token) per token."""
    lists = pc.utf8_split_whitespace(pa.array(_clean(text).fillna(""), pa.string()))
    tokens = pc.list_flatten(lists)
    # An empty field splits into one empty token: drop those, then number the tokens within each row.
    present = pc.not_equal(tokens, "").to_numpy(zero_copy_only=False)
    row = pc.list_parent_indices(lists).to_numpy()[present]
    index = np.arange(len(row)) - np.searchsorted(row, row, side="left")
    return row, index, tokens.filter(pa.array(present))


def _mind_impressions(behaviors: pd.DataFrame) -> pd.DataFrame:
    # Arrow's string kernels split the millions of 'N123-1' tokens of a full MIND log quickly.
    row, position, tokens = _split_tokens(behaviors["impressions"])
    parts = pc.split_pattern(tokens, "-", max_splits=1, reverse=True)
    labels = pc.list_slice(parts, 1, 2)
    label = np.full(len(tokens), None, dtype=object)
    label[pc.list_parent_indices(labels).to_numpy()] = pc.list_flatten(labels).to_numpy(zero_copy_only=False)
    label = pd.Series(label)
    base = pd.DataFrame(
        {
            "request_id": behaviors["request_id"].to_numpy()[row],
            "user_id": behaviors["user_id"].to_numpy()[row],
            "item_id": pc.list_element(parts, 0).to_numpy(zero_copy_only=False),
            "event_ts": behaviors["ts"].to_numpy()[row],
            "position": position,
        }
    )
    base["_row"] = np.arange(len(base))
    event_key = base["request_id"] + "-" + base["position"].astype(str)
    impressions = base.assign(event_type="impression", event_id=event_key + "i", _order=0)
    clicked = label == "1"
    clicks = base[clicked].assign(event_type="click", event_id=event_key[clicked] + "c", _order=1)
    # A label that is neither 0 nor 1 (nor absent) is kept as an event ingest will quarantine.
    odd = label.notna() & ~label.isin(["0", "1"])
    odd_events = base[odd].assign(
        event_type="mind-label:" + label[odd], event_id=event_key[odd] + "x", _order=2
    )
    return pd.concat([impressions, clicks, odd_events], ignore_index=True)


def _mind_history(behaviors: pd.DataFrame) -> pd.DataFrame:
    """Impression + click pairs for each user's pre-log history, ending 1 s before their first request."""
    first_ts = _as_timestamps(behaviors["ts"])
    order = behaviors.assign(_first=first_ts).sort_values(["_first"], kind="stable", na_position="last")
    first_rows = order.drop_duplicates("user_id", keep="first")
    row, seq, items = _split_tokens(first_rows["history"])
    if len(row) == 0:
        return pd.DataFrame(columns=[*EVENTS.column_names, "_row", "_order"])
    users = first_rows["user_id"].to_numpy()[row]
    length = np.bincount(row, minlength=len(first_rows))[row]
    first = pd.Series(first_rows["_first"].to_numpy()[row])
    ts = first - pd.to_timedelta(length - seq, unit="s")
    request_id = "h-" + pd.Series(users).astype(str) + "-" + pd.Series(seq).astype(str)
    base = pd.DataFrame(
        {
            "request_id": request_id,
            "user_id": users,
            "item_id": items.to_numpy(zero_copy_only=False),
            "event_ts": ts,
            "position": 0,
        }
    )
    base["_row"] = -len(base) + np.arange(len(base))  # before every logged impression
    return pd.concat(
        [
            base.assign(event_type="impression", event_id=base["request_id"] + "-0i", _order=0),
            base.assign(event_type="click", event_id=base["request_id"] + "-0c", _order=1),
        ],
        ignore_index=True,
    )


def load_mind(path: Path) -> RawDataset:
    """A MIND folder (news.tsv + behaviors.tsv, or split subfolders holding them) as a RawDataset."""
    folders = mind_folders(Path(path))
    news = _mind_news(folders)
    behaviors = _mind_behaviors(folders)
    events = pd.concat([_mind_history(behaviors), _mind_impressions(behaviors)], ignore_index=True)
    events = events.sort_values(["_row", "_order"], kind="stable")
    events = _conform(events, EVENTS)

    event_times = _as_timestamps(events["event_ts"])
    first_seen = event_times.groupby(events["item_id"].to_numpy()).min()
    log_start = event_times.min()
    item_id = news[0]
    abstract, title = _clean(news[4]), _clean(news[3])
    items = pd.DataFrame(
        {
            "item_id": item_id,
            "title": title,
            "body": abstract.where(abstract.notna(), title),
            "category": _clean(news[1]),
            "tags": _clean(news[2]),
            "creator_id": UNKNOWN,
            "creator_group": UNKNOWN,
            # Items never shown get the log's start: MIND has no publication time.
            "published_at": item_id.map(first_seen).fillna(log_start),
        }
    )
    user_first = event_times.groupby(events["user_id"].to_numpy()).min()
    users = pd.DataFrame({"user_id": pd.Index(events["user_id"].dropna().unique()).astype(object)})
    users["user_group"] = UNKNOWN
    users["region"] = UNKNOWN
    users["gender"] = None
    users["occupation"] = None
    users["preferred_style"] = None
    users["declared_interests"] = None
    users["signup_at"] = users["user_id"].map(user_first)
    return RawDataset(users=_conform(users, USERS), items=_conform(items, ITEMS), events=events)


# --- RecBole atomic files -------------------------------------------------------------------------------

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
ATOMIC_TITLE_FIELDS = ("movie_title", "title", "name")
ATOMIC_GENRE_FIELDS = ("class", "genre", "genres", "categories", "category")
ATOMIC_YEAR_FIELDS = ("release_year", "year")


def atomic_files(path: Path) -> dict[str, Path]:
    """The ``.inter`` (required), ``.item`` and ``.user`` files of a RecBole dataset folder, by suffix."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"RecBole folder {path} does not exist")
    folder, inter = path, sorted(path.glob("*.inter"))
    if not inter:
        subfolders = [p for p in sorted(path.iterdir()) if p.is_dir() and list(p.glob("*.inter"))]
        if len(subfolders) == 1:
            folder, inter = subfolders[0], sorted(subfolders[0].glob("*.inter"))
    if not inter:
        raise FileNotFoundError(f"{path}: no RecBole atomic files: expected <name>.inter (and .item, .user)")
    if len(inter) > 1:
        raise ValueError(f"{folder}: several .inter files ({', '.join(p.name for p in inter)}); keep one")
    stem = inter[0].stem
    files = {"inter": inter[0]}
    for suffix in ("item", "user"):
        if (folder / f"{stem}.{suffix}").exists():
            files[suffix] = folder / f"{stem}.{suffix}"
    return files


def read_atomic(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """An atomic file as text columns named by its header's fields, and each field's declared type.

    Malformed rows (too few or too many fields) are kept like ``read_delimited`` keeps them, so ingest can
    quarantine them; a header field without a known ``:type`` is a ValueError naming the file and field.
    """
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        header = handle.readline().rstrip("\r\n")
    types: dict[str, str] = {}
    for column in header.split("\t"):
        name, _, kind = column.strip().rpartition(":")
        if not name or kind not in ATOMIC_TYPES:
            raise ValueError(
                f"{path.name}: header field {column.strip()!r} is not 'name:type' with type one of "
                f"{', '.join(ATOMIC_TYPES)}"
            )
        types[name] = kind
    rows = read_delimited(path, "\t", len(types)).iloc[1:].reset_index(drop=True)
    return rows.set_axis(list(types), axis=1), types


def _pick(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in frame.columns), None)


def _token_seq(text: pd.Series) -> list[list[str]]:
    """Space-separated tokens of each value (RecBole's default ``seq_separator``)."""
    return [str(v).split() if isinstance(v, str) else [] for v in _clean(text)]


def load_recbole(path: Path) -> RawDataset:
    """A RecBole atomic-file folder (``<name>.inter`` + optional ``.item`` / ``.user``) as a RawDataset."""
    files = atomic_files(Path(path))
    inter, types = read_atomic(files["inter"])
    for needed in ("user_id", "item_id", "timestamp"):
        if needed not in inter.columns:
            raise ValueError(f"{files['inter'].name}: no {needed!r} field (header: {', '.join(types)})")
    ratings = pd.DataFrame({"user": inter["user_id"], "item": inter["item_id"], "ts": inter["timestamp"]})
    # Implicit-feedback datasets (no rating field): every interaction is a positive engagement.
    ratings["rating"] = inter["rating"] if "rating" in inter.columns else str(CLICK_RATING)
    events = _movielens_events(ratings)
    if "rating" not in inter.columns:
        events = events[events.event_type != "rating"].reset_index(drop=True)

    profiles: pd.DataFrame | None = None
    if "user" in files:
        raw_users, _ = read_atomic(files["user"])
        profiles = pd.DataFrame(
            {
                "user_id": _clean(raw_users["user_id"]),
                "user_group": _age_group(raw_users["age"]) if "age" in raw_users else UNKNOWN,
                "region": _zip_region(raw_users["zip_code"]) if "zip_code" in raw_users else UNKNOWN,
                "gender": _clean(raw_users["gender"]) if "gender" in raw_users else None,
                "occupation": _clean(raw_users["occupation"]) if "occupation" in raw_users else None,
            }
        )
    users = _movielens_users(events, profiles)

    if "item" in files:
        raw_items, _ = read_atomic(files["item"])
        title_field = _pick(raw_items, ATOMIC_TITLE_FIELDS)
        genre_field = _pick(raw_items, ATOMIC_GENRE_FIELDS)
        year_field = _pick(raw_items, ATOMIC_YEAR_FIELDS)
        ids = raw_items["item_id"]
        titles = (
            pd.Series([" ".join(t) or None for t in _token_seq(raw_items[title_field])], dtype=object)
            if title_field
            else "Item " + _clean(ids).fillna("?").astype(str)
        )
        genres = _token_seq(raw_items[genre_field]) if genre_field else [[] for _ in range(len(raw_items))]
        if year_field:
            released = keep_unparsed(raw_items[year_field], _timestamps("%Y"))
        else:
            released = pd.Series(pd.NaT, index=raw_items.index)
    else:
        ids = pd.Series(events["item_id"].dropna().unique(), dtype=object)
        titles = "Item " + ids.astype(str)
        genres = [[] for _ in range(len(ids))]
        released = pd.Series(pd.NaT, index=ids.index)
    items = _movielens_items(ids, titles, genres, released, events)
    return RawDataset(users=users, items=items, events=events)


# --- dispatch ---------------------------------------------------------------------------------------------


def load_dataset(settings: Settings) -> RawDataset:
    """The configured dataset: the simulator, or MovieLens / MIND / RecBole read from ``settings.dataset_path``."""
    if settings.dataset == "simulator":
        return simulate(settings.simulator)
    if settings.dataset_path is None:
        raise ValueError(f"dataset={settings.dataset!r} needs dataset_path (RECGEN_DATASET_PATH)")
    if settings.dataset == "movielens":
        return load_movielens(settings.dataset_path)
    if settings.dataset == "mind":
        return load_mind(settings.dataset_path)
    if settings.dataset == "recbole":
        return load_recbole(settings.dataset_path)
    raise ValueError(f"unknown dataset {settings.dataset!r}")


__all__ = [
    "RawDataset",
    "atomic_files",
    "keep_unparsed",
    "load_dataset",
    "load_mind",
    "load_movielens",
    "load_recbole",
    "mind_folders",
    "movielens_layout",
    "read_atomic",
    "read_delimited",
]
