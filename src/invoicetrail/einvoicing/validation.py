"""Validation with the official artifacts: UBL 2.1 XSD, CEN EN 16931 and Peppol Schematron
(compiled XSLT 2.0, run with saxonche), SAT cfdv40.xsd, and the MyInvois document shape.

Each stylesheet and schema is compiled once per process on first use and reused; Saxon runs
one transform at a time per process (its processor is shared), and each XSD one validation at
a time (lxml keeps a schema's last errors in one shared log).

Speed (SPEC: ≤ 10 ms per Peppol document after the one-time compile): a document is parsed
once by lxml (the regime check reuses that tree) and once by Saxon, which both stylesheets
share. Each official stylesheet runs unchanged, imported by a small wrapper that keeps only
its `svrl:failed-assert` elements, so the full SVRL report (every fired rule, indented) is
neither serialised nor re-parsed. Documents with a DOCTYPE are rejected before either parser
expands anything (no UBL or CFDI document has one), and Saxon's parser refuses DOCTYPEs too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from lxml import etree

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
UBL_XSD = {
    "Invoice": "ubl-xsd/maindoc/UBL-Invoice-2.1.xsd",
    "CreditNote": "ubl-xsd/maindoc/UBL-CreditNote-2.1.xsd",
}
# Order matters: the findings list reads XSD, then EN 16931, then Peppol.
XSLTS = {
    "cen": "en16931/EN16931-UBL-validation.xslt",
    "peppol": "peppol/PEPPOL-EN16931-UBL.xslt",
}
CFDI_XSD = (
    "cfdi/4/cfdv40.xsd",
    "cfdi/Pagos/Pagos20.xsd",
    "cfdi/TimbreFiscalDigital/TimbreFiscalDigitalv11.xsd",
)
CFDI_NS = "http://www.sat.gob.mx/cfd/4"
UBL_NS = {
    "Invoice": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "CreditNote": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
}
SVRL = "{http://purl.oclc.org/dsdl/svrl}"
# Runs an official stylesheet as is (xsl:apply-imports) and keeps only its failed asserts.
_FAILED_ONLY = """<xsl:stylesheet version="2.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:svrl="http://purl.oclc.org/dsdl/svrl">
  <xsl:import href="{href}"/>
  <xsl:output method="xml" indent="no"/>
  <xsl:template match="/" priority="1000">
    <xsl:variable name="report"><xsl:apply-imports/></xsl:variable>
    <failed><xsl:copy-of select="$report//svrl:failed-assert"/></failed>
  </xsl:template>
