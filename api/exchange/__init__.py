"""The carbon exchange: verified reductions batched for the exchange, moved to its account in the
``co2e_g`` ledger, submitted over its HTTP API, and an evidence package per batch for the third-party
verifier. Reversals of exported reductions return in the next batch as adjustments.

This file is the feature's face. Modules: ``batches`` (building one), ``submission`` (the background
submitter), ``evidence`` (the package, streamed), ``views``, ``repository`` (all the SQL, including
the one read of the actions feature's tables), ``runtime``, ``models``, ``schemas``, ``controllers``,
``errors``. The package's format and its offline check are ``integrations.evidence``; the exchange's
client and simulator are ``integrations.exchange`` and ``integrations.simulators.exchange``.
"""

from api.exchange.controllers import ROUTES
from api.exchange.runtime import ExchangeRuntime, open_exchange
from api.exchange.submission import Submitter, open_submitter

__all__ = ["ROUTES", "ExchangeRuntime", "Submitter", "open_exchange", "open_submitter"]
