"""Where the invoice core hands over to the e-invoicing branch: routing, pre-checks, facts.

The core stays market-neutral: these functions only read an issued invoice or credit note and
describe it as `DocumentFacts`; which regime (if any) applies follows from the issuing
entity's country and the customer, so a different supplier country changes only the branch.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from invoicetrail.accounts.models import LegalEntity
from invoicetrail.core.context import Ctx
from invoicetrail.core.errors import ValidationFailed
from invoicetrail.core.money import currency_exponent
from invoicetrail.customers import service as customers
from invoicetrail.customers.models import Customer
from invoicetrail.einvoicing import requirements
from invoicetrail.einvoicing import service as einvoicing
from invoicetrail.einvoicing.facts import DocumentFacts, Line, PaymentFacts
from invoicetrail.invoices.models import CreditNote, Invoice


def regime_for(entity: LegalEntity, customer: Customer) -> str | None:
    return requirements.route(entity.country, customer.peppol_id)


def check_before_finalize(invoice: Invoice, entity: LegalEntity, customer: Customer) -> str | None:
    """The regime the invoice will be filed under, after its data passed the regime's checks."""
    regime = regime_for(entity, customer)
    if regime is not None:
        requirements.check_before_finalize(
            regime,
            entity,
            customer,
            currency=invoice.currency,
            buyer_reference=invoice.buyer_reference,
            purchase_order=invoice.purchase_order,
            lines=invoice.lines,
        )
    return regime


def _category(tax_category: str | None, tax_rate: str) -> str:
    return tax_category or ("S" if Decimal(tax_rate) > 0 else "Z")


def _bank_account(entity: LegalEntity) -> dict[str, str]:
    return {k: str(v) for k, v in (entity.bank_account or {}).items() if v}


def _exponent(currency: str) -> int:
    exponent = currency_exponent(currency)
    return 2 if exponent is None else exponent


def issue_for_invoice(
    ctx: Ctx, invoice: Invoice, entity: LegalEntity, customer: Customer, regime: str
) -> None:
    assert invoice.number is not None and invoice.finalized_at is not None
    facts = DocumentFacts(
        regime=regime,
        document_type="invoice",
        number=invoice.number,
        issued_at=invoice.finalized_at,
        currency=invoice.currency.upper(),
        currency_exponent=_exponent(invoice.currency),
        seller=einvoicing.seller_party(entity),
        buyer=einvoicing.buyer_party(customer),
        lines=tuple(
            Line(
                position=line.position + 1,
                description=line.description,
                quantity=line.quantity,
                unit_amount_minor=line.unit_amount_minor,
                amount_minor=line.amount_minor,
                tax_rate=line.tax_rate,
                tax_category=_category(line.tax_category, line.tax_rate),
                tax_minor=line.tax_minor,
                tax_exemption_reason=line.tax_exemption_reason,
                cfdi_product_code=line.cfdi_product_code,
                cfdi_unit_code=line.cfdi_unit_code,
            )
            for line in invoice.lines
        ),
        subtotal_minor=invoice.subtotal_minor,
        tax_minor=invoice.tax_minor,
        total_minor=invoice.total_minor,
        payable_minor=invoice.amount_remaining_minor,
        due_date=invoice.due_date,
        buyer_reference=invoice.buyer_reference,
        purchase_order=invoice.purchase_order,
        payment_reference=invoice.bank_transfer_reference,
        bank_account=_bank_account(entity),
        collection_method=invoice.collection_method,
        customer_id=customer.id,
    )
    einvoicing.issue(
        ctx, facts, legal_entity_id=entity.id, market=entity.country, invoice_id=invoice.id
    )


