import warnings

import dagster as dg

# The daily assets use BackfillPolicy.multi_run(1) on purpose (one run per backfilled day, one DuckDB writer);
# Dagster 1.13 marks the parameter beta and would print that warning in every `make run` and `dagster dev` log.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=r".*backfill_policy.*")
