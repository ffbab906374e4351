"""Mexico CFDI 4.0: the `cfdi:Comprobante` generator, its seal (Sello) and a test CSD.

A CFDI is a pure function of its `DocumentFacts` and the issuer's CSD (certificado de sello
digital): the XML is built with lxml, the *cadena original* is derived from it, and the
Sello is the RSA PKCS#1 v1.5 / SHA-256 signature of that string. PKCS#1 v1.5 signatures are
deterministic, so the same facts and the same CSD always give the same bytes.

Cadena original. SAT defines it by an XSLT (`cadenaoriginal_4_0.xslt` plus one stylesheet
per complement) that we do not ship. `cadena_original` implements the Anexo 20 rule for
exactly the nodes this module emits, in SAT's order: the Comprobante attributes, then
InformacionGlobal, CfdiRelacionados, Emisor, Receptor, each Concepto (its attributes, its
Traslados, its Retenciones, ACuentaTerceros, InformacionAduanera, CuentaPredial, Parte), the
Comprobante-level Impuestos (Retenciones, TotalImpuestosRetenidos, Traslados,
TotalImpuestosTrasladados) and the Pagos 2.0 complement (`Pagos20.xslt` order). Every value
is whitespace-normalised (XPath `normalize-space`) and prefixed with "|"; a required
attribute is always emitted (empty if missing), an optional one only when present; the
whole string is framed by "||" … "||". The TimbreFiscalDigital that a PAC adds has no
template in SAT's stylesheet, so it does not take part, which is why a stamped CFDI still
verifies. Any other complement (or ComplementoConcepto content) is refused with ValueError
rather than guessed.

What the generator maps (the SAT catalogue codes are in `artifacts/cfdi/catalogos/`):
- TipoDeComprobante I (invoice), E (credit note, related to the invoice's UUID with
  TipoRelacion 01 when it is known), P (payment, with the Pagos 2.0 complement);
- MetodoPago PUE for `charge_automatically` (FormaPago 04: the card on file is charged),
  PPD for `send_invoice` (FormaPago 99, "por definir", as SAT requires for PPD);
- Concepto taxes: IVA (002) Tasa at the line's rate (Z or rate 0: Tasa 0.000000), category
  E: TipoFactor Exento, category O (or an amount of 0): ObjetoImp 01 without taxes;
- generic receivers: XAXX010101000 (público en general) and XEXX010101000 (foreign) take
  regime 616, use S01 and DomicilioFiscalReceptor = LugarExpedicion, as SAT's rules say.
Only MXN documents are generated: another currency needs TipoCambio, which the facts do not
carry, so the API refuses non-MXN CFDI invoices before finalize.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import pycountry
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from invoicetrail.einvoicing.facts import DocumentFacts, Line, PaymentFacts, major

CFDI_NS = "http://www.sat.gob.mx/cfd/4"
PAGOS_NS = "http://www.sat.gob.mx/Pagos20"
TFD_NS = "http://www.sat.gob.mx/TimbreFiscalDigital"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
CFDI_LOCATION = "http://www.sat.gob.mx/cfd/4 http://www.sat.gob.mx/sitio_internet/cfd/4/cfdv40.xsd"
PAGOS_LOCATION = (
    "http://www.sat.gob.mx/Pagos20 http://www.sat.gob.mx/sitio_internet/cfd/Pagos/Pagos20.xsd"
)
TFD_LOCATION = (
    "http://www.sat.gob.mx/TimbreFiscalDigital "
    "http://www.sat.gob.mx/sitio_internet/cfd/TimbreFiscalDigital/TimbreFiscalDigitalv11.xsd"
)
# SAT's Fecha / FechaTimbrado are Mexico City wall-clock time without an offset.
MEXICO_CITY = ZoneInfo("America/Mexico_City")
GENERIC_RFC_DOMESTIC = "XAXX010101000"  # público en general
GENERIC_RFC_FOREIGN = "XEXX010101000"  # residente en el extranjero
GENERIC_RFCS = frozenset({GENERIC_RFC_DOMESTIC, GENERIC_RFC_FOREIGN})
# A generated CSD carries this subject organizationName so that nothing signed with it is
# ever sent to a real PAC (HttpPac refuses it before opening a connection).
TEST_CSD_ORGANIZATION = "invoicetrail test CSD"
TEST_CSD_VALID_DAYS = 4 * 365 + 1
# Sin obligaciones fiscales / Sin efectos fiscales: SAT's values for generic receivers.
GENERIC_REGIME = "616"
GENERIC_USE = "S01"
PAYMENT_USE = "CP01"
# G02 (devoluciones, descuentos o bonificaciones) is what a credit note is used for; SAT
# allows it only for these receiver regimes (c_UsoCFDI), elsewhere the customer's use stays.
CREDIT_NOTE_USE = "G02"
CREDIT_NOTE_USE_REGIMES = frozenset(
    {"601", "603", "606", "612", "620", "621", "622", "623", "624", "625", "626"}
)
# FormaPago / FormaDePagoP (c_FormaPago) for the payment methods the payments core records.
FORMA_PAGO = {
    "cash": "01",
    "check": "02",
    "bank_transfer": "03",
    "ach": "03",
    "card": "04",
}
FORMA_PAGO_UNKNOWN = "99"
CFDI_UUID = re.compile(
    r"[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}"
)
POSTAL_CODE = re.compile(r"[0-9]{5}")
NO_CERTIFICADO = re.compile(r"[0-9]{20}")
# Documents are parsed without network access and without entity expansion.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def _c(name: str) -> str:
    return f"{{{CFDI_NS}}}{name}"


def _p(name: str) -> str:
    return f"{{{PAGOS_NS}}}{name}"


# ---------------------------------------------------------------------------------------
# CSD: the issuer's certificate and key
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Csd:
    """The issuer's certificado de sello digital: DER certificate and its RSA key (PEM)."""

    certificate_der: bytes
    private_key_pem: bytes
    number: str  # NoCertificado: 20 digits, the certificate serial read as ASCII
    test: bool  # a generated test certificate: never to a real PAC

    @classmethod
    def from_sat_files(cls, cer: bytes, key: bytes, password: bytes) -> Csd:
        """A real CSD as SAT hands it out: the `.cer` (DER) and the `.key` (encrypted
        PKCS#8 DER) with its password."""
        private_key = serialization.load_der_private_key(key, password=password)
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError("a CSD key is an RSA key")
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cls(cer, pem, csd_number(cer), is_test_certificate(cer))


