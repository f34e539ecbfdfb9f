"""The redemptions feature's errors, each with its stable code (mapped to HTTP in ``api.errors``)."""

from __future__ import annotations

from domain.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable


class OfferNotFound(NotFound):
    code = "offer_not_found"
    title = "No such offer"


class OfferUnavailable(Conflict):
    code = "offer_unavailable"
    title = "The offer is paused or outside its validity"


class InsufficientPoints(Conflict):
    code = "insufficient_points"
    title = "Not enough available points for this offer"


class OutOfStock(Conflict):
    code = "out_of_stock"
    title = "The offer is out of stock"


class RedemptionLimit(Conflict):
    code = "redemption_limit"
    title = "You have redeemed this offer as often as it allows"


class RedemptionNotFound(NotFound):
    code = "redemption_not_found"
    title = "No such redemption"


class CodeNotFound(NotFound):
    """Also for a code of another merchant's offer; the failed capture it counts is kept."""

    code = "code_not_found"
    title = "No redemption of your offers has this code"
    keeps_writes = True


class CodeExpired(Conflict):
    """The hold ran out; what expiring it wrote (the void, the stock returned) is kept."""

    code = "code_expired"
    title = "The code expired; the points were released"
    keeps_writes = True


class CodeVoided(Conflict):
    code = "code_voided"
    title = "The redemption was cancelled; the points were released"


class AlreadyCaptured(Conflict):
    code = "already_captured"
    title = "The redemption was captured already"


class NotCaptured(Conflict):
    code = "not_captured"
    title = "Only a captured redemption can be refunded"


class AlreadyRefunded(Conflict):
    code = "already_refunded"
    title = "The redemption was refunded already"


class MerchantLacksPoints(Conflict):
    code = "merchant_insufficient_points"
    title = "The merchant's points account cannot cover the refund"


class LedgerRefused(Conflict):
    code = "ledger_refused"
    title = "The ledger refused the transfer"


class InvalidPeriod(InvalidInput):
    code = "invalid_period"
    title = "The period is not valid"


class NoCodeDrawn(ServiceUnavailable):
    """Every code drawn was the code of a held redemption (a few in 10^9 each): retry."""

    code = "code_unavailable"
    title = "No unused redemption code could be drawn; retry"
