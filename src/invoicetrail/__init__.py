"""invoicetrail: invoicing as a controlled chain, from draft to ERP export."""

__version__ = "0.1.0"
