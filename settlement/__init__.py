"""Billing settlements: closing a meter's period with the ``settle`` command and finalizing its energy
from the minute rows.

:mod:`.settings` (``ENERLINK_SETTLEMENT_*``), :mod:`.records` (the row, the rules that finalize it,
reading and exporting), :mod:`.settling` (the settle round for one meter or a fleet), :mod:`.cli`
(``enerlink settle``). Used by the API and the command line; uses only the shared infrastructure.
"""