</xsl:stylesheet>"""
_NO_DOCTYPE = (
    "http://saxon.sf.net/feature/parserFeature?uri="
    "http://apache.org/xml/features/disallow-doctype-decl"
)
_UTF8 = frozenset({"UTF-8", "UTF8", "US-ASCII", "ASCII"})
REGIMES = ("peppol", "cfdi", "myinvois")
Regime = Literal["peppol", "cfdi", "myinvois"]
# Documents are parsed without network access and without entity expansion.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


@dataclass(frozen=True)
class Finding:
    rule: str
    flag: str  # "fatal" | "warning" | "information"
    message: str
    location: str | None
    source: str  # "xml" | "xsd" | "cen" | "peppol" | "structure"

    def out(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "flag": self.flag,
            "message": self.message,
            "location": self.location,
        }


@dataclass(frozen=True)
class Report:
    regime: str
    findings: tuple[Finding, ...]

    @property
    def valid(self) -> bool:
        return not any(f.flag == "fatal" for f in self.findings)

    @property
    def fatal(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.flag == "fatal")

    def out(self) -> dict[str, Any]:
        return {"valid": self.valid, "findings": [f.out() for f in self.findings]}

    def stored(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.findings]


class UnknownDocument(ValueError):
    """The bytes are not a document of any regime we validate (bad usage, not a finding)."""


_schemas: dict[str, etree.XMLSchema] = {}
_schemas_lock = threading.Lock()
# An lxml XMLSchema keeps the errors of its last run in one shared error_log: one run at a
# time per schema, or threads would read each other's errors.
_schema_run_locks: dict[str, threading.Lock] = {}


def _schema(key: str, files: tuple[str, ...]) -> etree.XMLSchema:
    """One XMLSchema importing every file, so strict wildcards (cfdi:Complemento) resolve."""
    with _schemas_lock:
        if key not in _schemas:
            imports = "".join(
                '<xs:import namespace="{ns}" schemaLocation="{uri}"/>'.format(
                    ns=etree.parse(str(ARTIFACTS / f)).getroot().get("targetNamespace"),
                    uri=(ARTIFACTS / f).as_uri(),
                )
                for f in files
            )
            wrapper = (
                f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
            )
            root = etree.fromstring(wrapper, base_url=ARTIFACTS.as_uri() + "/")
            _schemas[key] = etree.XMLSchema(root)
            _schema_run_locks[key] = threading.Lock()
        return _schemas[key]


def _xsd_findings(doc: etree._ElementTree, key: str, files: tuple[str, ...]) -> list[Finding]:
    schema = _schema(key, files)
    with _schema_run_locks[key]:
        try:
            if schema.validate(doc):
                return []
        except etree.XMLSchemaValidateError as exc:
            return [Finding("XSD", "fatal", f"schema validation failed: {exc}", None, "xsd")]
        return [
            Finding("XSD", "fatal", error.message, f"line {error.line}: {error.path}", "xsd")
            for error in schema.error_log
        ]


class _Schematron:
    """The CEN and Peppol stylesheets, compiled once; one transform at a time."""

    def __init__(self) -> None:
        from saxonche import PySaxonProcessor

        started = time.perf_counter()
        self.processor = PySaxonProcessor(license=False)
        self.processor.set_configuration_property(_NO_DOCTYPE, "true")
        compiler = self.processor.new_xslt30_processor()
        self.executables = {
            name: compiler.compile_stylesheet(
                stylesheet_text=_FAILED_ONLY.format(href=(ARTIFACTS / path).as_uri())
            )
            for name, path in XSLTS.items()
        }
        self.compile_seconds = time.perf_counter() - started
        self.lock = threading.Lock()

    def run(self, xml: bytes | str) -> list[Finding]:
        """Both stylesheets on one document (bytes in UTF-8, or text); their failed asserts."""
        text = xml if isinstance(xml, str) else xml.decode("utf-8-sig")
        findings: list[Finding] = []
        with self.lock:
            try:
                node = self.processor.parse_xml(xml_text=text)
            except Exception as exc:  # lxml accepted it (else we would not be here)
                message = " ".join(str(exc).split()) or "Saxon could not parse the document"
                return [Finding("XML", "fatal", message, None, "xml")]
            for name, executable in self.executables.items():
                try:
                    svrl_text = executable.transform_to_string(xdm_node=node)
                except Exception as exc:  # a dynamic XPath error: the document is rejected
                    message = " ".join(str(exc).split()) or "the stylesheet stopped"
                    findings.append(Finding("XSLT-ERROR", "fatal", message, None, name))
                    continue
                findings.extend(_svrl_findings(svrl_text, name))
        return findings


def _svrl_findings(svrl_text: str | None, source: str) -> list[Finding]:
    if not svrl_text:
        return [Finding("XSLT-ERROR", "fatal", "the stylesheet produced no report", None, source)]
    if "failed-assert" not in svrl_text:  # the usual case: nothing to parse
        return []
    svrl = etree.fromstring(svrl_text.encode("utf-8"), _PARSER)
    found = []
    for assertion in svrl.iter(f"{SVRL}failed-assert"):
        text = " ".join("".join(assertion.itertext()).split())
        found.append(
            Finding(
                assertion.get("id") or "?",
                assertion.get("flag") or "fatal",
                text,
                assertion.get("location"),
                source,
            )
        )
    return found


_schematron: _Schematron | None = None
_schematron_lock = threading.Lock()


def schematron() -> _Schematron:
    global _schematron
    with _schematron_lock:
        if _schematron is None:
            _schematron = _Schematron()
        return _schematron


def _parse(xml: bytes) -> etree._ElementTree | Finding:
    try:
        tree = etree.ElementTree(etree.fromstring(xml, _PARSER))
    except etree.XMLSyntaxError as exc:
        return Finding("XML", "fatal", f"not well-formed XML: {exc}", None, "xml")
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        return Finding("XML", "fatal", "a DOCTYPE is not allowed in an e-invoice", None, "xml")
    return tree


def _text(xml: bytes, parsed: etree._ElementTree) -> str:
    """The document as text for Saxon: the bytes themselves when UTF-8 (a BOM dropped), else
    lxml's reading of them in their declared encoding."""
    if (parsed.docinfo.encoding or "UTF-8").upper() in _UTF8:
        try:
            return xml.decode("utf-8-sig")
        except UnicodeDecodeError:
            pass
    return str(etree.tostring(parsed, encoding="unicode"))


