"""Former name of :mod:`models.evaluation` (the module is mostly the evaluation protocol); kept for imports."""

from models.evaluation import *  # noqa: F403
from models.evaluation import __doc__ as _protocol  # noqa: F401
