"""What each Chime SDK feature needs from a page's Content Security Policy, and how to test it.

From the Chime SDK for JavaScript's CSP guide and feature guides (see docs/csp.md for the table
and its sources). A need is (directive, sources) exactly as the guides name the directive; the
probes are requests the SDK really makes, checked by CSP3's rules (matching.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

FEATURES: tuple[str, ...] = ("meetings", "messaging", "voice-focus", "video-fx", "background-image")

# Stands for 'wasm-unsafe-eval', or 'unsafe-eval' when the caller allows it.
WASM = "<wasm>"
CHIME_HTTPS = "https://*.chime.aws"
CHIME_WSS = "wss://*.chime.aws"
SDK_ASSETS = "https://*.sdkassets.chime.aws"

NEEDS: Mapping[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    # Signaling (wss), REST and event ingestion (https); since SDK 3.18.2 redundant audio, media
    # metrics and timers run in blob: workers.
    "meetings": (
        ("connect-src", (CHIME_HTTPS, CHIME_WSS)),
        ("worker-src", ("blob:",)),
    ),
    # Cognito and the messaging REST API are on amazonaws.com; the messaging WebSocket is on
    # *.ws-messaging.chime.aws.
    "messaging": (("connect-src", ("https://*.amazonaws.com", CHIME_WSS)),),
    # The AudioWorklet module and the WebAssembly come from the SDK's CDN; the worker is built
    # from a blob:. child-src is for Safari before 15.5, which checks workers against it.
    "voice-focus": (
        ("script-src", (SDK_ASSETS, WASM)),
        ("script-src-elem", (SDK_ASSETS,)),
        ("connect-src", (SDK_ASSETS,)),
        ("worker-src", ("blob:",)),
        ("child-src", ("blob:",)),
    ),
    "video-fx": (
        ("script-src", ("blob:", SDK_ASSETS, WASM)),
        ("script-src-elem", ("blob:", SDK_ASSETS)),
        ("worker-src", ("blob:", SDK_ASSETS)),
    ),
    # The SDK turns the replacement image into a blob: for the <img> it draws from (found in
    # the SDK's code, not its guides). The image itself is fetched from wherever the app serves
    # it; we assume the app's own origin, so 'self' (for a CDN, add its host by hand).
    "background-image": (
        ("img-src", ("blob:",)),
        ("connect-src", ("'self'",)),
    ),
}

# The origin the probes are written for; probes_for() moves them to the page's real origin.
SAMPLE_ORIGIN = "https://app.example"
_BLOB = f"blob:{SAMPLE_ORIGIN}/3f2a1c4e-8b7d-4e2a-9c61-0d5e7b9a4f10"

FEATURE_PROBES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "meetings": (
        (
            "connect",
            "wss://signal.m3.ue1.app.chime.aws/control/0b6f2a4e-7c1d-4b8e-9f3a-2d5c6e7f8a9b",
        ),
        ("connect", "https://data.svc.ue1.ingest.chime.aws/v1/client-events"),
        ("worker", _BLOB),
    ),
    "messaging": (
        ("connect", "https://cognito-idp.us-east-1.amazonaws.com/"),
        ("connect", "https://messaging-chime.us-east-1.amazonaws.com/channels"),
        ("connect", "wss://0a1b2c3d.us-east-1.ws-messaging.chime.aws/connect"),
    ),
    "voice-focus": (
        ("script", "https://static.sdkassets.chime.aws/workers/worker-v1.js"),
        ("connect", "https://static.sdkassets.chime.aws/wasm/decoder.wasm"),
        ("worker", _BLOB),
        ("wasm", ""),
    ),
    "video-fx": (
        ("script", "https://static.sdkassets.chime.aws/ml_media_fx/otherassets/worker.js"),
        ("script", _BLOB),
        ("worker", "https://static.sdkassets.chime.aws/ml_media_fx/otherassets/worker.js"),
        ("worker", _BLOB),
        ("wasm", ""),
    ),
    "background-image": (
        ("image", _BLOB),
        ("connect", f"{SAMPLE_ORIGIN}/images/background.jpg"),
    ),
}


def probes_for(feature: str, origin: str = SAMPLE_ORIGIN) -> tuple[tuple[str, str], ...]:
    """FEATURE_PROBES[feature], with the sample origin's URLs moved to `origin` (blob: ones too)."""
    origin = origin.rstrip("/")
    return tuple(
        (kind, url.replace(SAMPLE_ORIGIN, origin, 1)) for kind, url in FEATURE_PROBES[feature]
    )


def parse_features(text: str) -> tuple[str, ...]:
    """ "meetings,video-fx" -> ("meetings", "video-fx"), in FEATURES order, without repeats."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"no feature given; valid features: {', '.join(FEATURES)}")
    return check_features(names)


def check_features(features: Iterable[str]) -> tuple[str, ...]:
    chosen = set()
    for name in features:
        if name not in FEATURES:
            raise ValueError(f"unknown feature {name!r}; valid features: {', '.join(FEATURES)}")
        chosen.add(name)
    return tuple(name for name in FEATURES if name in chosen)


def needed_sources(
    features: Sequence[str], *, allow_unsafe_eval: bool = False
) -> dict[str, tuple[str, ...]]:
    """Directive -> the sources `features` need in it, without repeats, WASM resolved."""
    wasm = "'unsafe-eval'" if allow_unsafe_eval else "'wasm-unsafe-eval'"
    needs: dict[str, list[str]] = {}
    for feature in check_features(features):
        for directive, sources in NEEDS[feature]:
            listed = needs.setdefault(directive, [])
            for source in sources:
                resolved = wasm if source == WASM else source
                if resolved not in listed:
                    listed.append(resolved)
    return {directive: tuple(sources) for directive, sources in needs.items()}