def validate_ubl(xml: bytes) -> Report:
    """XSD, then the CEN rules, then the Peppol rules; every finding of every stage."""
    return _validate_ubl(xml, _parse(xml))


def _validate_ubl(xml: bytes, parsed: etree._ElementTree | Finding) -> Report:
    if isinstance(parsed, Finding):
        return Report("peppol", (parsed,))
    root = etree.QName(parsed.getroot())
    if root.localname not in UBL_XSD or root.namespace != UBL_NS[root.localname]:
        message = f"root element {root.text} is not a UBL 2.1 Invoice or CreditNote"
        return Report("peppol", (Finding("XSD", "fatal", message, "/", "xsd"),))
    findings = _xsd_findings(parsed, root.localname, (UBL_XSD[root.localname],))
    findings += schematron().run(_text(xml, parsed))
    return Report("peppol", tuple(findings))


def validate_cfdi(xml: bytes) -> Report:
    parsed = _parse(xml)
    if isinstance(parsed, Finding):
        return Report("cfdi", (parsed,))
    return Report("cfdi", tuple(_xsd_findings(parsed, "cfdi", CFDI_XSD)))


def validate_myinvois(document: bytes) -> Report:
    """A JSON document is checked against the LHDN samples' shape; an XML one by the UBL XSD."""
    from invoicetrail.einvoicing import myinvois

    stripped = document.lstrip()
    if stripped.startswith(b"<"):
        parsed = _parse(document)
        if isinstance(parsed, Finding):
            return Report("myinvois", (parsed,))
        root = etree.QName(parsed.getroot())
        if root.localname not in UBL_XSD:
            message = f"root element {root.text} is not a UBL 2.1 Invoice"
            return Report("myinvois", (Finding("XSD", "fatal", message, "/", "xsd"),))
        return Report(
            "myinvois", tuple(_xsd_findings(parsed, root.localname, (UBL_XSD[root.localname],)))
        )
    try:
        loaded = json.loads(document)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Report("myinvois", (Finding("JSON", "fatal", f"not JSON: {exc}", None, "xml"),))
    return Report("myinvois", tuple(myinvois.check_structure(loaded)))


VALIDATORS: dict[str, Callable[[bytes], Report]] = {
    "peppol": validate_ubl,
    "cfdi": validate_cfdi,
    "myinvois": validate_myinvois,
}


def detect_regime(document: bytes) -> Regime:
    """CFDI by its namespace, UBL Invoice/CreditNote → peppol, JSON → myinvois."""
    return _detect(document)[0]


def _detect(document: bytes) -> tuple[Regime, etree._ElementTree | Finding | None]:
    """The regime and, for XML, the parsed tree (or the parse finding), reused by validate."""
    head = document.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]  # a UTF-8 BOM is allowed
    if head in (b"{", b"["):
        return "myinvois", None
    if head != b"<" and not document.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16
        raise UnknownDocument("the file is neither XML nor JSON")
    parsed = _parse(document)
    if isinstance(parsed, Finding):
        return "peppol", parsed  # reported as a finding by the UBL path
    if etree.QName(parsed.getroot()).namespace == CFDI_NS:
        return "cfdi", parsed
    return "peppol", parsed


def validate(document: bytes, regime: str | None = None) -> Report:
    if not regime:
        chosen, parsed = _detect(document)
        if chosen == "peppol" and parsed is not None:
            return _validate_ubl(document, parsed)  # parsed once, not twice
        return VALIDATORS[chosen](document)
    if regime not in VALIDATORS:
        raise UnknownDocument(f"unknown regime {regime!r}; use one of {', '.join(REGIMES)}")
    return VALIDATORS[regime](document)
