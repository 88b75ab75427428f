"""The checker: does a page's policy let each Chime SDK feature work, and what is wrong with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .features import check_features, probes_for
from .lint import Finding, lint_policy
from .matching import KIND_DIRECTIVES, evaluate, parse_origin
from .policy import Policy, parse_headers, serialize_policy


class Failure(NamedTuple):
    kind: str
    url: str
    """"" for wasm and eval, which fetch nothing."""
    directive: str
    """The request's effective directive (as a browser's violation report names it)."""


@dataclass(frozen=True)
class FeatureResult:
    feature: str
    allowed: bool
    failures: tuple[Failure, ...]
    """Every blocked probe."""
    details: tuple[str, ...]
    """For each failure: which policy and which directive of it decided."""
    reported: tuple[Failure, ...] = ()
    """Probes a report-only policy would report (they are not blocked)."""


@dataclass(frozen=True)
class CheckReport:
    origin: str
    policies: tuple[Policy, ...]
    features: tuple[FeatureResult, ...]
    findings: tuple[Finding, ...]

    @property
    def allowed(self) -> bool:
        return all(result.allowed for result in self.features)

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "allowed": self.allowed,
            "policies": [
                {"disposition": policy.disposition, "policy": serialize_policy(policy)}
                for policy in self.policies
            ],
            "features": [
                {
                    "feature": result.feature,
                    "allowed": result.allowed,
                    "failures": [failure._asdict() for failure in result.failures],
                    "details": list(result.details),
                    "reported": [failure._asdict() for failure in result.reported],
                }
                for result in self.features
            ],
            "findings": [finding._asdict() for finding in self.findings],
        }


def _label(policies: Sequence[Policy], index: int) -> str:
    policy = policies[index]
    kind = "report-only policy" if policy.disposition == "report" else "policy"
    return f"{kind} {index + 1}"


def check_policies(
    policies: Sequence[str],
    features: Sequence[str],
    origin: str,
    *,
    report_only: Sequence[str] = (),
) -> CheckReport:
    """Check enforced header values `policies` (and `report_only` ones, which block nothing)
    for a page of `origin`. ValueError for an unknown feature or an unusable origin."""
    chosen = check_features(features)
    page = parse_origin(origin)
    parsed = (*parse_headers(policies), *parse_headers(report_only, "report"))
    results = [_check_feature(parsed, feature, page.serialized) for feature in chosen]
    findings: list[Finding] = []
    for index, policy in enumerate(parsed):
        prefix = f"{_label(parsed, index)}: " if len(parsed) > 1 else ""
        findings.extend(
            finding._replace(message=prefix + finding.message) for finding in lint_policy(policy)
        )
    return CheckReport(page.serialized, parsed, tuple(results), tuple(findings))


def _check_feature(policies: Sequence[Policy], feature: str, origin: str) -> FeatureResult:
    failures: list[Failure] = []
    details: list[str] = []
    reported: list[Failure] = []
    for kind, url in probes_for(feature, origin):
        decision = evaluate(policies, kind, url, origin)
        if decision.reported_by:
            reported.append(Failure(kind, url, KIND_DIRECTIVES[kind]))
        if decision.allowed:
            continue
        assert decision.effective_directive is not None and decision.directive is not None
        assert decision.policy_index is not None
        failures.append(Failure(kind, url, decision.effective_directive))
        governing = policies[decision.policy_index].get(decision.directive)
        via = (
            ""
            if decision.directive == decision.effective_directive
            else f" (no {decision.effective_directive}: it falls back to {decision.directive})"
        )
        details.append(f"{_label(policies, decision.policy_index)}: `{governing}`{via}")
    return FeatureResult(feature, not failures, tuple(failures), tuple(details), tuple(reported))
