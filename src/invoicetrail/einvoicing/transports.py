"""How a regime's documents leave: one transport per market (access point, PAC, MyInvois).

A transport never touches the database: the submission queue calls it and records what it
answers. Two kinds of failure, as SPEC classes them:
- `TransportUnavailable`: the market's service could not be reached or failed on its side
  (connection error, timeout, 5xx, a 429): `retryable`, the queue backs off and tries again;
- a `SubmitResult` with status `rejected`: the authority refused the document's data:
  `needs_correction`, with its findings (rule/code + message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol


class TransportUnavailable(Exception):
    """Transport-level failure: retry later, the document itself may be fine."""


class CancelRefused(Exception):
    """The authority refused a cancellation (for example its window has closed)."""


@dataclass(frozen=True)
class SubmitResult:
    # submitted: received, result pending (poll later); accepted / rejected: final.
    status: Literal["submitted", "accepted", "rejected"]
    external_id: str | None = None  # UUID (CFDI folio fiscal), MyInvois document uuid, AP id
    accepted_at: datetime | None = None  # stamp date / validation date at the authority
    findings: tuple[dict[str, str], ...] = ()  # [{"rule", "message"}] on rejection
    # What the authority returned that a reader needs later (submission uid, long id, …).
    detail: dict[str, Any] = field(default_factory=dict)
    # A stamped CFDI comes back with its TimbreFiscalDigital: the document as filed.
    stamped_document: bytes | None = None


class Transport(Protocol):
    regime: str
    sandbox: bool  # True: the built-in transport that opens no connection

    def submit(self, document: bytes, *, einvoice_id: str, document_type: str) -> SubmitResult:
        """Hands one document over. Raises TransportUnavailable when it cannot."""
        ...

    def poll(self, external_id: str, detail: dict[str, Any]) -> SubmitResult:
        """The current result of a document that was `submitted`."""
        ...

    def cancel(self, external_id: str, detail: dict[str, Any], reason: str) -> None:
        """Cancels an accepted document. Raises TransportUnavailable or CancelRefused."""
        ...
