"""Amazon Chime SDK egress allowlist: AppKey and TenantID headers added by a mitmproxy addon."""

__version__ = "0.1.0"
