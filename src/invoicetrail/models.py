"""Every table, imported once so Alembic sees the whole schema."""

from invoicetrail.accounts.models import Account, ApiKey, LaunchGate, LegalEntity, Ownership
from invoicetrail.console.models import ConsoleSession
from invoicetrail.core.db import Base
from invoicetrail.core.idempotency import IdempotencyKey, RequestLog
from invoicetrail.customers.models import Customer, CustomerCredit
from invoicetrail.einvoicing.models import EInvoice, EInvoiceCertificate
from invoicetrail.events.models import Event
from invoicetrail.exceptions.models import ExceptionItem
from invoicetrail.exports.models import ExportBatch, ExportBatchRow, ExportRow
from invoicetrail.invoices.models import (
    CreditNote,
    DunningSettings,
    Invoice,
    InvoiceEmail,
    InvoiceLine,
    NumberSequence,
)
from invoicetrail.ledger.models import JournalEntry, JournalLine, LedgerSettings, Period
from invoicetrail.payments.models import (
    Payment,
    ProviderEndpoint,
    ProviderEndpointSecret,
    ProviderEvent,
    ProviderEventKey,
    SimulatedEvent,
)
from invoicetrail.reconciliation.models import ReconciliationFinding, ReconciliationRun
from invoicetrail.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointSecret,
)

__all__ = [
    "Account",
    "ApiKey",
    "Base",
    "ConsoleSession",
    "CreditNote",
    "Customer",
    "CustomerCredit",
    "DunningSettings",
    "EInvoice",
    "EInvoiceCertificate",
    "Event",
    "ExceptionItem",
    "ExportBatch",
    "ExportBatchRow",
    "ExportRow",
    "IdempotencyKey",
    "Invoice",
    "InvoiceEmail",
    "InvoiceLine",
    "JournalEntry",
    "JournalLine",
    "LaunchGate",
    "LedgerSettings",
    "LegalEntity",
    "NumberSequence",
    "Ownership",
    "Payment",
    "Period",
    "ProviderEndpoint",
    "ProviderEndpointSecret",
    "ProviderEvent",
    "ProviderEventKey",
    "ReconciliationFinding",
    "ReconciliationRun",
    "RequestLog",
    "SimulatedEvent",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEndpointSecret",
]
