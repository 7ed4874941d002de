with

source as (

    select * from {{ source('raw', 'items') }}

),

renamed as (

    select
        cast(item_id as varchar) as item_id,
        cast(title as varchar) as title,
        cast(body as varchar) as body,
        cast(category as varchar) as category,
        cast(tags as varchar) as tags,
        cast(creator_id as varchar) as creator_id,
        cast(creator_group as varchar) as creator_group,
        cast(published_at as timestamp) as published_at

    from source

)

select * from renamed
