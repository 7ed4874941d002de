with

source as (

    select * from {{ source('raw', 'items') }}

),

renamed as (

    select
        cast(item_id as {{ dbt.type_string() }}) as item_id,
        cast(title as {{ dbt.type_string() }}) as title,
        cast(body as {{ dbt.type_string() }}) as body,
        cast(category as {{ dbt.type_string() }}) as category,
        cast(tags as {{ dbt.type_string() }}) as tags,
        cast(creator_id as {{ dbt.type_string() }}) as creator_id,
        cast(creator_group as {{ dbt.type_string() }}) as creator_group,
        cast(published_at as timestamp) as published_at

    from source

)

select * from renamed
