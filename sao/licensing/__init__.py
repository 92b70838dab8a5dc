"""License identification, the license gate and attribution fields (pure, no I/O)."""
from .attribution import freesound_attribution_line, license_name_with_version, tasl
from .canonical import CANONICAL_URLS, UNKNOWN, canonical_license, deed_url
from .gate import GateResult, LicensePolicy, license_gate, resolve_license
from .model_use import DEFAULT_MODEL_USE, GEN_AI_PREFERENCES, MODEL_USES, ModelUse
from .table import ALLOWED_LICENSES, LICENSES, license_name

__all__ = ["ALLOWED_LICENSES", "CANONICAL_URLS", "DEFAULT_MODEL_USE", "GEN_AI_PREFERENCES", "GateResult", "LICENSES",
           "LicensePolicy", "MODEL_USES", "ModelUse", "UNKNOWN",
           "canonical_license", "deed_url", "freesound_attribution_line", "license_gate", "license_name",
           "license_name_with_version", "resolve_license", "tasl"]
