import os

# Keep pyannote's telemetry off in every test process, whatever the engine code does.
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures.live",
    "tests.fixtures.speech",
    "tests.fixtures.pyannote",
    "tests.fixtures.kokoro",
    "tests.fixtures.browser",
    "tests.fixtures.server",
    "tests.fixtures.webrtc",
    "tests.fixtures.seamless",
    "tests.fixtures.cascade",
]
