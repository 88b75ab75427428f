"""Content Security Policy for Chime SDK web apps: parse, check, generate and merge policies.

Pure: no mitmproxy, no network. Follows the W3C CSP Level 3 draft
(https://w3c.github.io/webappsec-csp/); section anchors are cited where each rule is applied.
"""

from __future__ import annotations

from .check import CheckReport, Failure, FeatureResult, check_policies
from .features import (
    FEATURE_PROBES,
    FEATURES,
    NEEDS,
    SAMPLE_ORIGIN,
    needed_sources,
    parse_features,
    probes_for,
)
from .generate import generate_policy
from .lint import Finding, lint_policy
from .matching import REQUEST_KINDS, Decision, evaluate, request_allowed
from .merge import merge_policies, merge_policy, merge_policy_list
from .policy import (
    Directive,
    Policy,
    parse_headers,
    parse_policy,
    parse_policy_list,
    serialize_policy,
    serialize_policy_list,
)

__all__ = [
    "FEATURES",
    "FEATURE_PROBES",
    "NEEDS",
    "REQUEST_KINDS",
    "SAMPLE_ORIGIN",
    "CheckReport",
    "Decision",
    "Directive",
    "Failure",
    "FeatureResult",
    "Finding",
    "Policy",
    "check_policies",
    "evaluate",
    "generate_policy",
    "lint_policy",
    "merge_policies",
    "merge_policy",
    "merge_policy_list",
    "needed_sources",
    "parse_features",
    "parse_headers",
    "parse_policy",
    "parse_policy_list",
    "probes_for",
    "request_allowed",
    "serialize_policy",
    "serialize_policy_list",
]
