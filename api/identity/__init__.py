"""Identity: who is calling. Residents, merchants, partners and operators sign in here and get access
tokens; operators register merchants and partners and rotate their secrets.

This file is the feature's face: other packages import from ``api.identity`` only (an import
contract checks it). Modules: ``sign_in`` (each way in), ``sessions`` (refresh tokens, devices),
``clients`` (merchants and partners), ``operators``, ``tokens`` and
``signing_keys`` (access tokens and their keys), ``runtime`` (what the services need, built from
the settings), ``controllers`` and ``schemas`` (HTTP).
"""

from api.identity.clients import find_partner
from api.identity.controllers import ROUTES
from api.identity.models import Partner
from api.identity.operators import create_operator, provide_actor
from api.identity.runtime import IdentityRuntime, open_identity, password_hasher
from api.identity.sign_in import get_resident

__all__ = [
    "ROUTES",
    "IdentityRuntime",
    "Partner",
    "create_operator",
    "find_partner",
    "get_resident",
    "open_identity",
    "password_hasher",
    "provide_actor",
]
