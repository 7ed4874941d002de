with

source as (

    select * from {{ source('raw', 'events') }}

),

renamed as (

    select
        cast(event_id as varchar) as event_id,
        cast(request_id as varchar) as request_id,
        cast(user_id as varchar) as user_id,
        cast(item_id as varchar) as item_id,
        cast(event_type as varchar) as event_type,
        cast(event_ts as timestamp) as event_ts,
        cast(event_ts as date) as event_date,
        cast(position as integer) as position,
        cast(dwell_seconds as double) as dwell_seconds,
        cast(rating as double) as rating

    from source

)

select * from renamed
