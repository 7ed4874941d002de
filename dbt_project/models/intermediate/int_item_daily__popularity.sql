{#
    One row per item per day with an impression or a click. Impressions count on the day they were shown,
    clicks on the day they happened, so a day's row only holds what was known by the end of that day; the
    point-in-time item features of training_samples sum the rows of earlier days.

    Both aggregates read int_impressions__labeled itself, not a shared CTE: DuckDB materializes a CTE read
    twice, which here is every labeled impression (130M at 1M users).
#}
with

shown as (

    select
        item_id,
        event_date,
        count(*) as impressions,
        max(event_ts) as last_shown_at

    from {{ ref('int_impressions__labeled') }}
    group by item_id, event_date

),

clicked as (

    select
        item_id,
        cast(clicked_at as date) as event_date,
        count(*) as clicks,
        max(clicked_at) as last_clicked_at

    from {{ ref('int_impressions__labeled') }}
    where clicked = 1
    group by item_id, cast(clicked_at as date)

),

daily as (

    select
        coalesce(shown.item_id, clicked.item_id) as item_id,
        coalesce(shown.event_date, clicked.event_date) as event_date,
        coalesce(shown.impressions, 0) as impressions,
        coalesce(clicked.clicks, 0) as clicks,
        greatest(
            coalesce(shown.last_shown_at, clicked.last_clicked_at),
            coalesce(clicked.last_clicked_at, shown.last_shown_at)
        ) as last_event_ts

    from shown
    full outer join clicked
        on
            shown.item_id = clicked.item_id
            and shown.event_date = clicked.event_date

)

select
    cast(item_id as {{ dbt.type_string() }}) as item_id,
    cast(event_date as date) as event_date,
    cast(impressions as bigint) as impressions,
    cast(clicks as bigint) as clicks,
    -- null on a day with clicks past midnight but no impressions: there is no rate to give
    cast(case when impressions > 0 then cast(clicks as double) / impressions end as double) as ctr,
    cast(last_event_ts as timestamp) as last_event_ts

from daily
