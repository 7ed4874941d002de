{#
    One row per positive engagement (a click, or a rating of 4 or more), numbered per user in time order.
    Ties at the same instant are ordered by item_id (then request_id) so seq is reproducible.
#}
with

impressions as (

    select * from {{ ref('int_impressions__labeled') }}

),

positives as (

    select *
    from impressions
    where clicked = 1 or rating >= 4

),

ordered as (

    select
        *,
        row_number() over (partition by user_id order by event_ts, item_id, request_id) as seq

    from positives

)

select
    cast(user_id as {{ dbt.type_string() }}) as user_id,
    cast(item_id as {{ dbt.type_string() }}) as item_id,
    cast(request_id as {{ dbt.type_string() }}) as request_id,
    cast(event_ts as timestamp) as event_ts,
    cast(split as {{ dbt.type_string() }}) as split,
    cast(seq as bigint) as seq,
    cast(clicked as integer) as clicked,
    cast(dwell_seconds as double) as dwell_seconds,
    cast(rating as double) as rating

from ordered
