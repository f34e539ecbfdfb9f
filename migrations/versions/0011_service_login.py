"""The service's login role: without superuser rights, a member of the service role.

In embedded mode the service used to connect as the cluster's superuser and only SET ROLE to the
service role, which any statement could undo with RESET ROLE, and then switch the append-only
triggers off. It now logs in as this role (its password is set, and kept in the data directory, by
the command that starts the service), so RESET ROLE leaves it with no more rights than the service role.

Revision ID: 0011_service_login
Revises: 0010_trades
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

from migrations.common import app_role

revision: str = "0011_service_login"
down_revision: str | None = "0010_trades"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    role = app_role()
    login = f"{role}_login"
    op.execute(
        f"""
        DO $$ BEGIN
            -- Roles are shared by every database of the server; another migration may create it meanwhile.
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{login}') THEN
                BEGIN
                    CREATE ROLE {login} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
                        IN ROLE {role};
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END;
            END IF;
        END $$
        """
    )
    op.execute(f"GRANT CONNECT ON DATABASE {_current_database()} TO {login}")


def _current_database() -> str:
    name = op.get_bind().exec_driver_sql("SELECT current_database()").scalar()
    return '"' + str(name).replace('"', '""') + '"'


def downgrade() -> None:
    op.execute(f"REVOKE CONNECT ON DATABASE {_current_database()} FROM {app_role()}_login")
