-- The three split windows tile time in order without gap or overlap: each window ends where the next
-- starts, and none ends before it starts. Returns the windows that break this.
with

ordered as (

    select
        split,
        starts_at,
        ends_at,
        case split when 'train' then 1 when 'valid' then 2 when 'test' then 3 end as split_order

    from {{ ref('split_boundaries') }}

),

paired as (

    select
        *,
        lead(starts_at) over (order by split_order) as next_starts_at,
        count(*) over () as n_splits

    from ordered

)

select *
from paired
where
    starts_at > ends_at
    or next_starts_at <> ends_at
    or n_splits <> 3
