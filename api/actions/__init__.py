"""Low-carbon actions: residents link partner accounts; partners push signed records or residents claim
them; each record is decided once and credited to the ledger; operators review what was held; residents
see their balance, actions, statement and impact.

This file is the feature's face: other packages import from ``api.actions`` only. Modules, one job
each: ``links``, ``ingestion`` (push and claim: read, decide, write), ``repository`` (all the SQL),
``crediting`` (decisions into ledger transfers), ``reviews``, ``views`` (what a resident sees),
``runtime`` (what the services need, from the settings), ``errors``, ``models``, ``schemas``,
``controllers``; ``audit`` (credits and actions agree, for ``ledger verify``); operators' ``oversight`` (lists, trails), ``reversals``, ``stats`` and
``operator_controllers``. The decision itself is pure: ``domain.decision``.
"""

from api.actions.audit import check_credits_match_actions
from api.actions.controllers import ROUTES
from api.actions.crediting import co2e_transfer_id
from api.actions.links import list_links
from api.actions.reversals import reversal_co2e_transfer_id
from api.actions.runtime import ActionsRuntime, open_actions
from api.actions.views import resident_actions

__all__ = [
    "ROUTES",
    "ActionsRuntime",
    "check_credits_match_actions",
    "co2e_transfer_id",
    "list_links",
    "open_actions",
    "resident_actions",
    "reversal_co2e_transfer_id",
]
