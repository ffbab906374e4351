"""einvoice_validation: Peppol documents validated per second, through the queue and in-process.

SPEC: validation of a Peppol BIS 3.0 document with the official artifacts, i.e. the UBL 2.1
XSD, the CEN EN 16931 XSLT and the Peppol XSLT, takes ≤ 10 ms per document after the
one-time compile. Two rows, PostgreSQL first:

1. **postgresql** (the real pipeline): a fresh PostgreSQL database, one account, a German
   legal entity on Peppol and two customers on Peppol (NL, BE); SIZE invoices are created
   and finalized through the API in-process (`TestClient(create_app(settings))`), so each
   finalize routes to Peppol and generates its document into `einvoices` (`pending`),
   exactly as the product does. That set-up is not timed. Then, after the one-time compile
   and warm-up, only the e-invoicing worker job is timed:
   `invoicetrail.einvoicing.service.process_due(sessions, clock, settings, {"peppol":
   SandboxAccessPoint()})`, which claims the due documents, validates each with all three
   validators (`validation.validate`), submits it to the built-in sandbox access point and
   records the outcome (findings, status, history, event), one write transaction per
   document. So this row is validate + submit + record per document (generation happened at
   finalize). The SIZE documents are split into rounds by a manual clock set to the
   finalize time of each round's last document (what is due is what the worker takes).
   All SIZE must end `accepted` without a fatal finding, or the script stops. Baseline: the
   same stored documents read back with one plain SQL select (psycopg) and validated with
   validate_check.py's direct code (below); ratio = ours ÷ baseline shows the queue's cost.
2. **in-process** (generate + validate): per document, facts → bytes
   (`invoicetrail.einvoicing.peppol.build_ubl`) → `validation.validate` (parse, XSD, both
   stylesheets, findings). These documents vary more: invoices and credit notes, 1 to 12
   lines, standard, reduced, zero-rated and exempt VAT, allowances and charges, EUR and
   DKK, and every one must come out without a fatal finding (`invalid` counts them).
   Baseline: validate_check.py's direct code on the same documents, pre-generated.

The one-time costs are printed apart: compiling the two stylesheets (Saxon) and the first
document (UBL XSD load). The first WARMUP documents after it are timed apart too (Saxon is
slower on its first few dozen documents). Both rows are then timed in rounds that alternate
with their baseline, so both see the same machine load.

validate_check.py's direct code (both baselines): lxml parse + `XMLSchema.validate`, Saxon
parse, the two official XSLTs as published `transform_to_string`, SVRL parsed by lxml and
its failed asserts read; its own Saxon processor, compiled separately.

Prints the figures and rewrites the einvoice_validation rows and details block of
bench/RESULTS.md (other benches' rows are kept). `met` says whether the target was reached.

    .venv/bin/python bench/einvoicing.py [--size 500] [--warmup 50] [--rounds 10] [--quick]
                                         [--pg-admin-dsn DSN] [--pg-database NAME]
                                         [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg
from lxml import etree

from export import prepare_postgres
from invoicetrail.core.money import round_half_up
from invoicetrail.einvoicing import validation
from invoicetrail.einvoicing.facts import Address, AllowanceCharge, DocumentFacts, Line, Party

BENCH = "einvoice_validation"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
TABLE_HEADER = "| bench | backend | size | measured | baseline | ratio | target | met |"
TABLE_RULE = "|---|---|---|---|---|---|---|---|"
DETAILS_BEGIN = f"<!-- {BENCH}:details -->"
DETAILS_END = f"<!-- /{BENCH}:details -->"
TARGET_MS = 10.0
TARGET_TEXT = "≤ 10 ms/doc"
BASELINE_TEXT = "lxml XSD + the two official XSLTs, direct"
QUEUE_BASELINE_TEXT = "one SELECT + lxml XSD + the two official XSLTs, direct"
PEPPOL_POLL_SECONDS = 60
PEPPOL_WAIT_SECONDS = 40 * 60
PG_ADMIN_DSN = os.environ.get(
    "INVOICETRAIL_BENCH_POSTGRES_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
PG_DATABASE = "invoicetrail_bench_einv"

# --- documents -------------------------------------------------------------------------------

SELLERS = (
    Party(
        name="Brasserie Numérique SA",
        address=Address("Rue de la Loi 16", None, "Bruxelles", "1000", None, "BE"),
        tax_ids=(("eu_vat", "BE0123456749"),),
        peppol_id="0208:0123456749",
        registration_id="0123456749",
        email="billing@brasserie.example",
    ),
    Party(
        name="Nordisk Værktøj ApS",
        address=Address("Vesterbrogade 1", None, "København V", "1620", None, "DK"),
        tax_ids=(("eu_vat", "DK13585628"),),
        peppol_id="0184:13585628",
        registration_id="13585628",
        email="faktura@vaerktoej.example",
    ),
)
BUYERS = (
    Party(
        name="Käufer Handels GmbH",
        address=Address("Friedrichstraße 10", "Hinterhaus", "Berlin", "10117", None, "DE"),
        tax_ids=(("eu_vat", "DE123456788"),),
        peppol_id="0088:7300010000001",
        email="ap@kaeufer.example",
    ),
    Party(
        name="Acheteur Public SPRL",
        address=Address("Avenue Louise 54", None, "Bruxelles", "1050", None, "BE"),
        tax_ids=(("eu_vat", "BE0897654331"),),
        peppol_id="0208:0897654331",
        registration_id="0897654331",
    ),
)
CURRENCY = {"BE": "EUR", "DK": "DKK"}
BANK = {
    "BE": {"iban": "BE71096123456769", "bic": "GKCCBEBB"},
    "DK": {"iban": "DK5000400440116243", "bic": "DABADKKK"},
}
# (tax_category, rate, exemption reason) per seller country; the rates of each country.
TAXES = {
    "BE": (("S", "21", None), ("S", "6", None), ("Z", "0", None), ("E", "0", "Medical care")),
    "DK": (("S", "25", None), ("Z", "0", None), ("E", "0", "Passenger transport")),
}
WORDS = ("Consulting", "Licence", "Support hours", "Hardware", "Training day", "Hosting")


def document_facts(number: int) -> DocumentFacts:
    """Document `number` of the bench: a deterministic mix of the shapes the product issues."""
    seller = SELLERS[number % len(SELLERS)]
    buyer = BUYERS[(number // 2) % len(BUYERS)]
    country = seller.address.country or "BE"
    taxes = TAXES[country]
    lines = []
    for position in range(1, 1 + (number % 12) + 1):
        category, rate, reason = taxes[(number + position) % len(taxes)]
        quantity = Decimal((position * 7 + number) % 9 + 1) / (2 if position % 3 == 0 else 1)
        unit_minor = 1_000 + (number * 37 + position * 911) % 90_000
        amount_minor = round_half_up(quantity * unit_minor)
        lines.append(
            Line(
                position=position,
                description=f"{WORDS[(number + position) % len(WORDS)]} {number}-{position}",
                quantity=str(quantity),
                unit_amount_minor=unit_minor,
                amount_minor=amount_minor,
                tax_rate=rate,
                tax_category=category,
                tax_minor=round_half_up(Decimal(amount_minor) * Decimal(rate) / 100),
                tax_exemption_reason=reason,
            )
        )
    items: list[AllowanceCharge] = []
    if number % 4 == 1:
        category, rate, _ = taxes[0]
        discount_minor = 500 + number % 1_000
        items.append(AllowanceCharge(False, discount_minor, "Loyalty discount", category, rate))
    if number % 6 == 2:
        category, rate, _ = taxes[0]
        items.append(AllowanceCharge(True, 995, "Freight", category, rate))
    subtotal = sum(line.amount_minor for line in lines)
    items_net = sum(i.amount_minor if i.is_charge else -i.amount_minor for i in items)
    items_tax = sum(
        (1 if i.is_charge else -1) * round_half_up(i.amount_minor * Decimal(i.tax_rate) / 100)
        for i in items
    )
    tax = sum(line.tax_minor for line in lines) + items_tax
    total = subtotal + items_net + tax
    credit = number % 5 == 4
    issued = datetime(2026, 3, 2, 9, 0, tzinfo=UTC) + timedelta(hours=number)
    return DocumentFacts(
        regime="peppol",
        document_type="credit_note" if credit else "invoice",
        number=f"{'CN' if credit else 'INV'}-2026-{number:06d}",
        issued_at=issued,
        currency=CURRENCY[country],
        currency_exponent=2,
        seller=seller,
        buyer=buyer,
        lines=tuple(lines),
        subtotal_minor=subtotal,
        tax_minor=tax,
        total_minor=total,
        payable_minor=total,
        due_date=issued.date() + timedelta(days=30),
        buyer_reference=f"REF-{number % 97:03d}",
        purchase_order=f"PO-{number:05d}" if number % 3 == 0 else None,
        payment_reference=f"K7QF-{number % 10_000:04d}-4",
        bank_account=BANK[country],
        billing_reference_number=f"INV-2026-{max(number - 4, 0):06d}" if credit else None,
        billing_reference_issue_date=date(2026, 3, 1) if credit else None,
        note="Returned goods" if credit else None,
        allowance_charges=tuple(items),
    )


# The PostgreSQL row's invoices, created through the API: a German seller on Peppol, buyers
# on Peppol in the Netherlands and Belgium (so every finalize routes to Peppol).
PG_SELLER: dict[str, Any] = {
    "name": "Seller GmbH",
    "country": "DE",
    "address": {"line1": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"},
    "tax_ids": [{"type": "eu_vat", "value": "DE136695976"}],
    "peppol_id": "0088:7300010000001",
    "registration_id": "HRB 12345",
    "bank_account": {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX"},
    "number_prefix": "BENCH",
}
PG_BUYERS: tuple[dict[str, Any], ...] = (
    {
        "name": "Buyer BV",
        "address": {"line1": "Dam 1", "city": "Amsterdam", "postal_code": "1012", "country": "NL"},
        "tax_ids": [{"type": "eu_vat", "value": "NL004495445B01"}],
        "peppol_id": "0088:4000001000005",
        "email": "ap@buyer.example",
    },
    {
        "name": "Acheteur Public SPRL",
        "address": {
            "line1": "Avenue Louise 54",
            "city": "Bruxelles",
            "postal_code": "1050",
            "country": "BE",
        },
        "tax_ids": [{"type": "eu_vat", "value": "BE0897654331"}],
        "peppol_id": "0208:0897654331",
        "email": "ap@acheteur.example",
    },
)
# (tax_category, rate, exemption reason): German standard, reduced, zero-rated and exempt.
PG_TAXES = (("S", "19", None), ("S", "7", None), ("Z", "0", None), ("E", "0", "Medical care"))


def invoice_body(number: int, customer_ids: Sequence[str], entity_id: str) -> dict[str, Any]:
    """`POST /v1/invoices` body of the PostgreSQL row's invoice `number`: 1 to 12 lines."""
    lines = []
    for position in range(1, 1 + (number % 12) + 1):
        category, rate, reason = PG_TAXES[(number + position) % len(PG_TAXES)]
        quantity = Decimal((position * 7 + number) % 9 + 1) / (2 if position % 3 == 0 else 1)
        line: dict[str, Any] = {
            "description": f"{WORDS[(number + position) % len(WORDS)]} {number}-{position}",
            "quantity": str(quantity),
            "unit_amount": 1_000 + (number * 37 + position * 911) % 90_000,
            "tax_rate": rate,
            "tax_category": category,
        }
        if reason:
            line["tax_exemption_reason"] = reason
        lines.append(line)
    body: dict[str, Any] = {
        "customer": customer_ids[number % len(customer_ids)],
        "legal_entity": entity_id,
        "currency": "eur",
        "collection_method": "send_invoice",
        "due_date": (date.today() + timedelta(days=30)).isoformat(),
        "buyer_reference": f"REF-{number % 97:03d}",
        "lines": lines,
    }
    if number % 3 == 0:
        body["purchase_order"] = f"PO-{number:05d}"
    return body


