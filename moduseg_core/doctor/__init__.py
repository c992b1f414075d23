"""``moduseg doctor``: is everything a config needs here, before a long job starts?

``checks`` holds the result type and the light probes a plugin's ``doctor_checks()`` may use
(packages by ``find_spec``, files, the Hugging Face cache, devices); ``run`` walks a config's
components (``diagnose``) and stops a job on the first problem (``preflight``).
"""

from __future__ import annotations

from .checks import Check, fail, ok

__all__ = ["Check", "fail", "ok"]
