"""Merchants' offers and residents' redemptions of them, on the ledger's two-phase transfers: a hold
when a resident redeems, posted when the merchant captures the code, voided on cancel, void or
expiry, and a refund transfer back; the merchant's statement; the events of each change.

This file is the feature's face: other packages import from ``api.redemptions`` only. Modules:
``offers``, ``redeeming`` (hold, capture, void, refund, expire), ``expiry`` (the background job),
``views`` (lists, statement), ``events`` (webhook events), ``repository``, ``runtime``, ``models``,
``schemas``, ``controllers``, ``errors``. Codes and states are ``domain.redemptions``.
"""

from api.redemptions.controllers import ROUTES
from api.redemptions.expiry import expiry_task
from api.redemptions.runtime import RedemptionsRuntime, open_redemptions
from api.redemptions.views import resident_redemptions

__all__ = ["ROUTES", "RedemptionsRuntime", "expiry_task", "open_redemptions", "resident_redemptions"]
