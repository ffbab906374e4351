"""`invoicetrail einvoice validate FILE [--regime peppol|cfdi|myinvois]`.

Validates one document with the official artifacts shipped in the package (UBL 2.1 XSD, CEN
EN 16931 and Peppol BIS 3.0 Schematron, SAT cfdv40.xsd, the MyInvois shape) and prints
`{"valid": bool, "findings": [{"rule", "flag", "message", "location"}]}` on stdout, and
nothing else: while the validators run, file descriptor 1 points at stderr, so whatever
native code (Saxon, libxml2) might print cannot reach the JSON. Exit 0 when no finding is
fatal, 1 otherwise, 2 on bad usage (an unreadable file, an unknown regime, a file that is
neither XML nor JSON). Needs no database, no settings and no working directory.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

einvoice_app = typer.Typer(
    help="E-invoicing documents (Peppol UBL, CFDI 4.0, MyInvois).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class RegimeName(StrEnum):
    peppol = "peppol"
    cfdi = "cfdi"
    myinvois = "myinvois"


@einvoice_app.callback()
def _group() -> None:
    """E-invoicing documents (Peppol UBL, CFDI 4.0, MyInvois)."""


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Points file descriptor 1 at stderr for the duration (Python's sys.stdout included,
    it writes to fd 1), then restores it."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 at all: nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _usage_error(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code=2)


@einvoice_app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="The document: UBL / CFDI XML or MyInvois JSON")],
    regime: Annotated[
        RegimeName | None,
        typer.Option(help="Default: from the document (CFDI namespace, UBL → peppol, JSON)"),
    ] = None,
) -> None:
    """Validate a document with the official artifacts; prints the findings as JSON on stdout.

    UBL: the UBL 2.1 XSD, the CEN EN 16931 rules and the Peppol BIS 3.0 rules, all reported.

    Exit 0 if no finding is fatal, 1 if one is, 2 on bad usage."""
    from invoicetrail.einvoicing import validation

    try:
        document = file.read_bytes()
    except OSError as exc:
        raise _usage_error(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        with stdout_to_stderr():
            if regime is not None:  # neither XML nor JSON is bad usage whatever the regime
                validation.detect_regime(document)
            report = validation.validate(document, None if regime is None else regime.value)
    except validation.UnknownDocument as exc:
        raise _usage_error(f"{file}: {exc}") from None
    typer.echo(json.dumps(report.out()))
    raise typer.Exit(code=0 if report.valid else 1)
