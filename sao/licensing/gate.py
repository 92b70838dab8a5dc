"""The license gate: a pure function from what a source says about an item to a verdict.

Policy (paper section 3, plus one rule the paper could not have): keep only CC0 1.0,
CC-BY 3.0/4.0 and CC Sampling+ 1.0; reject everything else with a reason that names the
license; reject Freesound items whose author opted out of generative-AI training
(``gen_ai_preference``). Exact matching only: "Attribution-NonCommercial" starts with
"Attribution" and must never pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .canonical import UNKNOWN, canonical_license

ALLOWED_LICENSES = frozenset({"cc0-1.0", "cc-by-3.0", "cc-by-4.0", "cc-sampling+-1.0"})
# Freesound's four documented values; only an explicit opt-out is refused by default.
GEN_AI_PREFERENCES = ("no-additional-preferences", "open-source-models", "noncommercial-open-source-models",
                      "no-gen-ai")
DEFAULT_REFUSED_GEN_AI = frozenset({"no-gen-ai"})


@dataclass(frozen=True)
class LicensePolicy:
    allowed: frozenset = ALLOWED_LICENSES
    refused_gen_ai_preferences: frozenset = DEFAULT_REFUSED_GEN_AI

    def describe(self) -> dict:
        return {"allowed": sorted(self.allowed), "refused_gen_ai_preferences": sorted(self.refused_gen_ai_preferences)}


@dataclass(frozen=True)
class GateResult:
    verdict: str            # "pass" or "reject"
    reason: str             # machine-countable prefix, then details: "license-not-allowed: cc-by-nc-4.0"
    canonical: str
    details: dict = field(default_factory=dict)

    @property
    def category(self) -> str:
        return self.reason.split(":", 1)[0]


def resolve_license(url: str | None, title: str | None = None) -> tuple[str, str | None]:
    """Canonical id from a URL and/or a title (FMA gives both). Returns (canonical, problem)."""
    from_url = canonical_license(url) if url else UNKNOWN
    from_title = canonical_license(title) if title else UNKNOWN
    if url and title and from_url != UNKNOWN and from_title != UNKNOWN:
        family = lambda c: c.rsplit("-", 1)[0] if c[-1].isdigit() else c  # noqa: E731
        if family(from_url) != family(from_title):
            return UNKNOWN, f"title {title!r} and URL {url!r} disagree"
    if from_url != UNKNOWN:
        return from_url, None
    return from_title, None


def license_gate(license_url: str | None, license_title: str | None = None, *, gen_ai_preference: str | None = None,
                 policy: LicensePolicy = LicensePolicy()) -> GateResult:
    if not (license_url or "").strip() and not (license_title or "").strip():
        return GateResult("reject", "license-missing: the source gives no license", UNKNOWN)
    canonical, problem = resolve_license(license_url, license_title)
    shown = license_url or license_title
    if problem:
        return GateResult("reject", f"license-conflict: {problem}", canonical)
    if canonical == UNKNOWN:
        return GateResult("reject", f"license-unknown: {shown!r} is not a recognised license", canonical)
    if canonical not in policy.allowed:
        if canonical in ("cc-by", "cc-sampling+"):
            return GateResult("reject", f"license-version-unknown: {shown!r} names {canonical} without a version",
                              canonical)
        return GateResult("reject", f"license-not-allowed: {canonical}", canonical)
    if gen_ai_preference in policy.refused_gen_ai_preferences:
        return GateResult("reject", f"opt-out: gen_ai_preference={gen_ai_preference}", canonical)
    return GateResult("pass", f"license-allowed: {canonical}", canonical)
