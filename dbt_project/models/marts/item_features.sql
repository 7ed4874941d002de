{#
    Aggregates over the train split only. Every item of raw.items has a row: items never shown in train
    (cold or new items) get zeros. content_hash is md5(title || '\n' || body), the key the text encoder
    caches item embeddings on.
#}
with

items as (

    select * from {{ ref('stg_recgen__items') }}

),

train as (

    select * from {{ ref('int_impressions__labeled') }}
    where split = 'train'

),

engagement as (

    select
        item_id,
        count(*) as n_impressions,
        sum(clicked) as n_clicks,
        avg(case when clicked = 1 then dwell_seconds end) as avg_dwell_seconds

    from train
    group by item_id

),

final as (

    select
        items.item_id,
        items.title,
        items.body,
        items.category,
        items.tags,
        items.creator_id,
        items.creator_group,
        items.published_at,
        {{ dbt.hash(dbt.concat(['items.title', 'chr(10)', 'items.body'])) }} as content_hash,
        coalesce(engagement.n_impressions, 0) as n_impressions,
        coalesce(engagement.n_clicks, 0) as n_clicks,
        {{ rate_or_zero('engagement.n_clicks', 'engagement.n_impressions') }} as ctr,
        coalesce(engagement.avg_dwell_seconds, 0) as avg_dwell_seconds

    from items
    left join engagement
        on items.item_id = engagement.item_id

)

select
    cast(item_id as {{ dbt.type_string() }}) as item_id,
    cast(title as {{ dbt.type_string() }}) as title,
    cast(body as {{ dbt.type_string() }}) as body,
    cast(category as {{ dbt.type_string() }}) as category,
    cast(tags as {{ dbt.type_string() }}) as tags,
    cast(creator_id as {{ dbt.type_string() }}) as creator_id,
    cast(creator_group as {{ dbt.type_string() }}) as creator_group,
    cast(published_at as timestamp) as published_at,
    cast(content_hash as {{ dbt.type_string() }}) as content_hash,
    cast(n_impressions as bigint) as n_impressions,
    cast(n_clicks as bigint) as n_clicks,
    cast(ctr as double) as ctr,
    cast(avg_dwell_seconds as double) as avg_dwell_seconds,
    -- popularity is the train click count: what the popular-items retriever ranks by
    cast(n_clicks as bigint) as popularity

from final
