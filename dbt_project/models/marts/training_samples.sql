{#
    One row per sampled impression, with features that only use events strictly before the row:
    - user features count the user's impressions at their own time and clicks at the time they happened,
      summed over instants strictly before the row's event_ts (so the rest of the row's own slate, shown at
      the same instant, and its own click are excluded);
    - item features sum whole days strictly before event_date (int_item_daily__popularity);
    - features_as_of is the latest event any feature of the row read (1970-01-01 when none), so the
      no_future_features test catches any leak of the row's own or later events.
    Every positive is kept; of each request's negatives, the negatives_per_positive x (positives in the
    request) with the smallest hash of (request_id, item_id) are kept: deterministic, and unrelated to
    position or item. Requests without a positive contribute no rows. One-item requests (rating-only data
    such as MovieLens, where each rating is its own request) have no negatives of their own: they are
    sampled together within the user's session instead, so disliked ratings (no click) next to liked ones
    become the negatives.
#}
{%- set negatives_per_positive = var('negatives_per_positive') | int -%}
{%- set nothing_known = "cast('1970-01-01 00:00:00' as timestamp)" -%}

with

item_daily as (

    select * from {{ ref('int_item_daily__popularity') }}

),

items as (

    select item_id, published_at from {{ ref('stg_recgen__items') }}

),

user_timeline as (

    -- every CTE here reads int_impressions__labeled itself: a CTE read more than once is materialized
    -- (130M rows at 1M users)

    select user_id, event_ts as happened_at, 1 as n_impressions, 0 as n_clicks
    from {{ ref('int_impressions__labeled') }}

    union all

    select user_id, clicked_at as happened_at, 0 as n_impressions, 1 as n_clicks
    from {{ ref('int_impressions__labeled') }}
    where clicked = 1

),

user_moments as (

    -- one row per user per instant, so "earlier rows" below means strictly earlier events
    select
        user_id,
        happened_at,
        sum(n_impressions) as n_impressions,
        sum(n_clicks) as n_clicks

    from user_timeline
    group by user_id, happened_at

),

user_prior as (

    -- the user's earlier moments, i.e. strictly earlier events
    {{ prior_totals(
        'user_moments', 'user_id', 'happened_at',
        sums={'user_prior_impressions': 'n_impressions', 'user_prior_clicks': 'n_clicks'},
        latest={'user_features_as_of': 'happened_at'},
    ) }}

),

item_prior as (

    -- the item's earlier days
    {{ prior_totals(
        'item_daily', 'item_id', 'event_date',
        sums={'item_prior_impressions': 'impressions', 'item_prior_clicks': 'clicks'},
        latest={'item_features_as_of': 'last_event_ts'},
    ) }}

),

requests as (

    -- one row per request; a one-item request's session is its one impression's
    select
        request_id,
        count(*) as n_impressions,
        sum(clicked) as positives,
        max(session_id) as session_id

    from {{ ref('int_impressions__labeled') }}
    group by request_id

),

request_groups as (

    select
        request_id,
        positives,
        case
            when n_impressions > 1 then 'request|' || request_id
            else 'session|' || coalesce(session_id, request_id)
        end as sampling_group

    from requests

),

group_totals as (

    select sampling_group, sum(positives) as group_positives
    from request_groups
    group by sampling_group

),

kept_requests as (

    -- a group without a positive keeps no row, so its requests are dropped before the hash ranking (most
    -- impressions: 58% at 20k simulated users); the ranks within the groups kept are unchanged
    select
        request_groups.request_id,
        request_groups.sampling_group,
        group_totals.group_positives

    from request_groups
    inner join group_totals
        on request_groups.sampling_group = group_totals.sampling_group
    where group_totals.group_positives > 0

),

slates as (

    -- the negatives of the groups kept: sizes and totals come by aggregation and one join on the requests
    -- kept, not by windows over every impression
    select
        impressions.*,
        kept_requests.sampling_group,
        kept_requests.group_positives

    from {{ ref('int_impressions__labeled') }} as impressions
    inner join kept_requests
        on impressions.request_id = kept_requests.request_id
    where impressions.clicked = 0

),

ranked_negatives as (

    -- every positive is kept, so only the negatives are ranked by hash within their group
    select
        *,
        row_number() over (
            partition by sampling_group
            order by {{ dbt.hash(dbt.concat(['request_id', "'|'", 'item_id'])) }}, request_id, item_id
        ) as hash_rank

    from slates

),

sampled as (

    -- a positive's group always has a positive, so every positive is kept
    select request_id, user_id, item_id, event_ts, event_date, position, clicked, dwell_seconds, split
    from {{ ref('int_impressions__labeled') }}
    where clicked = 1

    union all

    select request_id, user_id, item_id, event_ts, event_date, position, clicked, dwell_seconds, split
    from ranked_negatives
    where hash_rank <= {{ negatives_per_positive }} * group_positives

),

final as (

    select
        sampled.request_id,
        sampled.user_id,
        sampled.item_id,
        sampled.event_ts,
        sampled.event_date,
        sampled.position,
        sampled.clicked as label,
        sampled.dwell_seconds,
        sampled.split,
        coalesce(user_prior.user_prior_impressions, 0) as user_prior_impressions,
        coalesce(user_prior.user_prior_clicks, 0) as user_prior_clicks,
        {{ rate_or_zero('user_prior.user_prior_clicks', 'user_prior.user_prior_impressions') }} as user_prior_ctr,
        coalesce(item_prior.item_prior_impressions, 0) as item_prior_impressions,
        coalesce(item_prior.item_prior_clicks, 0) as item_prior_clicks,
        {{ rate_or_zero('item_prior.item_prior_clicks', 'item_prior.item_prior_impressions') }} as item_prior_ctr,
        -- a publication time after the impression is a data error, not a negative age
        greatest(
            cast({{ dbt.datediff('items.published_at', 'sampled.event_ts', 'second') }} as double) / 3600, 0
        ) as item_age_hours,
        greatest(
            coalesce(user_prior.user_features_as_of, {{ nothing_known }}),
            coalesce(item_prior.item_features_as_of, {{ nothing_known }})
        ) as features_as_of

    from sampled
    left join user_prior
        on
            sampled.user_id = user_prior.user_id
            and sampled.event_ts = user_prior.happened_at
    left join item_prior
        on
            sampled.item_id = item_prior.item_id
            and sampled.event_date = item_prior.event_date
    left join items
        on sampled.item_id = items.item_id

)

select
    cast(request_id as {{ dbt.type_string() }}) as request_id,
    cast(user_id as {{ dbt.type_string() }}) as user_id,
    cast(item_id as {{ dbt.type_string() }}) as item_id,
    cast(event_ts as timestamp) as event_ts,
    cast(event_date as date) as event_date,
    cast(position as integer) as position,
    cast(label as integer) as label,
    cast(dwell_seconds as double) as dwell_seconds,
    cast(split as {{ dbt.type_string() }}) as split,
    cast(user_prior_impressions as bigint) as user_prior_impressions,
    cast(user_prior_clicks as bigint) as user_prior_clicks,
    cast(user_prior_ctr as double) as user_prior_ctr,
    cast(item_prior_impressions as bigint) as item_prior_impressions,
    cast(item_prior_clicks as bigint) as item_prior_clicks,
    cast(item_prior_ctr as double) as item_prior_ctr,
    cast(item_age_hours as double) as item_age_hours,
    cast(features_as_of as timestamp) as features_as_of

from final
