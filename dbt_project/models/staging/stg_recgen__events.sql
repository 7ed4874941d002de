with

source as (

    select * from {{ source('raw', 'events') }}

),

renamed as (

    select
        cast(event_id as {{ dbt.type_string() }}) as event_id,
        cast(request_id as {{ dbt.type_string() }}) as request_id,
        cast(user_id as {{ dbt.type_string() }}) as user_id,
        cast(item_id as {{ dbt.type_string() }}) as item_id,
        cast(event_type as {{ dbt.type_string() }}) as event_type,
        cast(event_ts as timestamp) as event_ts,
        cast(event_ts as date) as event_date,
        cast(position as integer) as position,
        cast(dwell_seconds as double) as dwell_seconds,
        cast(rating as double) as rating

    from source

)

select * from renamed