def wait_for_generator() -> Callable[[DocumentFacts], bytes]:
    """The Peppol generator is written alongside this bench: wait for it, then import it."""
    source = Path(validation.__file__).with_name("peppol.py")
    deadline = time.monotonic() + PEPPOL_WAIT_SECONDS
    while "def build_ubl" not in (source.read_text() if source.exists() else ""):
        if time.monotonic() > deadline:
            raise SystemExit(f"{source} has no build_ubl after {PEPPOL_WAIT_SECONDS // 60} min")
        print(f"  waiting for {source.name} to define build_ubl …", flush=True)
        time.sleep(PEPPOL_POLL_SECONDS)
    from invoicetrail.einvoicing.peppol import build_ubl

    return build_ubl


# --- the baseline: validate_check.py's direct code ------------------------------------------


class Baseline:
    """lxml XSD + the two published XSLTs with their own Saxon processor, nothing else."""

    def __init__(self) -> None:
        from saxonche import PySaxonProcessor

        self.processor = PySaxonProcessor(license=False)
        compiler = self.processor.new_xslt30_processor()
        self.executables = [
            compiler.compile_stylesheet(stylesheet_file=str(validation.ARTIFACTS / path))
            for path in validation.XSLTS.values()
        ]
        self.schemas = {
            name: etree.XMLSchema(etree.parse(str(validation.ARTIFACTS / path)))
            for name, path in validation.UBL_XSD.items()
        }

    def fatal_count(self, xml: bytes) -> int:
        tree = etree.ElementTree(etree.fromstring(xml))
        schema = self.schemas[etree.QName(tree.getroot()).localname]
        fatal = 0 if schema.validate(tree) else len(schema.error_log)
        node = self.processor.parse_xml(xml_text=xml.decode("utf-8"))
        for executable in self.executables:
            svrl = etree.fromstring(executable.transform_to_string(xdm_node=node).encode("utf-8"))
            for failed in svrl.iter(f"{validation.SVRL}failed-assert"):
                fatal += (failed.get("flag") or "fatal") == "fatal"
        return fatal


