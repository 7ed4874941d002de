{#
    One row per impression (request_id, item_id), labeled with what the user did with it. Clicks, dwell and
    ratings are matched to their impression by request_id + user_id + item_id, so rating-only datasets
    (MovieLens: impression + rating, + click when rating >= 4) and click logs (MIND) come out the same.
    Events of users or items missing from raw.users / raw.items are dropped here (the source tests warn
    about them), so every mart row joins to user_features and item_features. session_id is the user
    session of the impression; training_samples samples one-item requests (rating-only data) within it.

    Memory: the impression stream is most of the events (12.9M of 14.8M at 100k users), so this model
    joins it to one pre-aggregated engagement table (int_events__engagement, 0.8M rows there) instead of
    to clicks, dwells and ratings separately, and picks the split by comparing with the three boundaries
    instead of by a range join. The impressions are read from int_events__sessionized, which carries each
    event's session, rather than joined to it by event_id, so no join here builds a hash table over the
    event stream (148M events at 1M users).
#}
with

users as (

    select user_id from {{ ref('stg_recgen__users') }}

),

items as (

    select item_id from {{ ref('stg_recgen__items') }}

),

boundaries as (

    select split, starts_at, ends_at from {{ ref('int_split__boundaries') }}

),

repeated as (

    -- the (request, item) pairs shown more than once: few, so only their impressions are ranked below.
    -- Each branch reads the table itself: a CTE read twice is materialized (130M impressions at 1M users)
    select request_id, item_id, 1 as is_repeated
    from {{ ref('int_events__sessionized') }}
    where event_type = 'impression'
    group by request_id, item_id
    having count(*) > 1

),

single_impressions as (

    select
        events.event_id, events.request_id, events.user_id, events.item_id, events.event_ts,
        events.event_date, events.position, events.session_id

    from {{ ref('int_events__sessionized') }} as events
    left join repeated
        on
            events.request_id is not distinct from repeated.request_id
            and events.item_id is not distinct from repeated.item_id
    where events.event_type = 'impression' and repeated.is_repeated is null

),

first_repeated_impressions as (

    -- a repeated impression of the same item in the same request is a duplicate: keep the first
    select event_id, request_id, user_id, item_id, event_ts, event_date, position, session_id
    from (
        select
            events.*,
            row_number() over (
                partition by events.request_id, events.item_id order by events.event_ts, events.event_id
            ) as impression_rank

        from {{ ref('int_events__sessionized') }} as events
        inner join repeated
            on
                events.request_id is not distinct from repeated.request_id
                and events.item_id is not distinct from repeated.item_id
        where events.event_type = 'impression'
    ) as ranked
    where impression_rank = 1

),

impressions as (

    -- every event of int_events__sessionized (stg_recgen__events with its session) that is an impression
    select * from single_impressions
    union all
    select * from first_repeated_impressions

),

engagement as (

    select request_id, user_id, item_id, first_click_ts, dwell_seconds, rating
    from {{ ref('int_events__engagement') }}

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
        case when engagement.first_click_ts is null then 0 else 1 end as clicked,
        -- a click is known from when it happened, never before its impression (clock skew in real logs)
        case
            when engagement.first_click_ts is not null
                then greatest(engagement.first_click_ts, impressions.event_ts)
        end as clicked_at,
        coalesce(engagement.dwell_seconds, 0) as dwell_seconds,
        engagement.rating,
        impressions.session_id

    from impressions
    inner join users
        on impressions.user_id = users.user_id
    inner join items
        on impressions.item_id = items.item_id
    left join engagement
        on
            impressions.request_id = engagement.request_id
            and impressions.user_id = engagement.user_id
            and impressions.item_id = engagement.item_id

),

windows as (

    -- the three split windows side by side, one row
    select
        max(case when split = 'train' then starts_at end) as train_starts_at,
        max(case when split = 'train' then ends_at end) as train_ends_at,
        max(case when split = 'valid' then starts_at end) as valid_starts_at,
        max(case when split = 'valid' then ends_at end) as valid_ends_at,
        max(case when split = 'test' then starts_at end) as test_starts_at,
        max(case when split = 'test' then ends_at end) as test_ends_at

    from boundaries

),

split_assigned as (

    -- starts_at inclusive, ends_at exclusive; an impression outside every window is dropped
    select
        labeled.*,
        case
            when labeled.event_ts >= windows.train_starts_at and labeled.event_ts < windows.train_ends_at
                then 'train'
            when labeled.event_ts >= windows.valid_starts_at and labeled.event_ts < windows.valid_ends_at
                then 'valid'
            when labeled.event_ts >= windows.test_starts_at and labeled.event_ts < windows.test_ends_at
                then 'test'
        end as split

    from labeled
    cross join windows

)

select
    cast(request_id as {{ dbt.type_string() }}) as request_id,
    cast(user_id as {{ dbt.type_string() }}) as user_id,
    cast(item_id as {{ dbt.type_string() }}) as item_id,
    cast(event_ts as timestamp) as event_ts,
    cast(event_date as date) as event_date,
    cast(position as integer) as position,
    cast(clicked as integer) as clicked,
    cast(clicked_at as timestamp) as clicked_at,
    cast(dwell_seconds as double) as dwell_seconds,
    cast(rating as double) as rating,
    cast(session_id as {{ dbt.type_string() }}) as session_id,
    cast(split as {{ dbt.type_string() }}) as split

from split_assigned
where split is not null
