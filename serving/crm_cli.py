"""``nba feedback import``: a CRM's feedback export (Vault CRM, Salesforce LSC) into the audit trail and online features (typer + stdlib only here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def register_feedback(app: typer.Typer) -> None:
    """Add the ``nba feedback`` command group."""
    feedback_app = typer.Typer(help="Outcomes of suggestions coming back from the CRM.", no_args_is_help=True)
    app.add_typer(feedback_app, name="feedback")

    @feedback_app.command("import")
    def import_(
        file: Path = typer.Argument(..., help="the CRM's feedback export (CSV with a header row)"),
        source: str = typer.Option(..., "--source", help="veeva (Vault CRM suggestion_feedback__v) | salesforce (LSC TerritoryAcctRcmdAction)"),
        reason_map: Optional[Path] = typer.Option(None, "--reason-map", help="YAML of your CRM's dismiss/skip reason labels -> our reason codes"),
        config: Optional[Path] = typer.Option(None, "--config", help="serving YAML (its audit_url and features_config)"),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="override a config key"),
        dry_run: bool = typer.Option(False, "--dry-run", help="check and map every row, write nothing"),
        no_push: bool = typer.Option(False, "--no-push", help="store in the audit trail only; the nightly feature build picks the outcomes up"),
    ) -> None:
        """Map a CRM feedback file onto /feedback outcomes and reasons and store it (all rows checked first; idempotent by record id)."""
        from nba.configuration import ConfigError, load_config, parse_override

        def fail(message: str, code: int = 2) -> None:
            typer.echo(f"error: {' '.join(str(message).split())}", err=True)
            raise typer.Exit(code)

        from contract.crm_feedback import CrmFeedbackError, load_reason_map, parse_feedback
        from serving.config import ServingConfig

        try:
            cfg = load_config(ServingConfig, "serving", config, dict(parse_override(s) for s in (set_ or [])))
            extra = load_reason_map(reason_map) if reason_map is not None else None
            parsed = parse_feedback(file, source, reasons=extra)
        except (ConfigError, CrmFeedbackError, OSError) as exc:
            fail(str(exc))
        from serving.audit import AuditTrail, AuditTrailMissing
        from serving.feedback_import import import_feedback

        try:  # feedback goes into the trail the suggestions were served from: never a new, empty one
            audit = AuditTrail(cfg.audit_url, create="never")
        except AuditTrailMissing as exc:
            fail(str(exc), 1)
        push = None
        if not no_push and not dry_run:
            from features import load_features_config, open_store
            from serving.feedback import push_feedback

            try:
                features_cfg = load_features_config(cfg.features_config)
                if cfg.data_dir:  # serving's own dataset, as the service's push reads it
                    features_cfg = features_cfg.model_copy(update={"data_dir": Path(cfg.data_dir).resolve()})
                store = open_store(features_cfg)
            except Exception as exc:  # the outcomes are still stored; the nightly feature build picks them up
                typer.echo(f"note: online store unavailable, storing without the push ({type(exc).__name__}: {exc})", err=True)
            else:

                def push(hcp_id: str) -> None:
                    push_feedback(features_cfg, store, audit, hcp_id)

        try:
            summary = import_feedback(audit, parsed, push=push, dry_run=dry_run)
        except CrmFeedbackError as exc:
            fail(str(exc))
        finally:
            audit.close()
        for err in summary["push_errors"]:
            typer.echo(f"note: stored but not pushed online (the nightly feature build catches up): {err}", err=True)
        typer.echo(json.dumps(summary, sort_keys=True, default=str))