# --- measurement ------------------------------------------------------------------------------


@dataclass
class Warm:
    """The one-time costs, paid once per process before either row is timed."""

    warmup: int
    compile_seconds: float = 0.0
    first_ms: float = 0.0
    warmup_ms: float = 0.0
    baseline_compile_seconds: float = 0.0

    def text(self) -> str:
        return (
            f"One-time: compile both XSLTs {self.compile_seconds:.2f} s, first document "
            f"{self.first_ms:.0f} ms (UBL XSD load), next {self.warmup} documents "
            f"{self.warmup_ms:.1f} ms/doc; baseline compile {self.baseline_compile_seconds:.2f} s."
        )


@dataclass
class QueueRun:
    """The postgresql row: `process_due` over documents stored by real finalizes."""

    size: int
    setup_seconds: float = 0.0
    seconds: float = 0.0
    validate_seconds: float = 0.0
    progressed: int = 0
    accepted: int = 0
    fatal: int = 0
    warnings: int = 0
    baseline_select_seconds: float = 0.0
    baseline_validate_seconds: float = 0.0
    baseline_invalid: int = 0
    shapes: dict[str, int] = field(default_factory=dict)
    round_ms: list[float] = field(default_factory=list)
    baseline_round_ms: list[float] = field(default_factory=list)
    load_average: float = 0.0

    @property
    def ms(self) -> float:
        return self.seconds / self.size * 1000

    @property
    def validate_ms(self) -> float:
        return self.validate_seconds / self.size * 1000

    @property
    def rest_ms(self) -> float:
        return self.ms - self.validate_ms

    @property
    def baseline_ms(self) -> float:
        return (self.baseline_select_seconds + self.baseline_validate_seconds) / self.size * 1000

    @property
    def ratio(self) -> float:
        return self.ms / self.baseline_ms if self.baseline_ms else 0.0

    @property
    def met(self) -> bool:
        return self.fatal == 0 and self.accepted == self.size and self.ms <= TARGET_MS

    def table_row(self) -> str:
        return (
            f"| {BENCH} | postgresql | {self.size:,} documents | {self.ms:.1f} ms/doc (queue: "
            f"validate + submit + record) | {self.baseline_ms:.1f} ms/doc ({QUEUE_BASELINE_TEXT}) "
            f"| {self.ratio:.2f} | {TARGET_TEXT} | {'yes' if self.met else 'no'} |"
        )

    def detail(self) -> str:
        shapes = ", ".join(f"{name} {count:,}" for name, count in self.shapes.items())
        rounds = " / ".join(f"{ms:.1f}" for ms in self.round_ms)
        return (
            f"- **postgresql, {self.size:,} documents** ({shapes}; set-up, not timed: "
            f"{self.setup_seconds:.1f} s to create and finalize them through the API, which "
            f"generates each document): {self.ms:.1f} ms/doc = validate {self.validate_ms:.1f} "
            f"+ claim, sandbox submit and record {self.rest_ms:.1f} ({1000 / self.ms:,.0f} "
            f"documents/s; per round {rounds} ms; median {statistics.median(self.round_ms):.1f});"
            f" accepted {self.accepted:,} of {self.size:,}, documents with a fatal finding "
            f"{self.fatal}, warnings stored {self.warnings:,}. Baseline "
            f"{self.baseline_ms:.1f} ms/doc = one SELECT of the {self.size:,} stored documents "
            f"{self.baseline_select_seconds * 1000:.0f} ms + direct validation "
            f"{self.baseline_validate_seconds / self.size * 1000:.1f} ms/doc (fatal findings on "
            f"{self.baseline_invalid} documents), ratio {self.ratio:.2f}; 1-min load average "
            f"{self.load_average:.1f}."
        )


