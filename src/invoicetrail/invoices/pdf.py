"""Invoice PDF: a Jinja2 template rendered to HTML and drawn by fpdf2's `write_html`.

Read-only. Same invoice state → same bytes: the creation date is the invoice's
`finalized_at`, the producer is fixed and fpdf2's file id is a hash of the content, so
nothing depends on the time of the request. Amounts use the currency's ISO 4217 exponent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import pycountry
from fpdf import FPDF, TextStyle
from jinja2 import Environment, PackageLoader, StrictUndefined

from invoicetrail.accounts import service as accounts
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import InvalidTransition
from invoicetrail.core.money import format_display
from invoicetrail.customers import service as customers
from invoicetrail.invoices import service
from invoicetrail.invoices.models import Invoice, InvoiceLine

TEMPLATE_NAME = "invoice.html.j2"
PRODUCER = "invoicetrail"
UNICODE_FAMILY = "DejaVu"
UNICODE_FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}
# fpdf2's core fonts only cover Latin-1: anything else is drawn as "?".
CORE_FAMILY = "helvetica"
BODY_SIZE_PT = 9
TAX_ID_LABELS = {"eu_vat": "VAT ID", "gb_vat": "VAT ID", "ch_vat": "VAT ID"}
STATUS_LABELS = {
    "open": "Open",
    "paid": "Paid",
    "void": "Void",
    "uncollectible": "Uncollectible",
}


def render_invoice_pdf(ctx: Ctx, invoice_id: str) -> tuple[str, bytes]:
    """(`INV-2026-000001.pdf`, bytes) of a finalized invoice of this account.

    NotFound for another account's invoice; a draft has no number yet and is refused."""
    invoice = service.get(ctx, invoice_id)
    if invoice.number is None or invoice.finalized_at is None:
        raise InvalidTransition(
            "invoice",
            invoice.id,
            invoice.status,
            "pdf",
            "a finalized invoice (a draft has no number; finalize it first)",
        )
    entity, customer = parties_of(ctx, invoice)
    html = _environment().get_template(TEMPLATE_NAME).render(_view(invoice, entity, customer))
    pdf_bytes = _draw(
        html,
        font_dir=Path(ctx.settings.pdf_font_dir),
        title=f"Invoice {invoice.number}",
        author=entity.name,
        created_at=invoice.finalized_at,
        footer=f"{entity.name} · Invoice {invoice.number}",
    )
    return f"{invoice.number}.pdf", pdf_bytes


@dataclass(frozen=True)
class Seller:
    name: str
    address: dict[str, Any] | None
    tax_ids: list[dict[str, str]]
    registration_id: str | None
    bank_account: dict[str, Any] | None


@dataclass(frozen=True)
class Buyer:
    id: str
    name: str | None
    email: str | None
    address: dict[str, Any] | None
    tax_ids: list[dict[str, str]]


def parties_of(ctx: Ctx, invoice: Invoice) -> tuple[Seller, Buyer]:
    """The parties as at finalize (stored on the invoice); live records only for invoices
    finalized before that snapshot existed."""
    if invoice.parties:
        return Seller(**invoice.parties["seller"]), Buyer(**invoice.parties["buyer"])
    entity = accounts.get_legal_entity(ctx, invoice.legal_entity_id)
    customer = customers.get(ctx, invoice.customer_id)
    return (
        Seller(
            entity.name,
            entity.address,
            entity.tax_ids,
            entity.registration_id,
            entity.bank_account,
        ),
        Buyer(customer.id, customer.name, customer.email, customer.address, customer.tax_ids),
    )


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("invoicetrail.invoices", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=False,
    )


# --- what the template shows: every value already formatted -------------------------------


def _view(invoice: Invoice, entity: Seller, customer: Buyer) -> dict[str, Any]:
    assert invoice.number is not None and invoice.finalized_at is not None
    currency = invoice.currency

    def money(amount_minor: int) -> str:
        return format_display(amount_minor, currency)

    due_date = _date_text(invoice.due_date)
    totals: list[tuple[str, str, bool]] = [
        ("Subtotal", money(invoice.subtotal_minor), False),
        ("Tax", money(invoice.tax_minor), False),
        ("Total", money(invoice.total_minor), True),
        ("Amount paid", money(invoice.amount_paid_minor), False),
    ]
    if invoice.amount_credited_minor:
        totals.append(("Credited", money(invoice.amount_credited_minor), False))
    totals.append(("Amount remaining", money(invoice.amount_remaining_minor), True))
    references = []
    if invoice.buyer_reference:
        references.append(f"Buyer reference: {invoice.buyer_reference}")
    if invoice.purchase_order:
        references.append(f"Purchase order: {invoice.purchase_order}")
    return {
        "number": invoice.number,
        "issue_date": _date_text(invoice.finalized_at.astimezone(UTC).date()),
        "due_date": due_date or "-",
        "status": STATUS_LABELS.get(invoice.status, invoice.status),
        "seller": _party(
            entity.name,
            entity.address,
            entity.tax_ids,
            [f"Registration: {entity.registration_id}"] if entity.registration_id else [],
        ),
        "buyer": _party(
            customer.name or customer.email or customer.id,
            customer.address,
            customer.tax_ids,
            [customer.email] if customer.email and customer.name else [],
        ),
        "references": references,
        "lines": [_line(line, currency) for line in invoice.lines],
        "tax_breakdown": _tax_breakdown(invoice.lines, currency),
        "totals": totals,
        "payment": _payment(invoice, entity, money(invoice.amount_remaining_minor), due_date),
    }


