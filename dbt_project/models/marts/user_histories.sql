with

history as (

    select * from {{ ref('int_user_history__ordered') }}

)

select
    user_id,
    item_id,
    event_ts,
    split,
    seq,
    dwell_seconds,
    rating

from history
