{#
    Temporal split consistency: every row's timestamp lies inside the [starts_at, ends_at) window of the
    split it is labeled with, as listed in `boundaries` (split, starts_at, ends_at). A row whose split has
    no window fails too. Returns the offending rows.
#}
{% test within_split_window(model, boundaries, split_column='split', ts_column='event_ts') %}

select
    model_rows.*
from {{ model }} as model_rows
left join {{ boundaries }} as windows
    on model_rows.{{ split_column }} = windows.split
where
    windows.split is null
    or model_rows.{{ ts_column }} is null
    or model_rows.{{ ts_column }} < windows.starts_at
    or model_rows.{{ ts_column }} >= windows.ends_at

{% endtest %}
