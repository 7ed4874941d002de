with

boundaries as (

    select * from {{ ref('int_split__boundaries') }}

)

select
    split,
    starts_at,
    ends_at

from boundaries
order by split_order
