{#
    The temporal split, in whole calendar days so a day never straddles two splits: test is the last
    test_days days that have events, valid the valid_days before them, train everything earlier.
    ends_at is exclusive. When the data span fewer days than valid + test, the train window is empty
    (starts_at = ends_at) rather than overlapping valid.
#}
{%- set valid_days = var('valid_days') | int -%}
{%- set test_days = var('test_days') | int -%}

with

events as (

    select event_ts, event_date from {{ ref('stg_recgen__events') }}

),

span as (

    select
        cast(min(event_date) as timestamp) as first_day_at,
        cast(max(event_date) as timestamp) as last_day_at

    from events

),

cuts as (

    select
        first_day_at,
        {{ dbt.dateadd('day', 1 - test_days, 'last_day_at') }} as test_starts_at,
        {{ dbt.dateadd('day', 1, 'last_day_at') }} as test_ends_at,
        {{ dbt.dateadd('day', 1 - test_days - valid_days, 'last_day_at') }} as valid_starts_at

    from span

),

windows as (

    select 'train' as split, 1 as split_order, least(first_day_at, valid_starts_at) as starts_at, valid_starts_at as ends_at
    from cuts

    union all

    select 'valid' as split, 2 as split_order, valid_starts_at as starts_at, test_starts_at as ends_at
    from cuts

    union all

    select 'test' as split, 3 as split_order, test_starts_at as starts_at, test_ends_at as ends_at
    from cuts

)

select
    cast(split as varchar) as split,
    cast(split_order as integer) as split_order,
    cast(starts_at as timestamp) as starts_at,
    cast(ends_at as timestamp) as ends_at

from windows
