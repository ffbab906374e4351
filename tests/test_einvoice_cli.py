"""`invoicetrail einvoice validate FILE [--regime …]` as SPEC fixes it, run as real processes
from an empty working directory with no INVOICETRAIL_* settings: stdout carries exactly one
JSON object, exit 0 (no fatal finding) / 1 (a fatal finding) / 2 (bad usage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "einvoicing"
PEPPOL_EXAMPLE = FIXTURES / "peppol" / "examples" / "base-example.xml"
CEN_EXAMPLE = FIXTURES / "en16931" / "examples" / "ubl-tc434-example1.xml"
MYINVOIS_SAMPLE = FIXTURES / "myinvois" / "samples" / "1.0-Invoice-Sample.json"
COMMAND = [sys.executable, "-m", "invoicetrail", "einvoice", "validate"]
VEFA = "{http://difi.no/xsd/vefa/validator/1.0}"
TIMEOUT = 120


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INVOICETRAIL_")}


def _start(cwd: Path, *args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=cwd,
    )


def run_validate(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=cwd,
        timeout=TIMEOUT,
    )


def one_object(stdout: str) -> dict[str, Any]:
    """stdout is exactly one JSON object (one line) of the SPEC's shape."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout[:500]
    report = json.loads(stdout)
    assert isinstance(report, dict) and set(report) == {"valid", "findings"}, report
    assert isinstance(report["valid"], bool)
    for finding in report["findings"]:
        assert set(finding) == {"rule", "flag", "message", "location"}, finding
        assert finding["flag"] in ("fatal", "warning", "information"), finding
    assert report["valid"] == (not any(f["flag"] == "fatal" for f in report["findings"]))
    return report


def fatal_rules(report: dict[str, Any]) -> set[str]:
    return {f["rule"] for f in report["findings"] if f["flag"] == "fatal"}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory: nothing may depend on the checkout or the cwd."""
    path = tmp_path / "cwd"
    path.mkdir()
    return path


def test_a_valid_peppol_document_exits_0(workdir: Path) -> None:
    for args in ([PEPPOL_EXAMPLE], [PEPPOL_EXAMPLE, "--regime", "peppol"]):
        result = run_validate(workdir, *args)
        assert result.returncode == 0, result.stderr
        report = one_object(result.stdout)
        assert report["valid"] is True
        assert fatal_rules(report) == set()
    assert list(workdir.iterdir()) == []  # and it writes nothing where it runs


def test_a_cen_unit_test_fragment_exits_1_with_every_stage_reported(
    workdir: Path, tmp_path: Path
) -> None:
    """BR-01 test 2 (no CustomizationID): not XSD-valid, yet the CEN and Peppol rules run."""
    test_set = etree.parse(str(FIXTURES / "en16931" / "unit-tests" / "invoice" / "BR-01.xml"))
    second = list(test_set.getroot().iter(f"{VEFA}test"))[1]
    assert second.findtext(f"{VEFA}assert/{VEFA}error") == "BR-01"
    fragment = next(c for c in second if isinstance(c.tag, str) and not c.tag.startswith(VEFA))
    path = tmp_path / "br-01.xml"
    path.write_bytes(etree.tostring(fragment, xml_declaration=True, encoding="UTF-8"))

    result = run_validate(workdir, path)
    assert result.returncode == 1, result.stderr
    report = one_object(result.stdout)
    assert report["valid"] is False
    assert {"XSD", "BR-01", "PEPPOL-EN16931-R004"} <= fatal_rules(report)
    br01 = next(f for f in report["findings"] if f["rule"] == "BR-01")
    assert br01["location"] and br01["message"].startswith("[BR-01]")


def test_a_cen_example_fails_the_peppol_rules_only(workdir: Path) -> None:
    result = run_validate(workdir, CEN_EXAMPLE, "--regime", "peppol")
    assert result.returncode == 1, result.stderr
    rules = fatal_rules(one_object(result.stdout))
    assert "PEPPOL-EN16931-R001" in rules
    assert "XSD" not in rules and not any(r.startswith("BR-") for r in rules)


def test_a_stylesheet_error_is_a_fatal_finding_and_stays_off_stdout(
    workdir: Path, tmp_path: Path
) -> None:
    """An empty quantity makes the Peppol XSLT fail on xs:decimal(""): rule XSLT-ERROR. Saxon
    prints its own report of the error, which must not reach stdout."""
    broken = PEPPOL_EXAMPLE.read_bytes().replace(
        b'<cbc:InvoicedQuantity unitCode="DAY">7</cbc:InvoicedQuantity>',
        b'<cbc:InvoicedQuantity unitCode="DAY"></cbc:InvoicedQuantity>',
        1,
    )
    assert broken != PEPPOL_EXAMPLE.read_bytes()
    path = tmp_path / "empty-quantity.xml"
    path.write_bytes(broken)
    result = run_validate(workdir, path)
    assert result.returncode == 1, result.stderr
    report = one_object(result.stdout)
    assert {"XSD", "XSLT-ERROR"} <= fatal_rules(report)
    assert "xs:decimal" in result.stderr or "decimal" in result.stderr  # Saxon's own words


def test_a_document_that_is_not_well_formed_exits_1(workdir: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.xml"
    path.write_bytes(PEPPOL_EXAMPLE.read_bytes()[:500])
    result = run_validate(workdir, path)
    assert result.returncode == 1, result.stderr
    assert fatal_rules(one_object(result.stdout)) == {"XML"}


def test_encodings_and_doctypes(workdir: Path, tmp_path: Path) -> None:
    """A UTF-8 BOM or a UTF-16 file is the same document; a DOCTYPE is refused before any
    parser expands its entities (an external one here would read a local file)."""
    text = PEPPOL_EXAMPLE.read_text(encoding="utf-8")
    bom = tmp_path / "bom.xml"
    bom.write_bytes(b"\xef\xbb\xbf" + PEPPOL_EXAMPLE.read_bytes())
    utf16 = tmp_path / "utf16.xml"
    utf16.write_bytes(text.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"))
    for path in (bom, utf16):
        result = run_validate(workdir, path)
        assert result.returncode == 0, (path.name, result.stdout, result.stderr)
        assert one_object(result.stdout)["valid"] is True

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    declaration = '<?xml version="1.0" encoding="UTF-8"?>'
    assert text.startswith(declaration) and "<cbc:Note>" in text
    hostile = tmp_path / "doctype.xml"
    hostile.write_text(
        text.replace(
            declaration,
            f'{declaration}<!DOCTYPE Invoice [<!ENTITY e SYSTEM "{secret.as_uri()}">]>',
            1,
        ).replace("<cbc:Note>", "<cbc:Note>&e;", 1)
    )
    result = run_validate(workdir, hostile)
    assert result.returncode == 1, result.stderr
    assert fatal_rules(one_object(result.stdout)) == {"XML"}
    assert "TOP-SECRET" not in result.stdout + result.stderr


def test_bad_usage_exits_2_with_nothing_on_stdout(workdir: Path, tmp_path: Path) -> None:
    assert run_validate(workdir, "--help").returncode == 0  # the command exists: 2 means usage
    text = tmp_path / "notes.txt"
    text.write_text("neither XML nor JSON\n")
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    cases: list[tuple[list[str | Path], str]] = [
        ([text], "neither XML nor JSON"),
        ([binary], "neither XML nor JSON"),
        ([text, "--regime", "peppol"], "neither XML nor JSON"),  # a regime does not make it one
        ([tmp_path / "missing.xml"], "missing.xml"),
        ([tmp_path], "cannot read"),  # a directory
        ([PEPPOL_EXAMPLE, "--regime", "nonsense"], "nonsense"),
        ([], "Usage"),
    ]
    for args, says in cases:
        result = run_validate(workdir, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stdout == "", args
        assert says in result.stderr, (args, result.stderr)


CFDI = """<?xml version="1.0" encoding="UTF-8"?>
<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Version="4.0" Fecha="2026-01-01T00:00:00"
    SubTotal="100.00" Moneda="MXN" Total="116.00" TipoDeComprobante="I" Exportacion="01"
    LugarExpedicion="06000">
  <cfdi:Emisor Rfc="EKU9003173C9" Nombre="ESCUELA KEMPER URGATE" RegimenFiscal="601"/>
