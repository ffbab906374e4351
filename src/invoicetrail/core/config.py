"""Every tunable is a named setting read from `INVOICETRAIL_*`; nothing else is global."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./var/invoicetrail.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INVOICETRAIL_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: int = Field(default=20, ge=1, le=500)
    db_pool_timeout_seconds: float = Field(default=30.0, gt=0)
    # PostgreSQL: how long opening a connection may take before the request answers 503
    # (whole seconds; libpq's floor is 2). Bounds a request when the server is unreachable.
    db_connect_timeout_seconds: int = Field(default=5, ge=2, le=300)
    sqlite_busy_timeout_seconds: float = Field(default=60.0, ge=5)

    body_bytes_max: int = Field(default=1_048_576, ge=1024)
    rate_limit_per_second: float = Field(default=1000.0, ge=0)
    rate_limit_burst: int = Field(default=1000, ge=1)

    # Keys must outlive any sane client retry window, so the floor is one day.
    idempotency_retention_days: int = Field(default=30, ge=1)
    event_retention_days: int = Field(default=400, ge=1)
    api_key_rotation_overlap_seconds: int = Field(default=86_400, ge=0, le=7 * 86_400)

    serve_workers: int = Field(default=1, ge=1, le=64)
    worker_poll_interval_seconds: float = Field(default=1.0, gt=0)
    allow_private_webhook_targets: bool = False
    # A worker holds an endpoint this long per renewal; another takes over after a crash.
    webhook_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    smtp_url: str | None = None

    # E-invoicing transports. Unset: the built-in sandbox transport (opens no connection).
    peppol_access_point_url: str | None = None
    peppol_access_point_token: str | None = None
    pac_url: str | None = None
    pac_username: str | None = None
    pac_password: str | None = None
    myinvois_url: str | None = None  # e.g. https://preprod-api.myinvois.hasil.gov.my
    myinvois_identity_url: str | None = None  # default: myinvois_url
    myinvois_client_id: str | None = None
    myinvois_client_secret: str | None = None
    einvoice_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    # Reconciliation windows: a finding fires only once its window has passed (SPEC ≥ 24 h).
    ach_window_business_days: int = Field(default=4, ge=1, le=30)
    # ISO weekdays (1 = Monday) that are business days, and dates that are not (holidays).
    business_weekdays: str = Field(default="1,2,3,4,5", pattern=r"^[1-7](,[1-7]){0,6}$")
    business_holidays: str = Field(
        default="", pattern=r"^(\d{4}-\d{2}-\d{2}(,\d{4}-\d{2}-\d{2})*)?$"
    )
    export_sync_window_days: int = Field(default=3, ge=1, le=90)
    # PostgreSQL: no statement of an export build or a reconciliation run runs (or waits for
    # a lock) longer than this; past it the job rolls back and answers 503 (0: no bound).
    job_statement_timeout_seconds: float = Field(default=600.0, ge=0, le=86_400)
    delivery_window_hours: int = Field(default=24, ge=24, le=24 * 90)
    reconcile_daily: bool = True
    # Go-live looks at the paid invoices of this many days back.
    golive_window_days: int = Field(default=90, ge=1, le=3650)
    # DejaVu Sans (Debian fonts-dejavu-core) for Unicode invoice PDFs; without it, Helvetica.
    pdf_font_dir: str = "/usr/share/fonts/truetype/dejavu"
    # The From address of invoice e-mails; without a display name the legal entity's name
    # is shown. Its domain also names the Message-IDs.
    mail_from: str = Field(default="invoices@invoicetrail.localhost", min_length=3, max_length=320)
    # Without INVOICETRAIL_SMTP_URL every message is written here as an .eml file (SPEC).
    mail_dir: str = "./var/mail"
    # Console cookies are Secure on https; set this behind a TLS-terminating proxy.
    console_secure_cookies: bool = False