def csd_number(certificate_der: bytes) -> str:
    """NoCertificado: SAT's serials are 20 ASCII digits stored as a big-endian integer."""
    serial = x509.load_der_x509_certificate(certificate_der).serial_number
    raw = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
    try:
        digits = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("the certificate serial is not a SAT certificate number") from None
    if not NO_CERTIFICADO.fullmatch(digits):
        raise ValueError("the certificate serial is not a 20-digit SAT certificate number")
    return digits


def is_test_certificate(certificate_der: bytes) -> bool:
    """True for a CSD made by `generate_test_csd` (its organizationName marks it)."""
    try:
        subject = x509.load_der_x509_certificate(certificate_der).subject
    except ValueError:
        return False
    organizations = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return any(attribute.value == TEST_CSD_ORGANIZATION for attribute in organizations)


def certificate_rfc(certificate_der: bytes) -> str | None:
    """The RFC in the subject's x500UniqueIdentifier ("RFC" or "RFC / representante")."""
    subject = x509.load_der_x509_certificate(certificate_der).subject
    for attribute in subject.get_attributes_for_oid(NameOID.X500_UNIQUE_IDENTIFIER):
        value = attribute.value
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        return text.split("/")[0].strip() or None
    return None


def generate_test_csd(rfc: str, name: str, *, now: datetime | None = None) -> Csd:
    """A throw-away self-signed CSD: RSA 2048, subject x500UniqueIdentifier = the RFC, a
    20-digit serial, valid four years from the start of `now`'s day (UTC).

    It makes every CFDI XSD-valid and verifiable before an entity's real CSD is configured;
    neither SAT nor a PAC accepts it, and HttpPac refuses to send what it signed.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # "30001" like SAT's test certificates, then 15 digits derived from the key, so two
    # generated CSDs do not share a number. As ASCII the top byte is 0x33: a positive
    # 20-octet serial (158 bits), within X.509's limit.
    tail = int.from_bytes(hashlib.sha256(public_der).digest()[:8], "big") % 10**15
    number = f"30001{tail:015d}"
    serial = int.from_bytes(number.encode("ascii"), "big")
    # X.509 caps commonName at 64 characters; the legal name goes there as far as it fits.
    common_name = " ".join(name.split())[:64] or rfc
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_CSD_ORGANIZATION),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "MX"),
            x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, rfc),
        ]
    )
    start = (now or datetime.now(UTC)).astimezone(UTC)
    start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=TEST_CSD_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Csd(certificate_der=der, private_key_pem=pem, number=number, test=True)


# ---------------------------------------------------------------------------------------
# Cadena original and Sello
# ---------------------------------------------------------------------------------------

_R = True  # Requerido: always emitted
_O = False  # Opcional: emitted only when the attribute is present

_COMPROBANTE = (
    ("Version", _R),
    ("Serie", _O),
    ("Folio", _O),
    ("Fecha", _R),
    ("FormaPago", _O),
    ("NoCertificado", _R),
    ("CondicionesDePago", _O),
    ("SubTotal", _R),
    ("Descuento", _O),
    ("Moneda", _R),
    ("TipoCambio", _O),
    ("Total", _R),
    ("TipoDeComprobante", _R),
    ("Exportacion", _R),
    ("MetodoPago", _O),
    ("LugarExpedicion", _R),
    ("Confirmacion", _O),
)
_INFORMACION_GLOBAL = (("Periodicidad", _R), ("Meses", _R), ("Año", _R))
_EMISOR = (("Rfc", _R), ("Nombre", _R), ("RegimenFiscal", _R), ("FacAtrAdquirente", _O))
_RECEPTOR = (
    ("Rfc", _R),
    ("Nombre", _R),
    ("DomicilioFiscalReceptor", _R),
    ("ResidenciaFiscal", _O),
    ("NumRegIdTrib", _O),
    ("RegimenFiscalReceptor", _R),
    ("UsoCFDI", _R),
)
_CONCEPTO = (
    ("ClaveProdServ", _R),
    ("NoIdentificacion", _O),
    ("Cantidad", _R),
    ("ClaveUnidad", _R),
    ("Unidad", _O),
    ("Descripcion", _R),
    ("ValorUnitario", _R),
    ("Importe", _R),
    ("Descuento", _O),
    ("ObjetoImp", _R),
)
_TRASLADO = (
    ("Base", _R),
    ("Impuesto", _R),
    ("TipoFactor", _R),
    ("TasaOCuota", _O),
    ("Importe", _O),
)
_RETENCION_CONCEPTO = (
    ("Base", _R),
    ("Impuesto", _R),
    ("TipoFactor", _R),
    ("TasaOCuota", _R),
    ("Importe", _R),
)
_RETENCION = (("Impuesto", _R), ("Importe", _R))
_A_CUENTA_TERCEROS = (
    ("RfcACuentaTerceros", _R),
    ("NombreACuentaTerceros", _R),
    ("RegimenFiscalACuentaTerceros", _R),
    ("DomicilioFiscalACuentaTerceros", _R),
)
_PARTE = (
    ("ClaveProdServ", _R),
    ("NoIdentificacion", _O),
    ("Cantidad", _R),
    ("Unidad", _O),
    ("Descripcion", _R),
    ("ValorUnitario", _O),
    ("Importe", _O),
)
_PAGOS_TOTALES = (
    ("TotalRetencionesIVA", _O),
    ("TotalRetencionesISR", _O),
    ("TotalRetencionesIEPS", _O),
    ("TotalTrasladosBaseIVA16", _O),
    ("TotalTrasladosImpuestoIVA16", _O),
    ("TotalTrasladosBaseIVA8", _O),
    ("TotalTrasladosImpuestoIVA8", _O),
    ("TotalTrasladosBaseIVA0", _O),
    ("TotalTrasladosImpuestoIVA0", _O),
    ("TotalTrasladosBaseIVAExento", _O),
    ("MontoTotalPagos", _R),
)
_PAGO = (
    ("FechaPago", _R),
    ("FormaDePagoP", _R),
    ("MonedaP", _R),
    ("TipoCambioP", _O),
    ("Monto", _R),
    ("NumOperacion", _O),
    ("RfcEmisorCtaOrd", _O),
    ("NomBancoOrdExt", _O),
    ("CtaOrdenante", _O),
    ("RfcEmisorCtaBen", _O),
    ("CtaBeneficiario", _O),
    ("TipoCadPago", _O),
    ("CertPago", _O),
    ("CadPago", _O),
    ("SelloPago", _O),
)
_DOCTO_RELACIONADO = (
    ("IdDocumento", _R),
    ("Serie", _O),
    ("Folio", _O),
    ("MonedaDR", _R),
    ("EquivalenciaDR", _O),
    ("NumParcialidad", _R),
    ("ImpSaldoAnt", _R),
    ("ImpPagado", _R),
    ("ImpSaldoInsoluto", _R),
    ("ObjetoImpDR", _R),
)
_RETENCION_DR = (
    ("BaseDR", _R),
    ("ImpuestoDR", _R),
    ("TipoFactorDR", _R),
    ("TasaOCuotaDR", _R),
    ("ImporteDR", _R),
)
_TRASLADO_DR = (
    ("BaseDR", _R),
    ("ImpuestoDR", _R),
    ("TipoFactorDR", _R),
    ("TasaOCuotaDR", _O),
    ("ImporteDR", _O),
)
_RETENCION_P = (("ImpuestoP", _R), ("ImporteP", _R))
_TRASLADO_P = (
    ("BaseP", _R),
    ("ImpuestoP", _R),
    ("TipoFactorP", _R),
    ("TasaOCuotaP", _O),
    ("ImporteP", _O),
)
# XPath normalize-space: only these four characters are whitespace.
_XML_SPACE = re.compile(r"[ \t\r\n]+")


def _normalize_space(value: str) -> str:
    return _XML_SPACE.sub(" ", value).strip(" ")


def _emit(parts: list[str], element: Any, rules: Iterable[tuple[str, bool]]) -> None:
    for name, required in rules:
        value = element.get(name)
        if value is None and not required:
            continue
        parts.append(_normalize_space(value or ""))


def _cadena(root: Any) -> str:
    if root.tag != _c("Comprobante") or root.get("Version") != "4.0":
        raise ValueError("not a CFDI 4.0 cfdi:Comprobante")
    parts: list[str] = []
    _emit(parts, root, _COMPROBANTE)
    for node in root.findall(_c("InformacionGlobal")):
        _emit(parts, node, _INFORMACION_GLOBAL)
    for related in root.findall(_c("CfdiRelacionados")):
        _emit(parts, related, (("TipoRelacion", _R),))
        for item in related.findall(_c("CfdiRelacionado")):
            _emit(parts, item, (("UUID", _R),))
    for node in root.findall(_c("Emisor")):
        _emit(parts, node, _EMISOR)
    for node in root.findall(_c("Receptor")):
        _emit(parts, node, _RECEPTOR)
    for concepto in root.iterfind(f"{_c('Conceptos')}/{_c('Concepto')}"):
        _concepto_cadena(parts, concepto)
    for impuestos in root.findall(_c("Impuestos")):
        for node in impuestos.iterfind(f"{_c('Retenciones')}/{_c('Retencion')}"):
            _emit(parts, node, _RETENCION)
        _emit(parts, impuestos, (("TotalImpuestosRetenidos", _O),))
        for node in impuestos.iterfind(f"{_c('Traslados')}/{_c('Traslado')}"):
            _emit(parts, node, _TRASLADO)
        _emit(parts, impuestos, (("TotalImpuestosTrasladados", _O),))
    for complemento in root.findall(_c("Complemento")):
        for child in complemento:
            if not isinstance(child.tag, str):
                continue  # comments / processing instructions carry no data
            if child.tag == _p("Pagos"):
                _pagos_cadena(parts, child)
            elif child.tag == f"{{{TFD_NS}}}TimbreFiscalDigital":
                continue  # the PAC's stamp: not part of the issuer's cadena original
            else:
                raise ValueError(f"no cadena original rule for complement {child.tag}")
    return "||" + "|".join(parts) + "||"


def _concepto_cadena(parts: list[str], concepto: Any) -> None:
    _emit(parts, concepto, _CONCEPTO)
    impuestos = _c("Impuestos")
    for node in concepto.iterfind(f"{impuestos}/{_c('Traslados')}/{_c('Traslado')}"):
        _emit(parts, node, _TRASLADO)
    for node in concepto.iterfind(f"{impuestos}/{_c('Retenciones')}/{_c('Retencion')}"):
        _emit(parts, node, _RETENCION_CONCEPTO)
    for node in concepto.findall(_c("ACuentaTerceros")):
        _emit(parts, node, _A_CUENTA_TERCEROS)
    for node in concepto.findall(_c("InformacionAduanera")):
        _emit(parts, node, (("NumeroPedimento", _R),))
    for node in concepto.findall(_c("CuentaPredial")):
        _emit(parts, node, (("Numero", _R),))
    for node in concepto.findall(_c("ComplementoConcepto")):
        if len(node):
            raise ValueError("no cadena original rule for ComplementoConcepto content")
    for parte in concepto.iter(_c("Parte")):
        _emit(parts, parte, _PARTE)
        for node in parte.iter(_c("InformacionAduanera")):
            _emit(parts, node, (("NumeroPedimento", _R),))


def _pagos_cadena(parts: list[str], pagos: Any) -> None:
    _emit(parts, pagos, (("Version", _R),))
    for node in pagos.findall(_p("Totales")):
        _emit(parts, node, _PAGOS_TOTALES)
    for pago in pagos.findall(_p("Pago")):
        _emit(parts, pago, _PAGO)
        for docto in pago.findall(_p("DoctoRelacionado")):
            _emit(parts, docto, _DOCTO_RELACIONADO)
            impuestos_dr = _p("ImpuestosDR")
            for node in docto.iterfind(f"{impuestos_dr}/{_p('RetencionesDR')}/{_p('RetencionDR')}"):
                _emit(parts, node, _RETENCION_DR)
            for node in docto.iterfind(f"{impuestos_dr}/{_p('TrasladosDR')}/{_p('TrasladoDR')}"):
                _emit(parts, node, _TRASLADO_DR)
        for impuestos_p in pago.findall(_p("ImpuestosP")):
            for node in impuestos_p.iterfind(f"{_p('RetencionesP')}/{_p('RetencionP')}"):
                _emit(parts, node, _RETENCION_P)
            for node in impuestos_p.iterfind(f"{_p('TrasladosP')}/{_p('TrasladoP')}"):
                _emit(parts, node, _TRASLADO_P)


def _parse(xml: bytes) -> Any:
    return etree.fromstring(xml, _PARSER)


def cadena_original(xml: bytes) -> str:
    """The cadena original of a CFDI 4.0 (see the module docstring for its scope)."""
    return _cadena(_parse(xml))


def verify_sello(xml: bytes) -> bool:
    """True when Sello is the embedded certificate's signature of the cadena original and
    NoCertificado is that certificate's number. False for anything else, including a
    document this module cannot read."""
    try:
        root = _parse(xml)
        certificate_der = base64.b64decode(root.get("Certificado") or "", validate=True)
        signature = base64.b64decode(root.get("Sello") or "", validate=True)
        if root.get("NoCertificado") != csd_number(certificate_der):
            return False
        public_key = x509.load_der_x509_certificate(certificate_der).public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            return False
        public_key.verify(
            signature, _cadena(root).encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError, binascii.Error, etree.XMLSyntaxError):
        return False
    return True


def _sign(cadena: str, csd: Csd) -> str:
    key = serialization.load_pem_private_key(csd.private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("a CSD key is an RSA key")
    signature = key.sign(cadena.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def certificate_of(xml: bytes) -> bytes | None:
    """The DER certificate a CFDI carries in @Certificado (None if it has none)."""
    value = _parse(xml).get("Certificado")
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        return None


def issuer_rfc(xml: bytes) -> str | None:
    emisor = _parse(xml).find(_c("Emisor"))
    return None if emisor is None else emisor.get("Rfc")


# ---------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LineTax:
    objeto_imp: str  # c_ObjetoImp: 01 not subject, 02 subject
    factor: str | None  # "Tasa" | "Exento" | None (not subject)
    rate: str | None  # TasaOCuota, 6 decimals, for Tasa
    base_minor: int
    tax_minor: int


def mexico_local(moment: datetime) -> str:
    """SAT's t_FechaH: Mexico City wall-clock time, seconds, no offset (naive = UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(MEXICO_CITY).strftime("%Y-%m-%dT%H:%M:%S")