@dataclass
class Run:
    """The in-process row: generate + validate, no database."""

    size: int
    generate_seconds: float = 0.0
    validate_seconds: float = 0.0
    baseline_seconds: float = 0.0
    invalid: int = 0
    baseline_invalid: int = 0
    shapes: dict[str, int] = field(default_factory=dict)
    round_ms: list[float] = field(default_factory=list)
    baseline_round_ms: list[float] = field(default_factory=list)
    load_average: float = 0.0

    @property
    def ms(self) -> float:
        return (self.generate_seconds + self.validate_seconds) / self.size * 1000

    @property
    def validate_ms(self) -> float:
        return self.validate_seconds / self.size * 1000

    @property
    def generate_ms(self) -> float:
        return self.generate_seconds / self.size * 1000

    @property
    def baseline_ms(self) -> float:
        return self.baseline_seconds / self.size * 1000

    @property
    def ratio(self) -> float:
        return self.ms / self.baseline_ms if self.baseline_ms else 0.0

    @property
    def met(self) -> bool:
        return self.invalid == 0 and self.ms <= TARGET_MS

    def table_row(self) -> str:
        return (
            f"| {BENCH} | in-process | {self.size:,} documents | {self.ms:.1f} ms/doc (generate "
            f"+ validate) | {self.baseline_ms:.1f} ms/doc ({BASELINE_TEXT}) | "
            f"{self.ratio:.2f} | {TARGET_TEXT} | {'yes' if self.met else 'no'} |"
        )

    def detail(self) -> str:
        shapes = ", ".join(f"{name} {count:,}" for name, count in self.shapes.items())
        rounds = " / ".join(f"{ms:.1f}" for ms in self.round_ms)
        return (
            f"- **in-process, {self.size:,} documents** ({shapes}): {self.ms:.1f} ms/doc = "
            f"generate {self.generate_ms:.2f} + validate {self.validate_ms:.1f} "
            f"({1000 / self.ms:,.0f} documents/s; per round {rounds} ms; median "
            f"{statistics.median(self.round_ms):.1f}); documents with a fatal finding: "
            f"{self.invalid}. Baseline {self.baseline_ms:.1f} ms/doc (fatal findings on "
            f"{self.baseline_invalid} documents), ratio {self.ratio:.2f}; 1-min load average "
            f"{self.load_average:.1f}."
        )


