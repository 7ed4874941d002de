{#
    Point-in-time features, shared by the marts.

    prior_totals: a select giving, for each row of `relation` (one row per partition_by x order_by value),
    the totals of the rows of the same partition strictly before it, so a row never sees itself or later rows:
    - sums: {output column: source column}, the sum over earlier rows, 0 when there are none;
    - latest: {output column: source column}, the max over earlier rows, null when there are none (what the
      features were known as of).

    rate_or_zero: numerator / denominator as a double, 0 when the denominator is not positive (no impressions
    yet: a click-through rate of 0).
#}
{% macro prior_totals(relation, partition_by, order_by, sums, latest) -%}
    select
        {{ partition_by }},
        {{ order_by }},
        {%- for output, source in sums.items() %}
        coalesce(sum({{ source }}) over earlier_rows, 0) as {{ output }},
        {%- endfor %}
        {%- for output, source in latest.items() %}
        max({{ source }}) over earlier_rows as {{ output }}{{ "," if not loop.last }}
        {%- endfor %}

    from {{ relation }}
    window earlier_rows as (
        partition by {{ partition_by }} order by {{ order_by }} rows between unbounded preceding and 1 preceding
    )
{%- endmacro %}


{% macro rate_or_zero(numerator, denominator) -%}
    case
        when {{ denominator }} > 0 then cast({{ numerator }} as double) / {{ denominator }}
        else 0
    end
{%- endmacro %}
