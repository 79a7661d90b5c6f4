"""Server settings: defaults < TOML file (--config) < environment (DARI_*) < command-line flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from typing import Any


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "dari-data"
    database: str = ""                 # "" means sqlite:<data_dir>/dari.db
    bus: str = "memory"                 # memory, or redis://HOST:PORT/DB to share events across processes
    workers: int = 1                    # processes sharing the port (SO_REUSEPORT); >1 needs a redis bus
    server_name: str = "dari"
    max_frame_bytes: int = 1 << 20
    max_message_chars: int = 10000
    unsend_window_s: int = 300
    group_member_limit: int = 500
    open_member_limit: int = 1500
    rate_per_s: float = 50.0            # sustained requests per device (or per address before login)
    rate_burst: int = 200
    event_retention_days: float = 30.0  # events older than this are pruned; older cursors must resync
    event_retention_max: int = 0        # 0: no count cap; else keep at most this many recent events
    prune_interval_s: float = 600.0     # how often old events are pruned
    send_buffer_frames: int = 10000     # per connection; a client this far behind is dropped to resume
    socket_send_buffer: int = 0         # bytes of kernel send buffer per WebSocket (SO_SNDBUF); 0: autotuned
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456      # OWASP's Argon2id minimum; raise on real servers
    stream_port: int = 0                # length-prefixed frame stream (TLS when a cert is set); 0: off
    tls_cert: str = ""                  # PEM certificate chain; with tls_key, serve HTTPS/WSS and TLS streams
    tls_key: str = ""
    tls_self_signed: bool = False       # make (once) and use a self-signed certificate in data_dir/tls
    admin_handles: str = ""             # comma-separated handles allowed to use admin.* and /admin
    reach_window_s: float = 600.0       # incident detection looks this far back
    reach_recent_s: float = 120.0       # ...and judges recovery on this recent part
    reach_min_reporters: int = 3        # distinct failing reporters before an incident opens
    reach_eval_s: float = 30.0          # how often incidents are evaluated
    control_probe_s: float = 30.0       # how often the server probes its own routes
    incident_webhook: str = ""          # POST incident JSON here on open and close
    geoip_country_db: str = ""          # MaxMind .mmdb (GeoLite2-Country): reports' region from the peer address
    geoip_asn_db: str = ""              # MaxMind .mmdb (GeoLite2-ASN): reports' ASN from the peer address
    geoip_proxies: str = ""             # relays/proxies (addresses, CIDRs): their reports keep the client's region
    media_max_bytes: int = 100 << 20   # largest upload; above it media.upload_begin says limit_exceeded
    media_expiry_days: float = 0.0      # delete uploaded files this old; 0 keeps them (stickers never expire)
    media_expiry_kinds: str = ""        # per-kind override, e.g. "video:14,file:30,image:0"
    media_prune_interval_s: float = 3600.0
    default_stickers: bool = True       # import dari's own sticker pack on first start
    todevice_queue_max: int = 10000     # queued to-device (E2EE key) messages kept per device; oldest dropped
    # Calls (issue 12; docs/operations.md, "Calls and TURN").
    call_ring_s: float = 45.0           # an unanswered call rings this long, then it is a missed call
    call_offline_grace_s: float = 20.0  # a device offline this long leaves its call (closed tab, dead phone)
    turn_urls: str = ""                 # comma-separated: turn:HOST:3478?transport=udp,turns:HOST:443?transport=tcp
    turn_secret: str = ""               # coturn's static-auth-secret (use-auth-secret): dari signs credentials
    turn_ttl_s: int = 10800             # how long a TURN credential works (a call starts within it)
    stun_urls: str = ""                 # comma-separated stun:HOST:PORT, offered with the TURN servers
    call_relay_only: bool = False       # browsers relay all media through TURN (hides addresses; tests)
    log_level: str = "info"
    log_json: bool = False
    demo: bool = False

    def database_url(self) -> str:
        return self.database or f"sqlite:{os.path.join(self.data_dir, 'dari.db')}"


def _coerce(value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return bool(value)
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return str(value)


def load_settings(config_path: str | None = None, overrides: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    settings = Settings()
    names = {f.name for f in fields(Settings)}
    layers: list[dict[str, Any]] = []
    if config_path:
        with open(config_path, "rb") as fh:
            data = tomllib.load(fh)
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown settings in {config_path}: {', '.join(sorted(unknown))}")
        layers.append(data)
    env = os.environ if environ is None else environ
    layers.append({n: env[f"DARI_{n.upper()}"] for n in names if f"DARI_{n.upper()}" in env})
    layers.append({k: v for k, v in (overrides or {}).items() if v is not None})
    for layer in layers:
        for key, value in layer.items():
            setattr(settings, key, _coerce(value, getattr(Settings, key)))
    return settings
