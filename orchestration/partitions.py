"""The daily partitions: one per calendar day of events, from settings.first_partition_day (UTC).

Day-partitioned assets (the daily dbt marts, the champion's scores, the drift report and the generated copy)
share this one definition, so one run can build a day of all of them.
"""

import dagster as dg

from models.settings import get_settings

daily_partitions = dg.DailyPartitionsDefinition(start_date=get_settings().first_partition_day)