def from_mexico_local(value: str) -> datetime:
    """The inverse of `mexico_local`, as an aware UTC datetime (Mexico has no DST since
    2022, so the wall-clock time is unambiguous)."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=MEXICO_CITY)
    return parsed.astimezone(UTC)


def serie_folio(number: str) -> tuple[str | None, str]:
    """ "INV-2026-000001" → ("INV", "2026000001"); anything else stays whole in Folio."""
    head, sep, rest = number.partition("-")
    folio = rest.replace("-", "")
    if sep and head and folio and len(head) <= 25 and len(folio) <= 40 and "|" not in number:
        return head, folio
    if not number or len(number) > 40 or "|" in number:
        raise ValueError(f"number {number!r} does not fit CFDI Serie/Folio")
    return None, number


def _money(amount_minor: int, facts: DocumentFacts, what: str) -> str:
    if amount_minor < 0:
        raise ValueError(f"{what} is negative; CFDI amounts are never negative")
    return major(amount_minor, facts.currency_exponent)


def _quantity(quantity: str) -> str:
    """Cantidad: positive, at most 6 decimals, plain notation ("1.50" → "1.5")."""
    try:
        value = Decimal(quantity)
    except InvalidOperation:
        raise ValueError(f"quantity {quantity!r} is not a decimal") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"quantity {quantity!r} must be positive (Cantidad)")
    normalized = value.normalize()
    exponent = normalized.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        raise ValueError(f"quantity {quantity!r} has more than 6 decimals (Cantidad)")
    return format(normalized, "f")


def _rate(rate: str) -> str:
    try:
        fraction = Decimal(rate) / Decimal(100)
    except InvalidOperation:
        raise ValueError(f"tax rate {rate!r} is not a decimal") from None
    if not fraction.is_finite() or fraction < 0:
        raise ValueError(f"tax rate {rate!r} is not a valid rate")
    return format(fraction.quantize(Decimal("0.000001")), "f")


def _line_tax(line: Line) -> _LineTax:
    if line.amount_minor < 0:
        raise ValueError(f"line {line.position}: CFDI amounts are never negative")
    # SAT needs Base > 0 for a Traslado, so a free line is simply not subject to tax.
    if line.tax_category == "O" or line.amount_minor == 0:
        return _LineTax("01", None, None, line.amount_minor, 0)
    if line.tax_category == "E":
        if line.tax_minor:
            raise ValueError(f"line {line.position}: an exempt line carries no tax")
        return _LineTax("02", "Exento", None, line.amount_minor, 0)
    return _LineTax("02", "Tasa", _rate(line.tax_rate), line.amount_minor, line.tax_minor)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _set(element: Any, attributes: Iterable[tuple[str, str | None]]) -> None:
    for name, value in attributes:
        if value is not None:
            element.set(name, value)


def _rfc(value: str | None) -> str | None:
    if value is None:
        return None
    compact = value.replace(" ", "").replace("-", "").upper()
    return compact or None


def _postal_code(value: str | None, what: str) -> str:
    code = (value or "").strip()
    if not POSTAL_CODE.fullmatch(code):
        raise ValueError(f"{what} must be a 5-digit Mexican postal code, got {value!r}")
    return code


def _required(mapping: dict[str, str], key: str, what: str) -> str:
    value = (mapping.get(key) or "").strip()
    if not value:
        raise ValueError(f"{what} is required for a CFDI")
    return value


def forma_pago(method: str | None) -> str:
    return FORMA_PAGO.get(method or "", FORMA_PAGO_UNKNOWN)


def _receptor(facts: DocumentFacts, lugar: str, kind: str) -> list[tuple[str, str | None]]:
    buyer = facts.buyer
    country = (buyer.address.country or "").upper()
    rfc = _rfc(buyer.tax_id("mx_rfc"))
    if rfc is None:
        # No RFC: a foreign buyer is "residente en el extranjero", anyone else is
        # "público en general" (SAT's generic receivers).
        rfc = GENERIC_RFC_FOREIGN if country and country != "MX" else GENERIC_RFC_DOMESTIC
    name = _collapse(buyer.name)
    if rfc in GENERIC_RFCS:
        residence: str | None = None
        registration: str | None = None
        if rfc == GENERIC_RFC_FOREIGN and country and country != "MX":
            found = pycountry.countries.get(alpha_2=country)
            residence = None if found is None else str(found.alpha_3)
            registration = buyer.registration_id or next(
                (value for kind_, value in buyer.tax_ids if kind_ != "mx_rfc" and value), None
            )
            registration = _collapse(registration)[:40] if registration else None
        return [
            ("Rfc", rfc),
            ("Nombre", name),
            # SAT: a generic receiver's DomicilioFiscalReceptor is the LugarExpedicion.
            ("DomicilioFiscalReceptor", lugar),
            ("ResidenciaFiscal", residence),
            ("NumRegIdTrib", registration if residence else None),
            ("RegimenFiscalReceptor", GENERIC_REGIME),
            ("UsoCFDI", PAYMENT_USE if kind == "P" else GENERIC_USE),
        ]
    regime = _required(buyer.cfdi, "fiscal_regime", "buyer cfdi.fiscal_regime")
    if kind == "P":
        use = PAYMENT_USE
    elif kind == "E" and regime in CREDIT_NOTE_USE_REGIMES:
        use = CREDIT_NOTE_USE
    else:
        use = _required(buyer.cfdi, "cfdi_use", "buyer cfdi.cfdi_use")
    return [
        ("Rfc", rfc),
        ("Nombre", name),
        ("DomicilioFiscalReceptor", _postal_code(buyer.address.postal_code, "buyer postal code")),
        ("RegimenFiscalReceptor", regime),
        ("UsoCFDI", use),
    ]


def build_cfdi(facts: DocumentFacts, csd: Csd) -> bytes:
    """The signed CFDI 4.0 of an invoice (I), credit note (E) or payment (P).

    Raises ValueError when the facts cannot make a CFDI (non-MXN currency, a missing RFC,
    regime or postal code, document-level allowances, totals that do not add up).
    """
    kinds = {"invoice": "I", "credit_note": "E", "payment": "P"}
    kind = kinds.get(facts.document_type)
    if kind is None:
        raise ValueError(f"no CFDI for document type {facts.document_type!r}")
    if facts.currency != "MXN":
        # Another currency needs TipoCambio (the exchange rate), which the facts do not carry.
        raise ValueError(f"CFDI documents are generated in MXN only, not {facts.currency}")
    if facts.allowance_charges:
        # CFDI has no document-level allowance or charge: discounts belong on the lines.
        raise ValueError("CFDI has no document-level allowances or charges")
    seller = facts.seller
    seller_rfc = _rfc(seller.tax_id("mx_rfc"))
    if seller_rfc is None:
        raise ValueError("seller mx_rfc is required for a CFDI")
    regime = _required(seller.cfdi, "fiscal_regime", "seller cfdi.fiscal_regime")
    lugar = _postal_code(
        seller.cfdi.get("expedition_postal_code") or seller.address.postal_code,
        "seller expedition postal code",
    )
    serie, folio = serie_folio(facts.number)

    nsmap = {"cfdi": CFDI_NS, "xsi": XSI_NS}
    location = CFDI_LOCATION
    if kind == "P":
        nsmap["pago20"] = PAGOS_NS
        location = f"{CFDI_LOCATION} {PAGOS_LOCATION}"
    root = etree.Element(_c("Comprobante"), nsmap=nsmap)
    root.set(f"{{{XSI_NS}}}schemaLocation", location)

    if kind == "P":
        forma: str | None = None
        metodo: str | None = None
        subtotal, total, moneda = "0", "0", "XXX"
        taxes: list[_LineTax] = []
    else:
        taxes = [_line_tax(line) for line in facts.lines]
        if not taxes:
            raise ValueError("a CFDI needs at least one line (Concepto)")
        subtotal_minor = sum(tax.base_minor for tax in taxes)
        transferred_minor = sum(tax.tax_minor for tax in taxes if tax.factor == "Tasa")
        if subtotal_minor != facts.subtotal_minor or transferred_minor != facts.tax_minor:
            raise ValueError("the lines do not add up to the document's subtotal and tax")
        if subtotal_minor + transferred_minor != facts.total_minor:
            raise ValueError("subtotal plus tax is not the document's total")
        if facts.collection_method == "charge_automatically":
            # Charged on issue: paid in one exhibition, from the card on file (or the
            # method the facts name).
            metodo = "PUE"
            forma = forma_pago(facts.payment.method) if facts.payment else FORMA_PAGO["card"]
        else:
            # Paid later: SAT requires FormaPago 99 ("por definir") with PPD.
            metodo, forma = "PPD", FORMA_PAGO_UNKNOWN
        subtotal = _money(subtotal_minor, facts, "subtotal")
        total = _money(facts.total_minor, facts, "total")
        moneda = facts.currency

    _set(
        root,
        [
            ("Version", "4.0"),
            ("Serie", serie),
            ("Folio", folio),
            ("Fecha", mexico_local(facts.issued_at)),
            ("Sello", ""),  # placeholder keeps XSD attribute order; set after signing
            ("FormaPago", forma),
            ("NoCertificado", csd.number),
            ("Certificado", base64.b64encode(csd.certificate_der).decode("ascii")),
            ("SubTotal", subtotal),
            ("Moneda", moneda),
            ("Total", total),
            ("TipoDeComprobante", kind),
            ("Exportacion", "01"),  # no export of goods (ComercioExterior is not emitted)
            ("MetodoPago", metodo),
            ("LugarExpedicion", lugar),
        ],
    )

    if kind == "E" and facts.billing_reference_uuid:
        if not CFDI_UUID.fullmatch(facts.billing_reference_uuid):
            raise ValueError("billing_reference_uuid is not a CFDI UUID")
        related = etree.SubElement(root, _c("CfdiRelacionados"), TipoRelacion="01")
        etree.SubElement(related, _c("CfdiRelacionado"), UUID=facts.billing_reference_uuid)
    # A credit note whose invoice has no stamped UUID yet goes out without
    # CfdiRelacionados: the XSD requires a real UUID there, and none exists.

    emisor = etree.SubElement(root, _c("Emisor"))
    _set(
        emisor, [("Rfc", seller_rfc), ("Nombre", _collapse(seller.name)), ("RegimenFiscal", regime)]
    )
    receptor = etree.SubElement(root, _c("Receptor"))
    _set(receptor, _receptor(facts, lugar, kind))

    conceptos = etree.SubElement(root, _c("Conceptos"))
    if kind == "P":
        _set(
            etree.SubElement(conceptos, _c("Concepto")),
            [
                ("ClaveProdServ", "84111506"),  # servicios de facturación
                ("Cantidad", "1"),
                ("ClaveUnidad", "ACT"),  # actividad
                ("Descripcion", "Pago"),
                ("ValorUnitario", "0"),
                ("Importe", "0"),
                ("ObjetoImp", "01"),
            ],
        )
        payment = facts.payment
        if payment is None:
            raise ValueError("a payment CFDI needs the payment facts")
        _pagos(etree.SubElement(root, _c("Complemento")), payment, facts)
    else:
        for line, tax in zip(facts.lines, taxes, strict=True):
            _concepto(conceptos, line, tax, facts)
        _impuestos(root, taxes, facts)

    root.set("Sello", _sign(_cadena(root), csd))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _concepto(parent: Any, line: Line, tax: _LineTax, facts: DocumentFacts) -> None:
    concepto = etree.SubElement(parent, _c("Concepto"))
    _set(
        concepto,
        [
            ("ClaveProdServ", line.cfdi_product_code or "01010101"),
            ("Cantidad", _quantity(line.quantity)),
            ("ClaveUnidad", line.cfdi_unit_code or "E48"),
            ("Descripcion", _collapse(line.description)),
            ("ValorUnitario", _money(line.unit_amount_minor, facts, f"line {line.position} price")),
            ("Importe", _money(line.amount_minor, facts, f"line {line.position} amount")),
            ("ObjetoImp", tax.objeto_imp),
        ],
    )
    if tax.factor is None:
        return
    impuestos = etree.SubElement(concepto, _c("Impuestos"))
    traslados = etree.SubElement(impuestos, _c("Traslados"))
    _set(
        etree.SubElement(traslados, _c("Traslado")),
        [
            ("Base", _money(tax.base_minor, facts, "tax base")),
            ("Impuesto", "002"),  # IVA
            ("TipoFactor", tax.factor),
            ("TasaOCuota", tax.rate),
            ("Importe", _money(tax.tax_minor, facts, "tax") if tax.factor == "Tasa" else None),
        ],
    )


def _impuestos(root: Any, taxes: list[_LineTax], facts: DocumentFacts) -> None:
    # One Comprobante-level Traslado per (factor, rate), in order of first appearance.
    groups: dict[tuple[str, str | None], list[int]] = {}
    for tax in taxes:
        if tax.factor is None:
            continue
        group = groups.setdefault((tax.factor, tax.rate), [0, 0])
        group[0] += tax.base_minor
        group[1] += tax.tax_minor
    if not groups:
        return  # nothing subject to tax: no Impuestos node at all
    impuestos = etree.SubElement(root, _c("Impuestos"))
    if any(factor == "Tasa" for factor, _ in groups):
        # SAT: TotalImpuestosTrasladados is omitted when every Traslado is Exento.
        transferred = sum(amounts[1] for (factor, _), amounts in groups.items() if factor == "Tasa")
        impuestos.set("TotalImpuestosTrasladados", _money(transferred, facts, "tax"))
    traslados = etree.SubElement(impuestos, _c("Traslados"))
    for (factor, rate), (base, amount) in groups.items():
        _set(
            etree.SubElement(traslados, _c("Traslado")),
            [
                ("Base", _money(base, facts, "tax base")),
                ("Impuesto", "002"),
                ("TipoFactor", factor),
                ("TasaOCuota", rate),
                ("Importe", _money(amount, facts, "tax") if factor == "Tasa" else None),
            ],
        )


def _pagos(complemento: Any, payment: PaymentFacts, facts: DocumentFacts) -> None:
    if not payment.invoice_uuid or not CFDI_UUID.fullmatch(payment.invoice_uuid):
        # The complement points at the paid invoice's folio fiscal: it must be stamped first.
        raise ValueError("the paid invoice has no stamped CFDI UUID yet")
    balance_after = payment.balance_before_minor - payment.amount_minor
    if payment.amount_minor <= 0 or balance_after < 0:
        raise ValueError("the payment amount must be positive and at most the open balance")
    if not 1 <= payment.installment <= 999:
        raise ValueError("NumParcialidad (installment) must be 1 to 999")
    amount = _money(payment.amount_minor, facts, "payment amount")
    pagos = etree.SubElement(complemento, _p("Pagos"), Version="2.0")
    etree.SubElement(pagos, _p("Totales"), MontoTotalPagos=amount)
    pago = etree.SubElement(pagos, _p("Pago"))
    reference = _collapse(payment.reference)[:100] if payment.reference else None
    _set(
        pago,
        [
            ("FechaPago", mexico_local(payment.paid_at)),
            ("FormaDePagoP", forma_pago(payment.method)),
            ("MonedaP", facts.currency),
            ("TipoCambioP", "1"),  # SAT: "1" when MonedaP is MXN
            ("Monto", amount),
            ("NumOperacion", reference.replace("|", "/") if reference else None),
        ],
    )
    serie, folio = serie_folio(payment.invoice_number)
    _set(
        etree.SubElement(pago, _p("DoctoRelacionado")),
        [
            ("IdDocumento", payment.invoice_uuid),
            ("Serie", serie),
            ("Folio", folio),
            ("MonedaDR", facts.currency),
            ("EquivalenciaDR", "1"),
            ("NumParcialidad", str(payment.installment)),
            ("ImpSaldoAnt", _money(payment.balance_before_minor, facts, "balance")),
            ("ImpPagado", amount),
            ("ImpSaldoInsoluto", _money(balance_after, facts, "balance")),
            # The facts do not carry the paid invoice's tax breakdown, so no ImpuestosDR.
            ("ObjetoImpDR", "01"),
        ],
    )


# ---------------------------------------------------------------------------------------
# The PAC's stamp (TimbreFiscalDigital 1.1): used by the sandbox PAC and the test PAC
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timbre:
    uuid: str
    fecha_timbrado: str  # Mexico City local time, t_FechaH
    rfc_prov_certif: str
    sello_cfd: str
    no_certificado_sat: str
    sello_sat: str

    @property
    def stamped_at(self) -> datetime:
        return from_mexico_local(self.fecha_timbrado)


def timbre_cadena(uuid: str, fecha: str, rfc_prov_certif: str, sello_cfd: str, no_cert: str) -> str:
    """The TFD 1.1 cadena original (cadenaoriginal_TFD_1_1.xslt), which SelloSAT signs."""
    values = ("1.1", uuid, fecha, rfc_prov_certif, sello_cfd, no_cert)
    return "||" + "|".join(_normalize_space(value) for value in values) + "||"


def add_timbre(
    xml: bytes,
    *,
    uuid: str,
    stamped_at: datetime,
    rfc_prov_certif: str,
    no_certificado_sat: str,
    sello_sat: str | None = None,
) -> bytes:
    """The CFDI with a tfd:TimbreFiscalDigital 1.1 in its Complemento.

    Without `sello_sat` a digest of the TFD cadena stands in: there is no SAT key here, so
    a sandbox stamp is never a real one.
    """
    root = _parse(xml)
    if root.find(f"{_c('Complemento')}/{{{TFD_NS}}}TimbreFiscalDigital") is not None:
        raise ValueError("the CFDI is already stamped")
    fecha = mexico_local(stamped_at)
    sello_cfd = root.get("Sello") or ""
    if sello_sat is None:
        cadena = timbre_cadena(uuid, fecha, rfc_prov_certif, sello_cfd, no_certificado_sat)
        sello_sat = base64.b64encode(hashlib.sha256(cadena.encode("utf-8")).digest()).decode()
    complemento = root.find(_c("Complemento"))
    if complemento is None:
        complemento = etree.Element(_c("Complemento"))
        addenda = root.find(_c("Addenda"))
        # Complemento precedes Addenda in cfdv40.xsd's sequence.
        if addenda is not None:
            addenda.addprevious(complemento)
        else:
            root.append(complemento)
    tfd = etree.SubElement(
        complemento, f"{{{TFD_NS}}}TimbreFiscalDigital", nsmap={"tfd": TFD_NS, "xsi": XSI_NS}
    )
    tfd.set(f"{{{XSI_NS}}}schemaLocation", TFD_LOCATION)
    _set(
        tfd,
        [
            ("Version", "1.1"),
            ("UUID", uuid),
            ("FechaTimbrado", fecha),
            ("RfcProvCertif", rfc_prov_certif),
            ("SelloCFD", sello_cfd),
            ("NoCertificadoSAT", no_certificado_sat),
            ("SelloSAT", sello_sat),
        ],
    )
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def read_timbre(xml: bytes) -> Timbre | None:
    """The stamp of a stamped CFDI, or None when it has none."""
    tfd = _parse(xml).find(f"{_c('Complemento')}/{{{TFD_NS}}}TimbreFiscalDigital")
    if tfd is None:
        return None
    return Timbre(
        uuid=tfd.get("UUID") or "",
        fecha_timbrado=tfd.get("FechaTimbrado") or "",
        rfc_prov_certif=tfd.get("RfcProvCertif") or "",
        sello_cfd=tfd.get("SelloCFD") or "",
        no_certificado_sat=tfd.get("NoCertificadoSAT") or "",
        sello_sat=tfd.get("SelloSAT") or "",
    )
