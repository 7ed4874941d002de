{#
    Point-in-time correctness of a feature table: every row's features must come only from events strictly
    before the row's own event, i.e. as_of_column < event_ts_column. A null on either side fails too:
    an unknown as-of time cannot be shown to be safe. Returns the offending rows.
#}
{% test no_future_features(model, as_of_column='features_as_of', event_ts_column='event_ts') %}

select *
from {{ model }}
where
    {{ as_of_column }} is null
    or {{ event_ts_column }} is null
    or not ({{ as_of_column }} < {{ event_ts_column }})

{% endtest %}