def _party(
    name: str,
    address: dict[str, Any] | None,
    tax_ids: Iterable[dict[str, str]],
    extra: list[str],
) -> list[str]:
    texts = [name, *_address_lines(address or {})]
    texts += [f"{_tax_id_label(t['type'])}: {t['value']}" for t in tax_ids]
    return texts + extra


def _address_lines(address: dict[str, Any]) -> list[str]:
    texts = [str(address[key]) for key in ("line1", "line2") if address.get(key)]
    city = " ".join(str(address[key]) for key in ("postal_code", "city") if address.get(key))
    region = ", ".join(part for part in (city, str(address.get("state") or "")) if part)
    if region:
        texts.append(region)
    country_code = str(address.get("country") or "").upper()
    if country_code:
        country = pycountry.countries.get(alpha_2=country_code)
        texts.append(country.name if country is not None else country_code)
    return texts


def _tax_id_label(tax_id_type: str) -> str:
    return TAX_ID_LABELS.get(tax_id_type, tax_id_type.replace("_", " ").upper())


def _rate_text(rate: str) -> str:
    return f"{Decimal(rate).normalize():f}%"


def _line(line: InvoiceLine, currency: str) -> dict[str, str]:
    return {
        "description": line.description,
        "quantity": f"{Decimal(line.quantity).normalize():f}",
        "unit_amount": format_display(line.unit_amount_minor, currency),
        "tax_rate": _rate_text(line.tax_rate),
        "amount": format_display(line.amount_minor, currency),
    }


def _tax_breakdown(lines: Iterable[InvoiceLine], currency: str) -> list[dict[str, str]]:
    """Net and tax per rate, summed from the lines (tax is rounded per line, never here)."""
    per_rate: dict[Decimal, tuple[int, int]] = {}
    for line in lines:
        rate = Decimal(line.tax_rate).normalize()
        net_minor, tax_minor = per_rate.get(rate, (0, 0))
        per_rate[rate] = (net_minor + line.amount_minor, tax_minor + line.tax_minor)
    return [
        {
            "rate": _rate_text(str(rate)),
            "net": format_display(net_minor, currency),
            "tax": format_display(tax_minor, currency),
        }
        for rate, (net_minor, tax_minor) in sorted(per_rate.items(), reverse=True)
    ]


def _payment(invoice: Invoice, entity: Seller, remaining: str, due_date: str) -> list[str]:
    texts: list[str] = []
    if invoice.status == "void":
        texts.append("This invoice is void: nothing is to be paid.")
    elif invoice.amount_remaining_minor <= 0:
        texts.append("Paid in full: nothing remains to be paid.")
    elif due_date:
        texts.append(f"Please pay {remaining} by {due_date}.")
    else:
        texts.append(f"Please pay {remaining}.")
    if invoice.bank_transfer_reference:
        texts.append(f"Bank transfer reference: {invoice.bank_transfer_reference}")
    bank = entity.bank_account or {}
    if bank.get("iban"):
        texts.append(f"IBAN: {bank['iban']}")
    if bank.get("bic"):
        texts.append(f"BIC: {bank['bic']}")
    if bank.get("iban") or bank.get("bic"):
        texts.append(f"Account holder: {entity.name}")
    if due_date:
        texts.append(f"Due date: {due_date}")
    return texts


def _date_text(value: date | None) -> str:
    return value.isoformat() if value is not None else ""


# --- drawing ------------------------------------------------------------------------------


class _InvoicePdf(FPDF):
    footer_text = ""

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(size=7)
        self.set_text_color(96)
        self.cell(0, 5, f"{self.footer_text} · page {self.page_no()}/{{nb}}", align="C")


def _draw(
    html: str, *, font_dir: Path, title: str, author: str, created_at: datetime, footer: str
) -> bytes:
    pdf = _InvoicePdf(format="A4")
    font_files = {style: font_dir / name for style, name in UNICODE_FONT_FILES.items()}
    if all(path.is_file() for path in font_files.values()):
        for style, path in font_files.items():
            pdf.add_font(UNICODE_FAMILY, style, str(path))
        pdf.set_font(UNICODE_FAMILY, size=BODY_SIZE_PT)
    else:
        pdf.set_font(CORE_FAMILY, size=BODY_SIZE_PT)
        html, title, author, footer = (
            _latin1(html),
            _latin1(title),
            _latin1(author),
            _latin1(footer),
        )
    pdf.footer_text = footer
    # Metadata fixed by the invoice, never by the clock: same invoice → same bytes.
    pdf.set_creation_date(created_at.astimezone(UTC))
    pdf.set_producer(PRODUCER)
    pdf.set_creator(PRODUCER)
    pdf.set_title(title)
    pdf.set_author(author)
    pdf.add_page()
    # Plain headings: fpdf2's default h1/h2 are large and dark red.
    pdf.write_html(
        html,
        tag_styles={
            "h1": TextStyle(color=0, font_size_pt=16, font_style="B", t_margin=0, b_margin=2),
            "h2": TextStyle(color=0, font_size_pt=11, font_style="B", t_margin=4, b_margin=1),
        },
    )
    return bytes(pdf.output())


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")
