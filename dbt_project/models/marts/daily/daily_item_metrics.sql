{#
    One row per (day, item shown that day): impressions, clicks, CTR and dwell. Built per day partition from
    daily_impressions, like it; the exposure and CTR series that monitoring dashboards plot per item,
    category and creator group.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy=daily_incremental_strategy(),
        partition_by=daily_partition_by(),
        unique_key=['event_date', 'item_id'],
        on_schema_change='fail',
        tags=['daily'],
    )
}}

with

impressions as (

    select * from {{ ref('daily_impressions') }}
    where {{ day_window('event_date') }}

)

select
    event_date,
    item_id,
    any_value(category) as category,
    any_value(creator_group) as creator_group,
    cast(count(*) as bigint) as impressions,
    cast(sum(clicked) as bigint) as clicks,
    cast(sum(clicked) as double) / count(*) as ctr,
    cast(avg(case when clicked = 1 then dwell_seconds end) as double) as avg_click_dwell_seconds

from impressions
group by event_date, item_id
