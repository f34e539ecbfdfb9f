"""The actions feature's errors, each with its stable code (mapped to HTTP in ``api.errors``)."""

from __future__ import annotations

from domain.errors import Conflict, InvalidInput, NotFound


class PartnerNotFound(NotFound):
    code = "partner_not_found"
    title = "No such partner"


class LinkNotFound(NotFound):
    code = "link_not_found"
    title = "No such linked account"


class AccountAlreadyLinked(Conflict):
    code = "account_already_linked"
    title = "This partner account is linked to another resident"


class LinkNotVerified(InvalidInput):
    code = "link_not_verified"
    title = "The partner did not confirm the link code for this account"
    keeps_writes = True  # the failed attempt is counted (``links.link_account``)


class NotLinkedAtPartner(InvalidInput):
    code = "not_linked_at_partner"
    title = "Link an account at this partner before claiming its records"


class RecordNotFound(NotFound):
    code = "record_not_found"
    title = "The partner has no such record for your linked accounts"


class ActionNotFound(NotFound):
    code = "action_not_found"
    title = "No such action"


class AlreadyReviewed(Conflict):
    code = "already_reviewed"
    title = "This action is not waiting for review"


class CreditFailed(Conflict):
    code = "credit_failed"
    title = "The ledger refused the credit"


class NotReversible(Conflict):
    code = "action_not_credited"
    title = "Only a credited action can be reversed"
