"""Files generated for deployment from the allowlist: proxy auto-config (PAC), nftables rules,
and the health probe the container runs.
"""
