"""What every revision shares: the service role's name, and how a table is made append-only."""

from alembic import context, op


def app_role() -> str:
    """The role the service assumes; it may read and append ledger rows but never change them."""
    role = context.config.attributes.get("app_role") or "carbon_app"
    if not role.replace("_", "").isalnum():
        raise ValueError(f"unsafe role name {role!r}")
    return role


def make_append_only(table: str) -> None:
    """Refuse UPDATE, DELETE and TRUNCATE on ``table`` for every role, its owner included.

    Uses ``ledger_reject_change()``, created by the first revision.
    """
    op.execute(
        f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_reject_change()"
    )
    op.execute(
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change()"
    )