def shape_of(facts: DocumentFacts) -> str:
    return "credit notes" if facts.document_type == "credit_note" else "invoices"


def warm_up(build_ubl: Callable[[DocumentFacts], bytes], warmup: int) -> tuple[Warm, Baseline]:
    """Compile, first document, WARMUP documents; then the baseline's compile and warm-up."""
    warm = Warm(warmup=warmup)
    started = time.perf_counter()
    validation.schematron()
    warm.compile_seconds = time.perf_counter() - started
    print(f"  compile     {warm.compile_seconds:6.2f} s  (CEN + Peppol XSLT, once per process)")
    started = time.perf_counter()
    first = validation.validate(build_ubl(document_facts(0)))
    warm.first_ms = (time.perf_counter() - started) * 1000
    print(f"  first doc   {warm.first_ms:6.0f} ms (UBL XSD load)  fatal {len(first.fatal)}")
    documents = [build_ubl(document_facts(number)) for number in range(1, warmup + 1)]
    started = time.perf_counter()
    for xml in documents:
        validation.validate(xml)
    warm.warmup_ms = (time.perf_counter() - started) / max(warmup, 1) * 1000
    print(f"  warm-up     {warm.warmup_ms:6.1f} ms/doc over {warmup} documents")
    started = time.perf_counter()
    baseline = Baseline()
    warm.baseline_compile_seconds = time.perf_counter() - started
    for xml in documents:
        baseline.fatal_count(xml)
    print(f"  baseline    {warm.baseline_compile_seconds:6.2f} s  compile, then the same warm-up")
    return warm, baseline


# --- the postgresql row -----------------------------------------------------------------------


def bench_settings(url: str) -> Any:
    from invoicetrail.core.config import Settings

    # Without SMTP, mail would become .eml files: never in the working tree.
    mail_dir = Path(tempfile.gettempdir()) / "invoicetrail-bench-mail"
    return Settings(database_url=url, rate_limit_per_second=0, mail_dir=str(mail_dir))


