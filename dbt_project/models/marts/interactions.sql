with

impressions as (

    select * from {{ ref('int_impressions__labeled') }}

)

select
    request_id,
    user_id,
    item_id,
    event_ts,
    event_date,
    position,
    clicked,
    dwell_seconds,
    rating,
    split

from impressions