</cfdi:Comprobante>
"""


def test_an_invalid_cfdi_exits_1_with_xsd_findings(workdir: Path, tmp_path: Path) -> None:
    path = tmp_path / "cfdi.xml"
    path.write_text(CFDI)
    for args in ([path], [path, "--regime", "cfdi"]):
        result = run_validate(workdir, *args)
        assert result.returncode == 1, result.stderr
        report = one_object(result.stdout)
        assert fatal_rules(report) == {"XSD"}
        assert all(f["location"] for f in report["findings"])


def test_a_myinvois_json_sample_runs(workdir: Path) -> None:
    """Whether a sample passes is the shape check's business; here: it runs and answers."""
    for args in ([MYINVOIS_SAMPLE], [MYINVOIS_SAMPLE, "--regime", "myinvois"]):
        result = run_validate(workdir, *args)
        assert result.returncode in (0, 1), result.stderr
        report = one_object(result.stdout)
        assert result.returncode == (0 if report["valid"] else 1)


def test_two_validations_at_once_both_answer_correctly(workdir: Path) -> None:
    valid = _start(workdir, PEPPOL_EXAMPLE)
    invalid = _start(workdir, CEN_EXAMPLE)
    valid_out, valid_err = valid.communicate(timeout=TIMEOUT)
    invalid_out, invalid_err = invalid.communicate(timeout=TIMEOUT)
    assert valid.returncode == 0, valid_err
    assert one_object(valid_out)["valid"] is True
    assert invalid.returncode == 1, invalid_err
    assert "PEPPOL-EN16931-R001" in fatal_rules(one_object(invalid_out))


def test_native_writes_to_stdout_during_validation_go_to_stderr(workdir: Path) -> None:
    """What the CLI wraps validation in: a write to file descriptor 1 from below Python (as
    native code such as Saxon's would do) lands on stderr; stdout is restored afterwards."""
    script = (
        "import os, sys\n"
        "from invoicetrail.einvoicing.cli import stdout_to_stderr\n"
        "print('before', flush=True)\n"
        "with stdout_to_stderr():\n"
        "    os.write(1, b'native\\n')\n"
        "    print('python inside')\n"
        "print('after')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=workdir,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "before\nafter\n"
    assert result.stderr == "native\npython inside\n"
