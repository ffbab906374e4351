"""Mexico CFDI 4.0: generated documents validate with SAT's XSDs and carry a verifiable
Sello; the PAC transports (sandbox and HTTP against a local test PAC) stamp, reject,
cancel and class failures as the submission queue expects. No database."""

from __future__ import annotations

import base64
import hashlib
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from stdnum.exceptions import ValidationError as StdnumValidationError

from invoicetrail.core.config import Settings
from invoicetrail.core.taxids import normalize_mx_rfc
from invoicetrail.einvoicing import cfdi
from invoicetrail.einvoicing.facts import Address, DocumentFacts, Line, Party, PaymentFacts
from invoicetrail.einvoicing.pac import HttpPac, SandboxPac, pac_transport
from invoicetrail.einvoicing.transports import CancelRefused, TransportUnavailable
from invoicetrail.einvoicing.validation import validate_cfdi
from pac_server import LocalPac, running_pac

NS = {
    "cfdi": cfdi.CFDI_NS,
    "pago20": cfdi.PAGOS_NS,
    "tfd": cfdi.TFD_NS,
}
SELLER_RFC = "EKU9003173C9"
BUYER_RFC = "GODE561231GR8"
INVOICE_UUID = "6F1C2A3B-4D5E-4F60-8A7B-9C0D1E2F3A4B"
ISSUED_AT = datetime(2026, 11, 20, 18, 30, 5, tzinfo=UTC)  # 12:30:05 in Mexico City


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_csd() -> cfdi.Csd:
    return cfdi.generate_test_csd(SELLER_RFC, "ESCUELA KEMPER URGATE")


