{#
    One row per impression (request_id, item_id), labeled with what the user did with it. Clicks, dwell and
    ratings are matched to their impression by request_id + user_id + item_id, so rating-only datasets
    (MovieLens: impression + rating, + click when rating >= 4) and click logs (MIND) come out the same.
    Events of users or items missing from raw.users / raw.items are dropped here (the source tests warn
    about them), so every mart row joins to user_features and item_features. session_id is the user
    session of the impression (int_events__sessionized); training_samples samples one-item requests
    (rating-only data) within it.
#}
with

events as (

    select * from {{ ref('stg_recgen__events') }}

),

users as (

    select user_id from {{ ref('stg_recgen__users') }}

),

items as (

    select item_id from {{ ref('stg_recgen__items') }}

),

sessions as (

    select event_id, session_id from {{ ref('int_events__sessionized') }}

),

boundaries as (

    select split, starts_at, ends_at from {{ ref('int_split__boundaries') }}

),

impressions as (

    select
        event_id,
        request_id,
        user_id,
        item_id,
        event_ts,
        event_date,
        position,
        -- a repeated impression of the same item in the same request is a duplicate: keep the first
        row_number() over (
            partition by request_id, item_id order by event_ts, event_id
        ) as impression_rank

    from events
    where event_type = 'impression'

),

clicks as (

    select
        request_id,
        user_id,
        item_id,
        min(event_ts) as first_click_ts

    from events
    where event_type = 'click'
    group by request_id, user_id, item_id

),

dwells as (

    select
        request_id,
        user_id,
        item_id,
        sum(coalesce(dwell_seconds, 0)) as dwell_seconds

    from events
    where event_type = 'dwell'
    group by request_id, user_id, item_id

),

ratings as (

    select
        request_id,
        user_id,
        item_id,
        rating,
        -- a re-rated impression counts with its latest rating
        row_number() over (
            partition by request_id, user_id, item_id order by event_ts desc, event_id desc
        ) as rating_rank

    from events
    where event_type = 'rating' and rating is not null

),

labeled as (

    select
        impressions.request_id,
        impressions.user_id,
        impressions.item_id,
        impressions.event_ts,
        impressions.event_date,
        -- rating-only data has single-item "slates" without a position: their item was in slot 0
        coalesce(impressions.position, 0) as position,
        case when clicks.first_click_ts is null then 0 else 1 end as clicked,
        -- a click is known from when it happened, never before its impression (clock skew in real logs)
        case
            when clicks.first_click_ts is not null
                then greatest(clicks.first_click_ts, impressions.event_ts)
        end as clicked_at,
        coalesce(dwells.dwell_seconds, 0) as dwell_seconds,
        ratings.rating,
        sessions.session_id

    from impressions
    inner join users
        on impressions.user_id = users.user_id
    inner join items
        on impressions.item_id = items.item_id
    left join sessions
        on impressions.event_id = sessions.event_id
    left join clicks
        on
            impressions.request_id = clicks.request_id
            and impressions.user_id = clicks.user_id
            and impressions.item_id = clicks.item_id
    left join dwells
        on
            impressions.request_id = dwells.request_id
            and impressions.user_id = dwells.user_id
            and impressions.item_id = dwells.item_id
    left join ratings
        on
            impressions.request_id = ratings.request_id
            and impressions.user_id = ratings.user_id
            and impressions.item_id = ratings.item_id
            and ratings.rating_rank = 1
    where impressions.impression_rank = 1

),

split_assigned as (

    select
        labeled.*,
        boundaries.split

    from labeled
    inner join boundaries
        on
            labeled.event_ts >= boundaries.starts_at
            and labeled.event_ts < boundaries.ends_at

)

select
    cast(request_id as varchar) as request_id,
    cast(user_id as varchar) as user_id,
    cast(item_id as varchar) as item_id,
    cast(event_ts as timestamp) as event_ts,
    cast(event_date as date) as event_date,
    cast(position as integer) as position,
    cast(clicked as integer) as clicked,
    cast(clicked_at as timestamp) as clicked_at,
    cast(dwell_seconds as double) as dwell_seconds,
    cast(rating as double) as rating,
    cast(session_id as varchar) as session_id,
    cast(split as varchar) as split

from split_assigned
