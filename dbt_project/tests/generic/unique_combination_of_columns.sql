{#
    The grain of a model: no two rows share the values of combination_of_columns (nulls compare equal,
    so a null key part does not hide a duplicate). Returns each duplicated key with its row count.
#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

select
    {{ combination_of_columns | join(', ') }},
    count(*) as n_rows
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1

{% endtest %}