def _live_like_csd(rfc: str, name: str) -> cfdi.Csd:
    """A self-signed CSD without the test marker: what an entity's real CSD looks like to
    HttpPac (the local test PAC, unlike SAT, accepts any certificate)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    number = "30001000000400002495"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, rfc),
        ]
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(number.encode("ascii"), "big"))
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=1460))
        .sign(key, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cfdi.Csd(der, pem, cfdi.csd_number(der), test=False)


@pytest.fixture(scope="module")
def live_csd() -> cfdi.Csd:
    return _live_like_csd(SELLER_RFC, "ESCUELA KEMPER URGATE")


@pytest.fixture
def pac() -> Iterator[LocalPac]:
    with running_pac() as server:
        yield server


@pytest.fixture
def http_client() -> Iterator[httpx.Client]:
    # trust_env=False: a proxy from the environment must not sit between us and 127.0.0.1.
    with httpx.Client(trust_env=False) as client:
        yield client


def _http_pac(pac: LocalPac, client: httpx.Client, timeout: float = 5.0) -> HttpPac:
    return HttpPac(pac.url, pac.username, pac.password, timeout, client=client)


SELLER = Party(
    name="Escuela Kemper Urgate",
    address=Address(line1="Av. Juárez 10", city="Pachuca", postal_code="42501", country="MX"),
    tax_ids=(("mx_rfc", SELLER_RFC),),
    cfdi={"fiscal_regime": "601", "expedition_postal_code": "42501"},
)
BUYER = Party(
    name="Dora Gómez Díaz",
    address=Address(postal_code="06600", city="Ciudad de México", country="MX"),
    tax_ids=(("mx_rfc", BUYER_RFC),),
    cfdi={"fiscal_regime": "612", "cfdi_use": "G03"},
)
LINES = (
    Line(1, "Consultoría  mensual", "2", 50_000, 100_000, "16", "S", 16_000),
    Line(2, "Alimentos básicos", "1", 20_000, 20_000, "0", "Z", 0),
    Line(3, "Libros", "1.5", 10_000, 15_000, "0", "E", 0, "exento art. 9"),
)


def invoice_facts(**changes: Any) -> DocumentFacts:
    facts = DocumentFacts(
        regime="cfdi",
        document_type="invoice",
        number="INV-2026-000001",
        issued_at=ISSUED_AT,
        currency="MXN",
        currency_exponent=2,
        seller=SELLER,
        buyer=BUYER,
        lines=LINES,
        subtotal_minor=135_000,
        tax_minor=16_000,
        total_minor=151_000,
        payable_minor=151_000,
        collection_method="send_invoice",
        test=True,
    )
    return replace(facts, **changes)


def credit_note_facts(**changes: Any) -> DocumentFacts:
    line = Line(1, "Devolución consultoría", "1", 50_000, 50_000, "16", "S", 8_000)
    base = invoice_facts(
        document_type="credit_note",
        number="CN-2026-000001",
        lines=(line,),
        subtotal_minor=50_000,
        tax_minor=8_000,
        total_minor=58_000,
        payable_minor=58_000,
        billing_reference_number="INV-2026-000001",
        billing_reference_uuid=INVOICE_UUID,
        note="partial refund",
    )
    return replace(base, **changes)


def payment_facts(**changes: Any) -> DocumentFacts:
    payment = PaymentFacts(
        paid_at=datetime(2026, 11, 22, 16, 0, tzinfo=UTC),
        amount_minor=100_000,
        method="bank_transfer",
        reference="SPEI 0042-7781",
        invoice_uuid=INVOICE_UUID,
        invoice_number="INV-2026-000001",
        invoice_total_minor=151_000,
        balance_before_minor=151_000,
        installment=1,
    )
    base = invoice_facts(
        document_type="payment",
        number="PAY-2026-000001",
        issued_at=datetime(2026, 11, 22, 17, 0, tzinfo=UTC),
        lines=(),
        subtotal_minor=0,
        tax_minor=0,
        total_minor=0,
        payable_minor=0,
        payment=payment,
    )
    return replace(base, **changes)


def _root(xml: bytes) -> Any:
    return etree.fromstring(xml)


def assert_valid(xml: bytes, csd: cfdi.Csd) -> Any:
    report = validate_cfdi(xml)
    assert report.findings == (), [f.message for f in report.findings]
    root = _root(xml)
    assert root.tag == f"{{{cfdi.CFDI_NS}}}Comprobante"
    assert root.get("Version") == "4.0"
    number = root.get("NoCertificado")
    assert number is not None and len(number) == 20 and number.isdigit()
    assert number == csd.number
    assert cfdi.verify_sello(xml)
    return root


# -- generator --------------------------------------------------------------------------


def test_ingreso_ppd_with_16_0_and_exempt_lines_validates(test_csd: cfdi.Csd) -> None:
    xml = cfdi.build_cfdi(invoice_facts(), test_csd)
    root = assert_valid(xml, test_csd)

    assert root.get("TipoDeComprobante") == "I"
    assert (root.get("Serie"), root.get("Folio")) == ("INV", "2026000001")
    assert root.get("Fecha") == "2026-11-20T12:30:05"  # Mexico City, no offset
    assert (root.get("MetodoPago"), root.get("FormaPago")) == ("PPD", "99")
    assert (root.get("Moneda"), root.get("Exportacion")) == ("MXN", "01")
    assert root.get("LugarExpedicion") == "42501"
    assert (root.get("SubTotal"), root.get("Total")) == ("1350.00", "1510.00")
    emisor = root.find("cfdi:Emisor", NS)
    assert (emisor.get("Rfc"), emisor.get("RegimenFiscal")) == (SELLER_RFC, "601")
    receptor = root.find("cfdi:Receptor", NS)
    assert receptor.get("Rfc") == BUYER_RFC
    assert receptor.get("DomicilioFiscalReceptor") == "06600"
    assert (receptor.get("RegimenFiscalReceptor"), receptor.get("UsoCFDI")) == ("612", "G03")

    conceptos = root.findall("cfdi:Conceptos/cfdi:Concepto", NS)
    assert [c.get("ClaveProdServ") for c in conceptos] == ["01010101"] * 3
    assert [c.get("ClaveUnidad") for c in conceptos] == ["E48"] * 3
    assert conceptos[0].get("Descripcion") == "Consultoría mensual"
    assert [c.get("Cantidad") for c in conceptos] == ["2", "1", "1.5"]
    traslados = [c.find("cfdi:Impuestos/cfdi:Traslados/cfdi:Traslado", NS) for c in conceptos]
    assert [t.get("TipoFactor") for t in traslados] == ["Tasa", "Tasa", "Exento"]
    assert [t.get("TasaOCuota") for t in traslados] == ["0.160000", "0.000000", None]
    assert [t.get("Importe") for t in traslados] == ["160.00", "0.00", None]

    impuestos = root.find("cfdi:Impuestos", NS)
    assert impuestos.get("TotalImpuestosTrasladados") == "160.00"
    totals = [
        (t.get("Base"), t.get("TipoFactor"), t.get("TasaOCuota"), t.get("Importe"))
        for t in impuestos.findall("cfdi:Traslados/cfdi:Traslado", NS)
    ]
    assert totals == [
        ("1000.00", "Tasa", "0.160000", "160.00"),
        ("200.00", "Tasa", "0.000000", "0.00"),
        ("150.00", "Exento", None, None),
    ]


def test_ingreso_pue_charges_the_card(test_csd: cfdi.Csd) -> None:
    xml = cfdi.build_cfdi(invoice_facts(collection_method="charge_automatically"), test_csd)
    root = assert_valid(xml, test_csd)
    assert (root.get("MetodoPago"), root.get("FormaPago")) == ("PUE", "04")


def test_line_not_subject_to_tax_has_objeto_imp_01(test_csd: cfdi.Csd) -> None:
    lines = (*LINES, Line(4, "Cuota de membresía", "1", 5_000, 5_000, "0", "O", 0))
    facts = invoice_facts(lines=lines, subtotal_minor=140_000, total_minor=156_000)
    root = assert_valid(cfdi.build_cfdi(facts, test_csd), test_csd)
    last = root.findall("cfdi:Conceptos/cfdi:Concepto", NS)[-1]
    assert last.get("ObjetoImp") == "01"
    assert last.find("cfdi:Impuestos", NS) is None


def test_only_exempt_lines_omit_total_impuestos_trasladados(test_csd: cfdi.Csd) -> None:
    facts = invoice_facts(lines=(LINES[2],), subtotal_minor=15_000, tax_minor=0, total_minor=15_000)
    root = assert_valid(cfdi.build_cfdi(facts, test_csd), test_csd)
    impuestos = root.find("cfdi:Impuestos", NS)
    assert impuestos.get("TotalImpuestosTrasladados") is None
    assert impuestos.find("cfdi:Traslados/cfdi:Traslado", NS).get("TipoFactor") == "Exento"


def test_generic_domestic_receiver(test_csd: cfdi.Csd) -> None:
    buyer = Party(
        name="Público en general",
        address=Address(postal_code="64000", country="MX"),
        tax_ids=(("mx_rfc", "XAXX010101000"),),
    )
    root = assert_valid(cfdi.build_cfdi(invoice_facts(buyer=buyer), test_csd), test_csd)
    receptor = root.find("cfdi:Receptor", NS)
    assert receptor.get("Rfc") == "XAXX010101000"
    assert (receptor.get("RegimenFiscalReceptor"), receptor.get("UsoCFDI")) == ("616", "S01")
    # SAT: a generic receiver's fiscal domicile is the place of issue.
    assert receptor.get("DomicilioFiscalReceptor") == root.get("LugarExpedicion") == "42501"
    assert receptor.get("ResidenciaFiscal") is None


@pytest.mark.parametrize(
    "tax_ids",
    [(("mx_rfc", "XEXX010101000"), ("us_ein", "12-3456789")), (("us_ein", "12-3456789"),)],
)
def test_generic_foreign_receiver(test_csd: cfdi.Csd, tax_ids: tuple[tuple[str, str], ...]) -> None:
    buyer = Party(
        name="Acme Corporation",
        address=Address(postal_code="94105", city="San Francisco", country="US"),
        tax_ids=tax_ids,
    )
    root = assert_valid(cfdi.build_cfdi(invoice_facts(buyer=buyer), test_csd), test_csd)
    receptor = root.find("cfdi:Receptor", NS)
    assert receptor.get("Rfc") == "XEXX010101000"
    assert (receptor.get("RegimenFiscalReceptor"), receptor.get("UsoCFDI")) == ("616", "S01")
    assert receptor.get("DomicilioFiscalReceptor") == "42501"
    assert (receptor.get("ResidenciaFiscal"), receptor.get("NumRegIdTrib")) == ("USA", "12-3456789")


def test_egreso_relates_to_the_invoice_uuid(test_csd: cfdi.Csd) -> None:
    root = assert_valid(cfdi.build_cfdi(credit_note_facts(), test_csd), test_csd)
    assert root.get("TipoDeComprobante") == "E"
    assert (root.get("Serie"), root.get("Folio")) == ("CN", "2026000001")
    related = root.find("cfdi:CfdiRelacionados", NS)
    assert related.get("TipoRelacion") == "01"
    assert related.find("cfdi:CfdiRelacionado", NS).get("UUID") == INVOICE_UUID
    # A credit note is used for "devoluciones, descuentos o bonificaciones".
    assert root.find("cfdi:Receptor", NS).get("UsoCFDI") == "G02"
    assert root.get("Total") == "580.00"


def test_egreso_without_stamped_invoice_omits_cfdi_relacionados(test_csd: cfdi.Csd) -> None:
    xml = cfdi.build_cfdi(credit_note_facts(billing_reference_uuid=None), test_csd)
    root = assert_valid(xml, test_csd)
    assert root.find("cfdi:CfdiRelacionados", NS) is None


def test_pago_with_payment_complement_validates(test_csd: cfdi.Csd) -> None:
    xml = cfdi.build_cfdi(payment_facts(), test_csd)
    root = assert_valid(xml, test_csd)
    assert root.get("TipoDeComprobante") == "P"
    assert (root.get("SubTotal"), root.get("Total"), root.get("Moneda")) == ("0", "0", "XXX")
    assert root.get("MetodoPago") is None and root.get("FormaPago") is None
    assert root.find("cfdi:Receptor", NS).get("UsoCFDI") == "CP01"
    concepto = root.find("cfdi:Conceptos/cfdi:Concepto", NS)
    assert (concepto.get("ClaveProdServ"), concepto.get("ClaveUnidad")) == ("84111506", "ACT")
    assert concepto.get("ObjetoImp") == "01"
    pagos = root.find("cfdi:Complemento/pago20:Pagos", NS)
    assert pagos.get("Version") == "2.0"
    assert pagos.find("pago20:Totales", NS).get("MontoTotalPagos") == "1000.00"
    pago = pagos.find("pago20:Pago", NS)
    assert pago.get("FechaPago") == "2026-11-22T10:00:00"
    assert (pago.get("FormaDePagoP"), pago.get("MonedaP"), pago.get("Monto")) == (
        "03",
        "MXN",
        "1000.00",
    )
    docto = pago.find("pago20:DoctoRelacionado", NS)
    assert docto.get("IdDocumento") == INVOICE_UUID
    assert (docto.get("Serie"), docto.get("Folio")) == ("INV", "2026000001")
    assert (docto.get("MonedaDR"), docto.get("EquivalenciaDR")) == ("MXN", "1")
    assert docto.get("NumParcialidad") == "1"
    assert (docto.get("ImpSaldoAnt"), docto.get("ImpPagado"), docto.get("ImpSaldoInsoluto")) == (
        "1510.00",
        "1000.00",
        "510.00",
    )
    assert docto.get("ObjetoImpDR") == "01"
    # The complement is part of what the Sello signs.
    assert "|2.0|1000.00|2026-11-22T10:00:00|03|MXN|1|1000.00|" in cfdi.cadena_original(xml)


def test_payment_of_an_unstamped_invoice_is_refused(test_csd: cfdi.Csd) -> None:
    facts = payment_facts()
    assert facts.payment is not None
    with pytest.raises(ValueError, match="UUID"):
        cfdi.build_cfdi(replace(facts, payment=replace(facts.payment, invoice_uuid=None)), test_csd)


def test_same_facts_and_csd_give_the_same_bytes(test_csd: cfdi.Csd) -> None:
    assert cfdi.build_cfdi(invoice_facts(), test_csd) == cfdi.build_cfdi(invoice_facts(), test_csd)


def test_cadena_original_follows_anexo_20(test_csd: cfdi.Csd) -> None:
    xml = cfdi.build_cfdi(invoice_facts(), test_csd)
    cadena = cfdi.cadena_original(xml)
    assert cadena.startswith(
        f"||4.0|INV|2026000001|2026-11-20T12:30:05|99|{test_csd.number}|1350.00|MXN|1510.00|"
        f"I|01|PPD|42501|{SELLER_RFC}|Escuela Kemper Urgate|601|{BUYER_RFC}|Dora Gómez Díaz|"
        "06600|612|G03|01010101|2|E48|Consultoría mensual|500.00|1000.00|02|"
        "1000.00|002|Tasa|0.160000|160.00|"
    )
    # Comprobante-level Traslados, then TotalImpuestosTrasladados, then the closing "||".
    assert cadena.endswith("|150.00|002|Exento|160.00||")
    # Sello, Certificado and the xsi attributes are not part of it.
    assert "Sello" not in cadena and test_csd.number in cadena


def test_tampering_breaks_the_sello(test_csd: cfdi.Csd) -> None:
    xml = cfdi.build_cfdi(invoice_facts(), test_csd)
    assert cfdi.verify_sello(xml)
    tampered = xml.replace(b'Total="1510.00"', b'Total="1511.00"')
    assert tampered != xml
    assert not cfdi.verify_sello(tampered)
    assert validate_cfdi(tampered).valid  # still schema-valid: only the seal catches it
    assert not cfdi.verify_sello(b"<not-a-cfdi/>")
    assert not cfdi.verify_sello(b"garbage")


def test_non_mxn_and_incomplete_facts_are_refused(test_csd: cfdi.Csd) -> None:
    with pytest.raises(ValueError, match="MXN"):
        cfdi.build_cfdi(invoice_facts(currency="USD"), test_csd)
    no_regime = replace(BUYER, cfdi={"cfdi_use": "G03"})
    with pytest.raises(ValueError, match="fiscal_regime"):
        cfdi.build_cfdi(invoice_facts(buyer=no_regime), test_csd)
    with pytest.raises(ValueError, match="add up"):
        cfdi.build_cfdi(invoice_facts(tax_minor=15_999), test_csd)


def test_test_csd_shape(test_csd: cfdi.Csd) -> None:
    certificate = x509.load_der_x509_certificate(test_csd.certificate_der)
    serial = certificate.serial_number.to_bytes(20, "big").decode("ascii")
    assert serial == test_csd.number == cfdi.csd_number(test_csd.certificate_der)
    assert len(test_csd.number) == 20 and test_csd.number.isdigit()
    unique_ids = certificate.subject.get_attributes_for_oid(NameOID.X500_UNIQUE_IDENTIFIER)
    assert [attribute.value for attribute in unique_ids] == [SELLER_RFC]
    assert cfdi.certificate_rfc(test_csd.certificate_der) == SELLER_RFC
    assert test_csd.test and cfdi.is_test_certificate(test_csd.certificate_der)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime >= timedelta(days=4 * 365)
    fixed = cfdi.generate_test_csd(SELLER_RFC, "X", now=datetime(2026, 3, 4, 15, tzinfo=UTC))
    start = x509.load_der_x509_certificate(fixed.certificate_der).not_valid_before_utc
    assert start == datetime(2026, 3, 4, tzinfo=UTC)


def test_live_like_csd_is_not_a_test_certificate(live_csd: cfdi.Csd) -> None:
    assert not cfdi.is_test_certificate(live_csd.certificate_der)
    assert live_csd.number == "30001000000400002495"


# -- RFC pre-check ----------------------------------------------------------------------


def test_rfc_precheck_rejects_a_bad_check_digit() -> None:
    assert normalize_mx_rfc(BUYER_RFC) == BUYER_RFC
    assert normalize_mx_rfc("gode 561231 gr8") == BUYER_RFC
    with pytest.raises(StdnumValidationError):
        normalize_mx_rfc(BUYER_RFC[:-1] + "9")


@pytest.mark.parametrize("rfc", ["XAXX010101000", "XEXX010101000"])
def test_rfc_precheck_accepts_generic_rfcs(rfc: str) -> None:
    assert normalize_mx_rfc(rfc) == rfc


# -- SandboxPac -------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sandbox PAC opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(httpx.Client, "send", refuse)


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("make", [invoice_facts, credit_note_facts, payment_facts])
def test_sandbox_pac_stamps_without_a_connection(test_csd: cfdi.Csd, make: Any) -> None:
    now = datetime(2026, 11, 20, 18, 31, 0, tzinfo=UTC)
    transport = SandboxPac(now=lambda: now)
    assert (transport.regime, transport.sandbox) == ("cfdi", True)
    document = cfdi.build_cfdi(make(), test_csd)
    result = transport.submit(document, einvoice_id="ei_1", document_type="invoice")

    assert result.status == "accepted"
    assert result.accepted_at == now
    assert result.detail["sandbox"] is True
    assert result.detail["stamp_date"] == now.isoformat()
    digest = hashlib.sha256(document).digest()
    assert result.external_id is not None and result.external_id == result.external_id.upper()
    assert result.external_id.replace("-", "")[:12] == digest[:6].hex().upper()
    assert result.external_id[14] == "4"  # a UUID4
    stamped = result.stamped_document
    assert stamped is not None
    assert validate_cfdi(stamped).findings == ()
    assert cfdi.verify_sello(stamped)  # the TFD is not part of the cadena original
    timbre = cfdi.read_timbre(stamped)
    assert timbre is not None
    assert timbre.uuid == result.external_id
    assert timbre.fecha_timbrado == "2026-11-20T12:31:00"
    assert timbre.rfc_prov_certif == "SPR190613I52"
    assert timbre.sello_cfd == _root(document).get("Sello")
    assert len(timbre.no_certificado_sat) == 20
    base64.b64decode(timbre.sello_sat, validate=True)

    again = transport.submit(document, einvoice_id="ei_1", document_type="invoice")
    assert again.external_id == result.external_id  # a retry gets the same folio fiscal
    assert transport.poll(result.external_id, result.detail).status == "accepted"
    transport.cancel(result.external_id, result.detail, "02")


@pytest.mark.usefixtures("no_network")
def test_sandbox_pac_rejects_a_broken_seal(test_csd: cfdi.Csd) -> None:
    document = cfdi.build_cfdi(invoice_facts(), test_csd)
    tampered = document.replace(b'Total="1510.00"', b'Total="1.00"')
    result = SandboxPac().submit(tampered, einvoice_id="ei_1", document_type="invoice")
    assert result.status == "rejected"
    assert [f["rule"] for f in result.findings] == ["CFDI40102"]


def test_pac_transport_selection(http_client: httpx.Client) -> None:
    assert isinstance(pac_transport(Settings()), SandboxPac)
    settings = Settings(
        pac_url="https://pac.example/",
        pac_username="u",
        pac_password="p",
        einvoice_timeout_seconds=3,
    )
    transport = pac_transport(settings, client=http_client)
    assert isinstance(transport, HttpPac)
    assert transport.base_url == "https://pac.example"
    assert (transport.regime, transport.sandbox) == ("cfdi", False)
    with pytest.raises(ValueError, match="USERNAME"):
        pac_transport(Settings(pac_url="https://pac.example"))


# -- HttpPac against the local test PAC -------------------------------------------------


def test_http_pac_stamps_and_cancels(
    pac: LocalPac, http_client: httpx.Client, live_csd: cfdi.Csd
) -> None:
    transport = _http_pac(pac, http_client)
    document = cfdi.build_cfdi(invoice_facts(test=False), live_csd)
    result = transport.submit(document, einvoice_id="ei_1", document_type="invoice")

    assert result.status == "accepted", result.findings
    assert result.external_id is not None and result.external_id in pac.issued
    assert result.accepted_at is not None and result.accepted_at.tzinfo is not None
    assert abs(datetime.now(UTC) - result.accepted_at) < timedelta(minutes=1)
    assert result.detail["rfc_emisor"] == SELLER_RFC
    assert result.detail["fecha_timbrado"] == pac.issued[result.external_id].fecha_timbrado
    stamped = result.stamped_document
    assert stamped is not None
    assert validate_cfdi(stamped).findings == ()
    assert cfdi.verify_sello(stamped)
    timbre = cfdi.read_timbre(stamped)
    assert timbre is not None and timbre.uuid == result.external_id
    assert pac.paths() == ["/security/authenticate", "/cfdi40/stamp"]
    sent = base64.b64decode(pac.received[1].body["xml"])
    assert sent == document
    assert pac.received[1].authorization is not None
    assert pac.received[1].authorization.startswith("Bearer ")

    # Resubmitting after a lost answer is safe: the same stamp comes back.
    again = transport.submit(document, einvoice_id="ei_1", document_type="invoice")
    assert again.external_id == result.external_id

    assert transport.poll(result.external_id, result.detail).status == "accepted"
    transport.cancel(result.external_id, result.detail, "voided by the operator")
    issued = pac.issued[result.external_id]
    assert (issued.status, issued.motivo) == ("cancelled", "02")
    assert pac.received[-1].body == {"uuid": result.external_id, "rfc": SELLER_RFC, "motivo": "02"}


def test_http_pac_cancel_refused(
    pac: LocalPac, http_client: httpx.Client, live_csd: cfdi.Csd
) -> None:
    transport = _http_pac(pac, http_client)
    with pytest.raises(CancelRefused, match="205"):
        transport.cancel(INVOICE_UUID, {"rfc_emisor": SELLER_RFC}, "02")
    document = cfdi.build_cfdi(invoice_facts(test=False), live_csd)
    result = transport.submit(document, einvoice_id="ei_1", document_type="invoice")
    assert result.external_id is not None
    pac.refuse_cancel_with = "2001"
    with pytest.raises(CancelRefused, match="2001"):
        transport.cancel(result.external_id, result.detail, "02")
    assert pac.issued[result.external_id].status == "stamped"


def test_http_pac_outage_is_retryable(
    pac: LocalPac, http_client: httpx.Client, live_csd: cfdi.Csd
) -> None:
    transport = _http_pac(pac, http_client)
    document = cfdi.build_cfdi(invoice_facts(test=False), live_csd)
    pac.fail_with_status = 503
    with pytest.raises(TransportUnavailable):
        transport.submit(document, einvoice_id="ei_1", document_type="invoice")
    with pytest.raises(TransportUnavailable):
        transport.cancel(INVOICE_UUID, {"rfc_emisor": SELLER_RFC}, "02")
    pac.fail_with_status = None
    result = transport.submit(document, einvoice_id="ei_1", document_type="invoice")
    assert result.status == "accepted"


def test_http_pac_connection_refused_and_timeout_are_retryable(
    http_client: httpx.Client, live_csd: cfdi.Csd
) -> None:
    document = cfdi.build_cfdi(invoice_facts(test=False), live_csd)
    with running_pac() as pac:
        url = pac.url
        pac.delay_seconds = 1.0
        slow = _http_pac(pac, http_client, timeout=0.2)
        with pytest.raises(TransportUnavailable, match="timed out"):
            slow.submit(document, einvoice_id="ei_1", document_type="invoice")
    gone = HttpPac(url, "pac-user", "pac-secret", 2.0, client=http_client)
    with pytest.raises(TransportUnavailable):
        gone.submit(document, einvoice_id="ei_1", document_type="invoice")


def test_http_pac_rejections_carry_the_pac_code(
    pac: LocalPac, http_client: httpx.Client, live_csd: cfdi.Csd
) -> None:
    transport = _http_pac(pac, http_client)
    document = cfdi.build_cfdi(invoice_facts(test=False), live_csd)

    tampered = document.replace(b'Total="1510.00"', b'Total="1.00"')
    result = transport.submit(tampered, einvoice_id="ei_1", document_type="invoice")
    assert result.status == "rejected"
    assert [f["rule"] for f in result.findings] == ["CFDI40102"]
    assert "sello" in result.findings[0]["message"]

    invalid = document.replace(b'Exportacion="01"', b'Exportacion="99"')
    result = transport.submit(invalid, einvoice_id="ei_1", document_type="invoice")
    assert result.status == "rejected"
    assert result.findings[0]["rule"] == "301"
    assert "Exportacion" in result.findings[0]["message"]
    assert pac.issued == {}


def test_http_pac_never_sends_a_test_signed_document(
    pac: LocalPac, http_client: httpx.Client, test_csd: cfdi.Csd
) -> None:
    transport = _http_pac(pac, http_client)
    document = cfdi.build_cfdi(invoice_facts(), test_csd)
    result = transport.submit(document, einvoice_id="ei_1", document_type="invoice")
    assert result.status == "rejected"
    assert result.findings == (
        {
            "rule": "TEST_CERTIFICATE",
            "message": "signed with a generated test certificate; configure the entity's CSD",
        },
    )
    assert pac.received == []


def test_http_pac_reauthenticates_once_on_401(
    pac: LocalPac, http_client: httpx.Client, live_csd: cfdi.Csd
) -> None:
    transport = _http_pac(pac, http_client)
    document = cfdi.build_cfdi(invoice_facts(test=False), live_csd)
    assert transport.submit(document, einvoice_id="ei_1", document_type="invoice").status == (
        "accepted"
    )
    pac.expire_tokens()
    pac.received.clear()
    result = transport.submit(document, einvoice_id="ei_1", document_type="invoice")
    assert result.status == "accepted"
    assert pac.paths() == ["/cfdi40/stamp", "/security/authenticate", "/cfdi40/stamp"]


def test_http_pac_bad_credentials_are_retryable(
    pac: LocalPac, http_client: httpx.Client, live_csd: cfdi.Csd
) -> None:
    transport = HttpPac(pac.url, "pac-user", "wrong", 5.0, client=http_client)
    document = cfdi.build_cfdi(invoice_facts(test=False), live_csd)
    with pytest.raises(TransportUnavailable, match="authentication"):
        transport.submit(document, einvoice_id="ei_1", document_type="invoice")
    assert pac.paths() == ["/security/authenticate"]
