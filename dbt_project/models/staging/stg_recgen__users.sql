with

source as (

    select * from {{ source('raw', 'users') }}

),

renamed as (

    select
        cast(user_id as varchar) as user_id,
        cast(user_group as varchar) as user_group,
        cast(region as varchar) as region,
        cast(preferred_style as varchar) as preferred_style,
        cast(declared_interests as varchar) as declared_interests,
        cast(signup_at as timestamp) as signup_at

    from source

)

select * from renamed
