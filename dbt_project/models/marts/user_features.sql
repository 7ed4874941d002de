{#
    Aggregates over the train split only, so validation and test never see their own outcomes. Every user
    of raw.users has a row: users without train events get zero counts and rates, and null for avg_rating,
    last_event_ts and top_category, which have no value to give.

    Both aggregates read the train impressions from int_impressions__labeled itself, not from a shared CTE:
    DuckDB materializes a CTE read twice, which here is every train impression (over 100M rows at 1M users).
#}
with

users as (

    select * from {{ ref('stg_recgen__users') }}

),

items as (

    select item_id, category from {{ ref('stg_recgen__items') }}

),

engagement as (

    select
        user_id,
        count(*) as n_impressions,
        sum(clicked) as n_clicks,
        -- dwell is read on clicked impressions: an unclicked impression has no dwell to average
        avg(case when clicked = 1 then dwell_seconds end) as avg_dwell_seconds,
        count(rating) as n_ratings,
        avg(rating) as avg_rating,
        max(event_ts) as last_event_ts

    from {{ ref('int_impressions__labeled') }}
    where split = 'train'
    group by user_id

),

category_clicks as (

    select
        train.user_id,
        items.category,
        count(*) as n_clicks

    from {{ ref('int_impressions__labeled') }} as train
    inner join items
        on train.item_id = items.item_id
    where train.split = 'train' and train.clicked = 1
    group by train.user_id, items.category

),

top_categories as (

    select
        user_id,
        category,
        -- ties go to the alphabetically first category, so reruns agree
        row_number() over (partition by user_id order by n_clicks desc, category) as category_rank

    from category_clicks

),

final as (

    select
        users.user_id,
        users.user_group,
        users.region,
        users.gender,
        users.occupation,
        users.preferred_style,
        users.declared_interests,
        coalesce(engagement.n_impressions, 0) as n_impressions,
        coalesce(engagement.n_clicks, 0) as n_clicks,
        {{ rate_or_zero('engagement.n_clicks', 'engagement.n_impressions') }} as ctr,
        coalesce(engagement.avg_dwell_seconds, 0) as avg_dwell_seconds,
        coalesce(engagement.n_ratings, 0) as n_ratings,
        engagement.avg_rating,
        engagement.last_event_ts,
        top_categories.category as top_category

    from users
    left join engagement
        on users.user_id = engagement.user_id
    left join top_categories
        on
            users.user_id = top_categories.user_id
            and top_categories.category_rank = 1

)

select
    cast(user_id as {{ dbt.type_string() }}) as user_id,
    cast(user_group as {{ dbt.type_string() }}) as user_group,
    cast(region as {{ dbt.type_string() }}) as region,
    cast(gender as {{ dbt.type_string() }}) as gender,
    cast(occupation as {{ dbt.type_string() }}) as occupation,
    cast(preferred_style as {{ dbt.type_string() }}) as preferred_style,
    cast(declared_interests as {{ dbt.type_string() }}) as declared_interests,
    cast(n_impressions as bigint) as n_impressions,
    cast(n_clicks as bigint) as n_clicks,
    cast(ctr as double) as ctr,
    cast(avg_dwell_seconds as double) as avg_dwell_seconds,
    cast(n_ratings as bigint) as n_ratings,
    cast(avg_rating as double) as avg_rating,
    cast(last_event_ts as timestamp) as last_event_ts,
    cast(top_category as {{ dbt.type_string() }}) as top_category

from final
