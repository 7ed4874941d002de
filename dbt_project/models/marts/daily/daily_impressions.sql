{#
    The labeled impressions of each day: the day-partitioned fact table that Dagster builds one partition at
    a time (the `daily` dbt assets pass min_date / max_date, the partition's [start, end) window). A re-run of
    a day replaces that day's rows (daily_incremental_strategy in macros/portability.sql: delete+insert by key
    on DuckDB, the day's partition overwritten on Spark), so backfills are idempotent.
    Without the vars (a plain `dbt build`) every day is (re)built.
    No split column: the split depends on the latest day in the data and moves as days arrive, which is why
    marts.interactions is rebuilt whole while this table only ever grows by days.
#}
{{
    config(
        materialized='incremental',
        incremental_strategy=daily_incremental_strategy(),
        partition_by=daily_partition_by(),
        unique_key=['request_id', 'item_id'],
        on_schema_change='fail',
        tags=['daily'],
    )
}}

with

impressions as (

    select * from {{ ref('int_impressions__labeled') }}
    where {{ day_window('event_date') }}

),

items as (

    select item_id, category, creator_group from {{ ref('stg_recgen__items') }}

)

select
    impressions.event_date,
    impressions.request_id,
    impressions.user_id,
    impressions.item_id,
    impressions.event_ts,
    impressions.position,
    impressions.clicked,
    impressions.dwell_seconds,
    impressions.rating,
    items.category,
    items.creator_group

from impressions
inner join items
    on impressions.item_id = items.item_id
