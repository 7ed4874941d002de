{#
    One row per (request_id, user_id, item_id) with a click, a dwell or a rating: what the user did with the
    item shown in that request. int_impressions__labeled joins it to the impressions once, instead of one
    join per event type over the whole impression stream (which held several large hash joins at once and
    did not fit in a 4 GB DuckDB memory_limit at 100k users).
#}
with

events as (

    select * from {{ ref('stg_recgen__events') }}

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

signals as (

    select
        request_id, user_id, item_id, first_click_ts, cast(null as double) as dwell_seconds, cast(null as double) as rating
    from clicks

    union all

    select
        request_id, user_id, item_id, cast(null as timestamp) as first_click_ts, dwell_seconds, cast(null as double) as rating
    from dwells

    union all

    select
        request_id, user_id, item_id, cast(null as timestamp) as first_click_ts, cast(null as double) as dwell_seconds, rating
    from ratings
    where rating_rank = 1

),

engagement as (

    -- each key has at most one row per event type above, so min/max pick that row's value
    select
        request_id,
        user_id,
        item_id,
        min(first_click_ts) as first_click_ts,
        max(dwell_seconds) as dwell_seconds,
        max(rating) as rating

    from signals
    group by request_id, user_id, item_id

)

select
    cast(request_id as {{ dbt.type_string() }}) as request_id,
    cast(user_id as {{ dbt.type_string() }}) as user_id,
    cast(item_id as {{ dbt.type_string() }}) as item_id,
    cast(first_click_ts as timestamp) as first_click_ts,
    cast(dwell_seconds as double) as dwell_seconds,
    cast(rating as double) as rating

from engagement
