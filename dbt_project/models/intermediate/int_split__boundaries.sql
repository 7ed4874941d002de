{#
    The temporal split, two ways (both leakage-free by time: train < valid < test, windows contiguous):

    - days (test_share and valid_share unset, the simulator's default): in whole calendar days so a day
      never straddles two splits. test is the last test_days days that have events, valid the valid_days
      before them, train everything earlier. When the data span fewer days than valid + test, the train
      window is empty (starts_at = ends_at) rather than overlapping valid.
    - share (test_share and valid_share set, the default for MovieLens / RecBole): a global cut of the event
      stream by time. test starts at the timestamp of the first event of the last test_share of events (in
      time order), valid at that of the last test_share + valid_share. Events tied at a cut go to the later
      window. Over ml-100k this gives every split thousands of ratings and hundreds of users, where a fixed
      number of days leaves the test window with a few dozen users.

    ends_at is exclusive; train starts at the first day, test ends the day after the last. Portable SQL (window
    functions, no dialect-specific quantile), so the same model runs on engines other than DuckDB.
#}
{%- set valid_days = var('valid_days') | int -%}
{%- set test_days = var('test_days') | int -%}
{%- set test_share = var('test_share', none) -%}
{%- set valid_share = var('valid_share', none) -%}
{%- set by_share = test_share is not none and valid_share is not none -%}
{#- shares in parts per million, so the cut ranks are integer arithmetic on every engine (no float rounding) -#}
{%- if by_share -%}
{%- set test_ppm = (test_share | float * 1000000) | round | int -%}
{%- set valid_ppm = (valid_share | float * 1000000) | round | int -%}
{%- endif -%}

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

{% if by_share %}
ranked as (

    select
        event_ts,
        row_number() over (order by event_ts) as event_rank,
        count(*) over () as n_events

    from events

),

share_cuts as (

    select
        min(case when event_rank * 1000000 > n_events * {{ 1000000 - test_ppm - valid_ppm }} then event_ts end)
            as valid_starts_at,
        min(case when event_rank * 1000000 > n_events * {{ 1000000 - test_ppm }} then event_ts end)
            as test_starts_at

    from ranked

),

cuts as (

    select
        span.first_day_at,
        cast(share_cuts.test_starts_at as timestamp) as test_starts_at,
        {{ dbt.dateadd('day', 1, 'span.last_day_at') }} as test_ends_at,
        cast(share_cuts.valid_starts_at as timestamp) as valid_starts_at

    from span
    cross join share_cuts

),
{% else %}
cuts as (

    select
        first_day_at,
        {{ dbt.dateadd('day', 1 - test_days, 'last_day_at') }} as test_starts_at,
        {{ dbt.dateadd('day', 1, 'last_day_at') }} as test_ends_at,
        {{ dbt.dateadd('day', 1 - test_days - valid_days, 'last_day_at') }} as valid_starts_at

    from span

),
{% endif %}

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
    cast(split as {{ dbt.type_string() }}) as split,
    cast(split_order as integer) as split_order,
    cast(starts_at as timestamp) as starts_at,
    cast(ends_at as timestamp) as ends_at

from windows
