{#
    Custom schemas are used verbatim (staging, intermediate, marts) instead of dbt's default
    "<target schema>_<custom schema>", because the ML and the services read fixed names such as
    marts.training_samples. Models without a custom schema land in the target schema.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