def finalize_invoices(url: str, size: int, run: QueueRun) -> str:
    """One account; SIZE invoices created and finalized through the API in-process, each
    finalize generating its Peppol document into `einvoices`. Returns the account id."""
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient

    from invoicetrail.accounts import service as accounts
    from invoicetrail.api import create_app
    from invoicetrail.core.db import write_transaction

    started = time.perf_counter()
    with TestClient(create_app(bench_settings(url)), base_url="http://testserver") as client:
        state = client.app.state.invoicetrail  # type: ignore[attr-defined]
        with write_transaction(state.sessions) as session:
            created = accounts.create_account(
                session, name="einvoice bench", country=None, now=datetime.now(UTC)
            )
            session.commit()
            account_id, secret_key = created.account.id, created.secret_key

        def post(path: str, body: Any = None) -> dict[str, Any]:
            headers = {"Authorization": f"Bearer {secret_key}", "Idempotency-Key": uuid.uuid4().hex}
            response = client.post(path, json=body, headers=headers)
            if response.status_code not in (200, 201):
                raise SystemExit(f"set-up: POST {path} → {response.status_code} {response.text}")
            answer: dict[str, Any] = response.json()
            return answer

        entity_id = post("/v1/legal_entities", PG_SELLER)["id"]
        customer_ids = [post("/v1/customers", buyer)["id"] for buyer in PG_BUYERS]
        for number in range(size):
            body = invoice_body(number, customer_ids, entity_id)
            post(f"/v1/invoices/{post('/v1/invoices', body)['id']}/finalize")
            country = PG_BUYERS[number % len(PG_BUYERS)]["address"]["country"]
            run.shapes[f"invoices to {country}"] = run.shapes.get(f"invoices to {country}", 0) + 1
            if (number + 1) % 100 == 0 or number + 1 == size:
                print(f"  set-up      {number + 1:6,} invoices finalized", flush=True)
    run.setup_seconds = time.perf_counter() - started
    return account_id


def setup_queue(url: str, dsn: str, run: QueueRun) -> str:
    """The set-up of the postgresql row (not timed); returns the account id."""
    print(
        f"\n{BENCH} · postgresql · {run.size:,} documents (validate + submit + record)",
        flush=True,
    )
    account_id = finalize_invoices(url, run.size, run)
    print(
        f"  set-up      {run.setup_seconds:6.1f} s  ({run.size:,} invoices created + finalized "
        "through the API, documents generated; not timed)",
        flush=True,
    )
    return account_id


