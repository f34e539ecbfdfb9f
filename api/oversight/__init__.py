"""Oversight: what operators and auditors read of the ledger and of residents, over the API. Transfers
in log order, accounts and balances as of any moment, statements with running balances, the whole log
streamed (JSON Lines or CSV), verification as a background job, and one resident's page.

This file is the feature's face. Modules: ``ledger_views``, ``residents``, ``jobs`` (the job runner),
``models``, ``schemas``, ``controllers``.
"""

from api.oversight.controllers import ROUTES
from api.oversight.jobs import JobRunner

__all__ = ["ROUTES", "JobRunner"]
