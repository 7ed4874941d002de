with

source as (

    select * from {{ source('raw', 'users') }}

),

renamed as (

    select
        cast(user_id as {{ dbt.type_string() }}) as user_id,
        cast(user_group as {{ dbt.type_string() }}) as user_group,
        cast(region as {{ dbt.type_string() }}) as region,
        cast(gender as {{ dbt.type_string() }}) as gender,
        cast(occupation as {{ dbt.type_string() }}) as occupation,
        cast(preferred_style as {{ dbt.type_string() }}) as preferred_style,
        cast(declared_interests as {{ dbt.type_string() }}) as declared_interests,
        cast(signup_at as timestamp) as signup_at

    from source

)

select * from renamed