def bench_queue(
    url: str, dsn: str, account_id: str, run: QueueRun, rounds: int, baseline: Baseline
) -> QueueRun:
    """Times `process_due` on the stored documents in rounds alternating with the baseline."""
    from invoicetrail.core.clock import ManualClock
    from invoicetrail.core.db import make_engine, make_sessionmaker
    from invoicetrail.einvoicing import service as einvoicing
    from invoicetrail.einvoicing.access_point import SandboxAccessPoint

    size = run.size
    with psycopg.connect(dsn) as connection:
        due = [
            row[0]
            for row in connection.execute(
                "SELECT next_attempt_at FROM einvoices WHERE account_id = %s AND status = "
                "'pending' AND regime = 'peppol' ORDER BY next_attempt_at, seq",
                (account_id,),
            )
        ]
    if len(due) != size:
        raise SystemExit(f"expected {size} pending Peppol documents after set-up, found {len(due)}")

    # The baseline's one plain SELECT of the stored documents (timed; part of its figure).
    started = time.perf_counter()
    with psycopg.connect(dsn) as connection:
        stored = [
            bytes(row[0])
            for row in connection.execute(
                "SELECT document FROM einvoices WHERE account_id = %s ORDER BY seq", (account_id,)
            )
        ]
    run.baseline_select_seconds = time.perf_counter() - started

    settings = bench_settings(url)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    clock = ManualClock(due[0])
    transports = {"peppol": SandboxAccessPoint()}
    # How much of the job is `validation.validate` (the worker calls it through the module).
    direct_validate = validation.validate
    spent = [0.0]

    def timed_validate(document: bytes, regime: str | None = None) -> validation.Report:
        t0 = time.perf_counter()
        try:
            return direct_validate(document, regime)
        finally:
            spent[0] += time.perf_counter() - t0

    validation.validate = timed_validate
    try:
        chunk = -(-size // rounds)
        for index in range(0, size, chunk):
            part = stored[index : index + chunk]
            ours_first = (index // chunk) % 2 == 0
            for turn in (0, 1):
                if (turn == 0) == ours_first:
                    # Due: everything finalized up to this round's last document.
                    cutoff = due[min(index + chunk, size) - 1]
                    clock.advance(cutoff - clock.now())
                    expected = sum(1 for at in due if at <= cutoff) - run.progressed
                    spent[0] = 0.0
                    t0 = time.perf_counter()
                    moved = einvoicing.process_due(sessions, clock, settings, transports)
                    elapsed = time.perf_counter() - t0
                    if moved != expected:
                        raise SystemExit(f"process_due moved {moved} documents, {expected} due")
                    run.progressed += moved
                    run.seconds += elapsed
                    run.validate_seconds += spent[0]
                    run.round_ms.append(elapsed / max(moved, 1) * 1000)
                else:
                    t0 = time.perf_counter()
                    fatal = [baseline.fatal_count(xml) for xml in part]
                    elapsed = time.perf_counter() - t0
                    run.baseline_validate_seconds += elapsed
                    run.baseline_invalid += sum(1 for count in fatal if count)
                    run.baseline_round_ms.append(elapsed / len(part) * 1000)
    finally:
        validation.validate = direct_validate
        engine.dispose()
    run.load_average = os.getloadavg()[0]

    with psycopg.connect(dsn) as connection:
        outcomes = list(
            connection.execute(
                "SELECT id, status, findings FROM einvoices WHERE account_id = %s", (account_id,)
            )
        )
    problems = []
    for einvoice_id, status, findings in outcomes:
        flags = [finding.get("flag") for finding in findings or []]
        run.accepted += status == "accepted"
        run.fatal += "fatal" in flags
        run.warnings += sum(1 for flag in flags if flag != "fatal")
        if status != "accepted" or "fatal" in flags or findings is None:
            problems.append(f"{einvoice_id}: {status}, findings {findings}")

    print(
        f"  queue       {run.ms:6.2f} ms/doc = validate {run.validate_ms:.2f} + claim/submit/"
        f"record {run.rest_ms:.2f}  ({1000 / run.ms:,.0f} documents/s; rounds "
        + " ".join(f"{ms:.1f}" for ms in run.round_ms)
        + f"; accepted {run.accepted:,}/{size:,}; fatal on {run.fatal})",
        flush=True,
    )
    print(
        f"  baseline    {run.baseline_ms:6.2f} ms/doc = SELECT "
        f"{run.baseline_select_seconds * 1000:.0f} ms + validate "
        f"{run.baseline_validate_seconds / size * 1000:.2f}/doc  ({QUEUE_BASELINE_TEXT}; rounds "
        + " ".join(f"{ms:.1f}" for ms in run.baseline_round_ms)
        + f"; fatal on {run.baseline_invalid})  ratio {run.ratio:.2f}  load "
        f"{run.load_average:.1f}",
        flush=True,
    )
    if problems or len(outcomes) != size:
        raise SystemExit(
            f"{len(problems)} of {len(outcomes)} documents did not end accepted without a fatal "
            "finding:\n  " + "\n  ".join(problems[:20])
        )
    print(f"  target {TARGET_TEXT}: {'met' if run.met else 'NOT met'}")
    return run


# --- the in-process row -----------------------------------------------------------------------


def bench_in_process(
    build_ubl: Callable[[DocumentFacts], bytes],
    size: int,
    warmup: int,
    rounds: int,
    baseline: Baseline,
) -> Run:
    run = Run(size=size)
    print(
        f"\n{BENCH} · in-process · saxonche {version('saxonche')} · {size:,} documents "
        "(generate + validate)",
        flush=True,
    )
    offset = warmup + 1
    numbers = list(range(offset, offset + size))
    pregenerated = [build_ubl(document_facts(n)) for n in numbers]

    chunk = -(-size // rounds)
    for index in range(0, size, chunk):
        part = numbers[index : index + chunk]
        ours_first = (index // chunk) % 2 == 0
        for turn in (0, 1):
            if (turn == 0) == ours_first:
                facts = [document_facts(n) for n in part]  # built outside the clock
                generated = 0.0
                validated = 0.0
                for item in facts:
                    t0 = time.perf_counter()
                    xml = build_ubl(item)
                    t1 = time.perf_counter()
                    report = validation.validate(xml)
                    t2 = time.perf_counter()
                    generated += t1 - t0
                    validated += t2 - t1
                    run.invalid += not report.valid
                    run.shapes[shape_of(item)] = run.shapes.get(shape_of(item), 0) + 1
                run.generate_seconds += generated
                run.validate_seconds += validated
                run.round_ms.append((generated + validated) / len(part) * 1000)
            else:
                t0 = time.perf_counter()
                fatal = [baseline.fatal_count(xml) for xml in pregenerated[index : index + chunk]]
                elapsed = time.perf_counter() - t0
                run.baseline_seconds += elapsed
                run.baseline_invalid += sum(1 for count in fatal if count)
                run.baseline_round_ms.append(elapsed / len(part) * 1000)
    run.load_average = os.getloadavg()[0]

    print(
        f"  ours        {run.ms:6.2f} ms/doc = generate {run.generate_ms:.2f} + validate "
        f"{run.validate_ms:.2f}  ({1000 / run.ms:,.0f} documents/s; rounds "
        + " ".join(f"{ms:.1f}" for ms in run.round_ms)
        + f"; fatal on {run.invalid})",
        flush=True,
    )
    print(
        f"  baseline    {run.baseline_ms:6.2f} ms/doc  ({BASELINE_TEXT}; rounds "
        + " ".join(f"{ms:.1f}" for ms in run.baseline_round_ms)
        + f"; fatal on {run.baseline_invalid})  ratio {run.ratio:.2f}  load "
        f"{run.load_average:.1f}",
        flush=True,
    )
    print(f"  target {TARGET_TEXT}: {'met' if run.met else 'NOT met'}")
    return run


# --- RESULTS.md -------------------------------------------------------------------------------


def write_results(queue: QueueRun, run: Run, warm: Warm, path: Path = RESULTS_PATH) -> None:
    """Replaces this bench's rows (postgresql first, kept after the other benches' rows) and
    its details block."""
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    if TABLE_HEADER not in lines:
        lines = [
            "# Benchmark results",
            "",
            "Written by `bench/*.py` (`make bench`); ratio = ours ÷ same-run baseline.",
            "",
            TABLE_HEADER,
            TABLE_RULE,
            *([""] if lines else []),
            *lines,
        ]
    start = lines.index(TABLE_HEADER)
    end = start + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    others = [line for line in lines[start + 2 : end] if not line.startswith(f"| {BENCH} |")]
    lines[start:end] = [TABLE_HEADER, TABLE_RULE, *others, queue.table_row(), run.table_row()]
    details = [
        DETAILS_BEGIN,
        f"### {BENCH}",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs, one process, "
        f"one thread, saxonche {version('saxonche')}. Both rows are timed after the same "
        "one-time compile, first document and warm-up, in rounds alternating with their "
        "baseline. Baselines: validate_check.py's direct code (lxml parse + XSD, Saxon parse, "
        "the two published XSLTs to string, SVRL parsed by lxml), its own Saxon processor. "
        "The machine is shared with other work, so figures move between runs.",
        "",
        "- **postgresql** times the real pipeline on PostgreSQL 15, **validate + submit + "
        "record** per document: invoices created and finalized through the API (each finalize "
        "routes to Peppol and generates the document into `einvoices`; not timed), then only "
        "the worker job `einvoicing.service.process_due` with the built-in sandbox access "
        "point: claim, `validation.validate` (UBL 2.1 XSD, CEN EN 16931 XSLT, Peppol BIS 3.0 "
        "XSLT), submit, record (findings, status, history, event), one write transaction per "
        "document; rounds are what is due at a manual clock set to each round's last "
        "finalize. Documents: invoices of a German seller to Dutch and Belgian buyers, 1–12 "
        "lines, 19 % and 7 % VAT, zero-rated and exempt, EUR. Every one must end `accepted` "
        "with no fatal finding. Baseline: the same stored documents read back with one plain "
        "SELECT and validated directly; ratio = the queue's cost over bare validation. The "
        "validate share is measured by timing each `validation.validate` call in the job.",
        "- **in-process** times **generate + validate** per document, no database: facts → "
        "`peppol.build_ubl` → `validation.validate`. Documents: invoices and credit notes "
        "from BE and DK sellers, 1–12 lines, standard, reduced, zero-rated and exempt VAT, "
        "allowances and charges, EUR and DKK. Baseline: the direct code on the same "
        "documents, pre-generated.",
        "",
        queue.detail(),
        run.detail(),
        "",
        warm.text(),
        DETAILS_END,
    ]
    if DETAILS_BEGIN in lines and DETAILS_END in lines:
        lines[lines.index(DETAILS_BEGIN) : lines.index(DETAILS_END) + 1] = details
    else:
        lines += ["", *details]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", type=int, default=500, help="documents timed, per row")
    parser.add_argument("--warmup", type=int, default=50, help="documents before the clock")
    parser.add_argument("--rounds", type=int, default=10, help="alternations with the baseline")
    parser.add_argument("--quick", action="store_true", help="100 documents, 10 warm-up")
    parser.add_argument("--pg-admin-dsn", default=PG_ADMIN_DSN)
    parser.add_argument("--pg-database", default=PG_DATABASE)
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.warmup, args.rounds = 100, 10, 4
    rounds = max(1, min(args.rounds, args.size))
    build_ubl = wait_for_generator()
    url, dsn = prepare_postgres(args.pg_admin_dsn, args.pg_database)
    queue = QueueRun(size=args.size)
    account_id = setup_queue(url, dsn, queue)
    warm, baseline = warm_up(build_ubl, args.warmup)
    bench_queue(url, dsn, account_id, queue, rounds, baseline)
    run = bench_in_process(build_ubl, args.size, args.warmup, rounds, baseline)
    if not args.no_write:
        write_results(queue, run, warm, args.results)
        print(f"\nwrote {args.results}")
    if run.invalid:
        print(f"{run.invalid} generated documents had a fatal finding", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
