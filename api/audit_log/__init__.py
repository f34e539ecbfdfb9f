"""The operator audit log: who changed what, when, from where. Append-only.

Any feature records an operator's write here (``record``) without importing identity or any other
feature; ``Actor`` names who did it. This file is the feature's face: other packages import from
``api.audit_log`` only.
"""

from api.audit_log.controllers import AuditLogController
from api.audit_log.models import OperatorAuditEntry
from api.audit_log.service import Actor, record, recorded_at

ROUTES = [AuditLogController]

__all__ = ["ROUTES", "Actor", "OperatorAuditEntry", "record", "recorded_at"]
