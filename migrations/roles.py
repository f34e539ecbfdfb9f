"""The service role that migrations grant privileges to (shared by every revision)."""

from alembic import context


def app_role() -> str:
    """The role the service assumes; it may read and append ledger rows but never change them."""
    role = context.config.attributes.get("app_role") or "carbon_app"
    if not role.replace("_", "").isalnum():
        raise ValueError(f"unsafe role name {role!r}")
    return role
