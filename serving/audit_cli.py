"""``nba audit init``: create or upgrade the audit trail's schema as its owner, and grant the service role (typer + stdlib only here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def register_audit(app: typer.Typer) -> None:
    """Add the ``nba audit`` command group."""
    audit_app = typer.Typer(help="The audit trail's schema and database roles (docs/audit-roles.md).", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @audit_app.command("init")
    def init(
        url: Optional[str] = typer.Option(
            None, "--url", help="audit database URL, connecting as the schema's OWNER role (default: the serving config's audit_url)"
        ),
        config: Optional[Path] = typer.Option(None, "--config", help="serving YAML, for the default --url"),
        service_role: Optional[str] = typer.Option(None, "--service-role", help="PostgreSQL role the service connects as: granted SELECT and INSERT only"),
        repair: bool = typer.Option(False, "--repair", help="recreate trail tables missing from an existing deployment (a new, empty trail for them)"),
    ) -> None:
        """Create or upgrade the tables, indexes, append-only guards and deployment marker; then grant the service role."""
        import sqlalchemy as sa

        from serving.audit import AuditTrailMissing, grant_service_role, install_schema, shown_url

        if url is None:
            from nba.configuration import load_config
            from serving.config import ServingConfig

            url = load_config(ServingConfig, "serving", config, {}).audit_url
        if service_role and not url.startswith("postgresql"):
            typer.echo("error: --service-role: database roles exist on PostgreSQL only (a SQLite file is guarded by file permissions)", err=True)
            raise typer.Exit(2)
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, future=True)
        try:
            done = install_schema(engine, repair=repair)
            if service_role:
                done["granted"] = {"role": service_role, "statements": grant_service_role(engine, service_role)}
        except (AuditTrailMissing, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except sa.exc.DBAPIError as exc:
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            typer.echo(f"error: audit trail {shown_url(url)}: {first}", err=True)
            raise typer.Exit(1) from None
        finally:
            engine.dispose()
        typer.echo(json.dumps({"audit_url": shown_url(url), **done}))
