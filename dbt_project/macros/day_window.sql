{#
    The rows of the day partition being built: `column` in [var('min_date'), var('max_date')), the window
    Dagster passes for a daily partition (orchestration/assets/dbt.py). Without both vars, every row.
#}
{% macro day_window(column) -%}
    {%- set min_date = var('min_date', none) -%}
    {%- set max_date = var('max_date', none) -%}
    {%- if min_date is not none and max_date is not none -%}
        {{ column }} >= cast('{{ min_date }}' as date) and {{ column }} < cast('{{ max_date }}' as date)
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}
