{#
    What differs between the engines the project builds on (DuckDB, the default; Spark, the distributed one),
    through dbt's adapter dispatch so the models stay the same SQL. Types go through dbt's cross-database
    macros (dbt.type_string()), date math through dbt.dateadd / dbt.datediff, hashing through dbt.hash.

    daily_incremental_strategy: how a daily mart replaces a day it builds again. DuckDB deletes that day's rows
    by the model's unique_key and inserts them (delete+insert); Spark without Delta has no delete, so it
    overwrites the day's partition (insert_overwrite, partitioned by event_date). Both leave exactly the rows
    of the rebuilt day, so a backfill is idempotent on either engine.
#}
{% macro daily_incremental_strategy() -%}
    {{ return(adapter.dispatch('daily_incremental_strategy', 'recgen')()) }}
{%- endmacro %}

{% macro default__daily_incremental_strategy() -%}
    {{ return('delete+insert') }}
{%- endmacro %}

{% macro spark__daily_incremental_strategy() -%}
    {{ return('insert_overwrite') }}
{%- endmacro %}


{#- The partitioning of a daily mart: by day on Spark (what insert_overwrite replaces), none on DuckDB. -#}
{% macro daily_partition_by() -%}
    {{ return(adapter.dispatch('daily_partition_by', 'recgen')()) }}
{%- endmacro %}

{% macro default__daily_partition_by() -%}
    {{ return(none) }}
{%- endmacro %}

{% macro spark__daily_partition_by() -%}
    {{ return(['event_date']) }}
{%- endmacro %}


{#
    Point a Spark target at a raw snapshot: raw.users / raw.items / raw.events as tables over DIR/<table>/
    (Parquet, the validated rows, e.g. DuckDB's `copy raw.events to 'DIR/events' (format parquet,
    per_thread_output)`). Run by the on-run-start hook of dbt_project.yml when --vars gives raw_parquet_path
    on a spark target (the in-memory catalog of profiles.yml lasts one invocation); on DuckDB the ingest step
    writes raw.* itself.
#}
{% macro register_raw_parquet(path) -%}
    {% if not execute %}{{ return('') }}{% endif %}
    {% do run_query('create database if not exists raw') %}
    {% for table in ['users', 'items', 'events'] %}
        {% do run_query('drop table if exists raw.' ~ table) %}
        {% do run_query("create table raw." ~ table ~ " using parquet location '" ~ path ~ "/" ~ table ~ "'") %}
    {% endfor %}
{%- endmacro %}
