"""The exchange feature's errors, each with its stable code (mapped to HTTP in ``api.errors``)."""

from __future__ import annotations

from domain.errors import Conflict, NotFound, ServiceUnavailable


class NothingToExport(Conflict):
    code = "nothing_to_export"
    title = "No verified reduction up to the cut-off is left to export, and no reversal to adjust"


class BatchNotFound(NotFound):
    code = "batch_not_found"
    title = "No such exchange batch"


class EvidenceNotReady(ServiceUnavailable):
    code = "evidence_not_ready"
    title = "The batch's ledger entries are not all under a signed checkpoint yet; retry shortly"