def _note_lines(note: CreditNote, invoice: Invoice, regime: str) -> tuple[Line, ...]:
    if note.lines:
        return tuple(
            Line(
                position=index + 1,
                description=str(raw["description"]),
                quantity=str(raw["quantity"]),
                unit_amount_minor=int(raw["unit_amount"]),  # type: ignore[call-overload]
                amount_minor=int(raw["amount"]),  # type: ignore[call-overload]
                tax_rate=str(raw["tax_rate"]),
                tax_category=_category(_opt(raw.get("tax_category")), str(raw["tax_rate"])),
                tax_minor=int(raw["tax"]),  # type: ignore[call-overload]
                tax_exemption_reason=_opt(raw.get("tax_exemption_reason")),
            )
            for index, raw in enumerate(note.lines)
        )
    # An amount-only note credits the invoice as a whole: one line at the invoice's tax.
    groups = {
        (_category(line.tax_category, line.tax_rate), line.tax_rate) for line in invoice.lines
    }
    if len(groups) != 1:
        raise ValidationFailed(
            f"invoice {invoice.id} has several tax rates; a {regime} credit note must say which "
            "lines it credits: send `lines` instead of `amount`",
            param="amount",
            object_name="credit_note",
            extra={"regime": regime},
        )
    sample = invoice.lines[0]
    ((category, rate),) = groups
    return (
        Line(
            position=1,
            description=f"Credit for invoice {invoice.number}: {note.reason}"[:500],
            quantity="1",
            unit_amount_minor=note.subtotal_minor,
            amount_minor=note.subtotal_minor,
            tax_rate=rate,
            tax_category=category,
            tax_minor=note.tax_minor,
            tax_exemption_reason=sample.tax_exemption_reason,
            cfdi_product_code=sample.cfdi_product_code,
            cfdi_unit_code=sample.cfdi_unit_code,
        ),
    )


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def issue_for_credit_note(
    ctx: Ctx, note: CreditNote, invoice: Invoice, entity: LegalEntity
) -> None:
    """A credit note goes down the branch its invoice went down."""
    invoice_document = einvoicing.current_for_invoice(ctx, invoice.id)
    if invoice_document is None:
        return
    regime = invoice_document.regime
    customer = customers.get(ctx, invoice.customer_id)
    assert invoice.number is not None and invoice.finalized_at is not None
    facts = DocumentFacts(
        regime=regime,
        document_type="credit_note",
        number=note.number,
        issued_at=note.created_at,
        currency=note.currency.upper(),
        currency_exponent=_exponent(note.currency),
        seller=einvoicing.seller_party(entity),
        buyer=einvoicing.buyer_party(customer),
        lines=_note_lines(note, invoice, regime),
        subtotal_minor=note.subtotal_minor,
        tax_minor=note.tax_minor,
        total_minor=note.total_minor,
        payable_minor=note.total_minor,
        buyer_reference=invoice.buyer_reference,
        purchase_order=invoice.purchase_order,
        bank_account=_bank_account(entity),
        collection_method=invoice.collection_method,
        billing_reference_number=invoice.number,
        billing_reference_issue_date=invoice.finalized_at.date(),
        billing_reference_uuid=invoice_document.external_id,
        note=note.reason,
        customer_id=customer.id,
    )
    einvoicing.issue(
        ctx,
        facts,
        legal_entity_id=entity.id,
        market=entity.country,
        invoice_id=invoice.id,
        credit_note_id=note.id,
    )


def issue_for_payment(
    ctx: Ctx,
    invoice: Invoice,
    *,
    payment_id: str,
    applied_minor: int,
    method: str,
    reference: str,
) -> None:
    """CFDI: money received on a PPD invoice (payable later) is filed as a Pago complement."""
    # The cheap checks first: this runs for every payment applied, in every market.
    if applied_minor <= 0 or invoice.collection_method != "send_invoice":
        return  # nothing applied, or PUE: paid at issue, the invoice itself says so
    document = einvoicing.current_for_invoice(ctx, invoice.id)
    if document is None or document.regime != "cfdi":
        return
    assert invoice.number is not None
    invoice_facts = DocumentFacts.from_json(document.facts)
    installment = 1 + sum(
        1 for row in einvoicing.for_invoice(ctx, invoice.id) if row.document_type == "payment"
    )
    balance_after_minor = invoice.amount_remaining_minor
    facts = DocumentFacts(
        regime="cfdi",
        document_type="payment",
        number=f"{invoice.number}-P{installment}",
        issued_at=ctx.now,
        currency=invoice.currency.upper(),
        currency_exponent=_exponent(invoice.currency),
        seller=invoice_facts.seller,
        buyer=invoice_facts.buyer,
        lines=(),
        subtotal_minor=0,
        tax_minor=0,
        total_minor=0,
        payable_minor=0,
        payment=PaymentFacts(
            paid_at=ctx.now,
            amount_minor=applied_minor,
            method=method,
            reference=reference,
            invoice_uuid=document.external_id,
            invoice_number=invoice.number,
            invoice_total_minor=invoice.total_minor,
            balance_before_minor=balance_after_minor + applied_minor,
            installment=installment,
        ),
        customer_id=invoice.customer_id,
    )
    einvoicing.issue(
        ctx,
        facts,
        legal_entity_id=document.legal_entity_id,
        market=document.market,
        invoice_id=invoice.id,
        payment_id=payment_id,
    )
