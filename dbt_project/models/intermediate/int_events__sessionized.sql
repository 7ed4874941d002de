{#
    One row per event with the user session it belongs to: a user's session ends when they are inactive
    for more than session_gap_minutes. training_samples samples one-item requests (rating-only data) within
    a session, and sessions are there for session-level analysis.

    It carries the event's date and slate position too, so int_impressions__labeled reads its impressions
    from here instead of joining every impression to its session by event_id (a hash table over every
    event's string key: 148M events at 1M users).

    Sessions depend only on when a user acted, so they are found on the user's distinct moments (user_id,
    event_ts: a slate's impressions share one; 0.7M moments for 3.0M events at 20k simulated users) and
    joined back to the events, instead of by two window sorts over every event with all its columns. The
    result is the same as ordering the events by (event_ts, event_id): an event tied in time with an earlier
    one is never a session start, and the first of a moment (smallest event_id) starts a session when the
    moment does.
#}
{%- set gap_seconds = (var('session_gap_minutes') | int) * 60 -%}

with

events as (

    select event_id, request_id, user_id, item_id, event_type, event_ts, event_date, position
    from {{ ref('stg_recgen__events') }}

),

moments as (

    -- from the view itself, not the events CTE: a CTE read twice is materialized (148M rows at 1M users)
    select user_id, event_ts, min(event_id) as first_event_id
    from {{ ref('stg_recgen__events') }}
    group by user_id, event_ts

),

gaps as (

    select
        *,
        lag(event_ts) over (partition by user_id order by event_ts) as previous_event_ts

    from moments

),

flagged as (

    select
        *,
        case
            when previous_event_ts is null then 1
            when {{ dbt.datediff('previous_event_ts', 'event_ts', 'second') }} > {{ gap_seconds }} then 1
            else 0
        end as is_moment_session_start

    from gaps

),

numbered as (

    select
        *,
        sum(is_moment_session_start) over (
            partition by user_id order by event_ts rows between unbounded preceding and current row
        ) as session_number

    from flagged

),

sessionized as (

    select
        events.*,
        numbered.session_number,
        case
            when events.event_id = numbered.first_event_id then numbered.is_moment_session_start
            else 0
        end as is_session_start

    from events
    inner join numbered
        on
            events.user_id is not distinct from numbered.user_id
            and events.event_ts is not distinct from numbered.event_ts

)

select
    cast(event_id as {{ dbt.type_string() }}) as event_id,
    cast(request_id as {{ dbt.type_string() }}) as request_id,
    cast(user_id as {{ dbt.type_string() }}) as user_id,
    cast(item_id as {{ dbt.type_string() }}) as item_id,
    cast(event_type as {{ dbt.type_string() }}) as event_type,
    cast(event_ts as timestamp) as event_ts,
    cast(event_date as date) as event_date,
    cast(position as integer) as position,
    cast(user_id || '#' || cast(session_number as {{ dbt.type_string() }}) as {{ dbt.type_string() }}) as session_id,
    cast(session_number as bigint) as session_number,
    cast(is_session_start as integer) as is_session_start

from sessionized
