"""nginx.conf for the CDN caching sidecar that sits in front of the app in every app pod.

Pure: numbers in, text out. The sidecar runs non-root (uid 101) on a read-only root filesystem, so every
path nginx writes to lives under /tmp (an emptyDir) or the cache emptyDir; logs go to stdout/stderr.
The app decides freshness with Cache-Control; `ttl_seconds` only applies to 200s that carry none.
Start it with `nginx_command(...)`: `daemon off` is given on the command line, not in the file, so the
file also works with images whose default command already passes `-g 'daemon off;'`.
"""

from __future__ import annotations

import re

CONF_FILE = "nginx.conf"
CACHE_DIR = "/var/cache/nginx/cdn"  # an emptyDir in the pod
TEMP_DIR = "/tmp"  # an emptyDir in the pod
HEALTH_PATH = "/cdn-health"
_SIZE = re.compile(r"^[0-9]+[kKmMgG]?$")  # nginx size syntax, same pattern as the CRD's cdn.cacheSize


def nginx_command(conf_path: str) -> list[str]:
    """The container command: foreground, config from the ConfigMap, early errors to stderr."""
    return ["nginx", "-c", conf_path, "-e", "stderr", "-g", "daemon off;"]


def render_nginx_conf(
    listen_port: int,
    upstream_port: int,
    cache_size: str,
    ttl_seconds: int,
    *,
    cache_dir: str = CACHE_DIR,
    temp_dir: str = TEMP_DIR,
    user: str | None = None,
    worker_processes: int = 1,
) -> str:
    """A complete nginx.conf. `cache_dir`/`temp_dir`/`user` exist so tests can run it outside a pod
    (`user root` lets workers of a root master write into a root-owned tmp dir)."""
    for port in (listen_port, upstream_port):
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
    if not _SIZE.match(cache_size):
        raise ValueError(f"cache_size must look like 100m or 1g, got {cache_size!r}")
    if ttl_seconds < 1:
        raise ValueError("ttl_seconds must be >= 1")
    user_line = f"user {user};\n" if user else ""
    t = temp_dir.rstrip("/") or "/"
    return f"""# Rendered by archop (operator/archop/build/nginx_conf.py). CDN cache in front of the app.
{user_line}worker_processes {worker_processes};
pid {t}/nginx.pid;
error_log stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    # Read-only root filesystem: every scratch path lives in the writable temp dir.
    client_body_temp_path {t}/client_temp;
    proxy_temp_path {t}/proxy_temp;
    fastcgi_temp_path {t}/fastcgi_temp;
    uwsgi_temp_path {t}/uwsgi_temp;
    scgi_temp_path {t}/scgi_temp;

    default_type application/octet-stream;
    server_tokens off;
    sendfile on;
    keepalive_timeout 65s;
    # Above the app's own 64 KiB limit, so the app answers 413 itself (JSON); still bounds abuse.
    client_max_body_size 1m;

    log_format cdn escape=json '{{"time":"$time_iso8601","remote":"$remote_addr","method":"$request_method",'
        '"uri":"$request_uri","status":$status,"bytes":$body_bytes_sent,"request_time":$request_time,'
        '"upstream_time":"$upstream_response_time","cache":"$upstream_cache_status"}}';
    access_log /dev/stdout cdn;

    proxy_cache_path {cache_dir} levels=1:2 keys_zone=cdn:10m max_size={cache_size} inactive=10m
                     use_temp_path=off;

    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 16;
    }}

    # Never serve from, nor store into, the cache for strong reads, reads with a consistency token (the
    # X-Min-LSN header, the min_lsn argument or the commit_lsn cookie) or anything but GET/HEAD.
    # A token read wants data at least as new as a write the client made: a cached page says nothing about
    # its position, so it must come from the app (which finds a fresh enough follower or cache entry).
    # Why the answer is not stored either, though it is fresh: the app marks it no-store (a browser must not
    # keep it for a later, newer token), a min_lsn URL is a cache key no other request uses, and a plain
    # read would gain at most the max-age (seconds) of freshness.
    map "$http_x_min_lsn$arg_min_lsn$cookie_commit_lsn" $cdn_token {{
        default 1;
        "" 0;
    }}
    map $http_x_consistency $cdn_strong_header {{
        default 0;
        ~*^strong$ 1;
    }}
    map $arg_consistency $cdn_strong_arg {{
        default 0;
        strong 1;
    }}
    map $request_method $cdn_not_get {{
        default 1;
        GET 0;
        HEAD 0;
    }}

    server {{
        listen {listen_port};
        # On every response (empty, hence omitted, where no cache was consulted).
        add_header X-Cache-Status $upstream_cache_status always;

        # The app is unreachable and nothing stale is cached: JSON like the app's own errors, not HTML.
        # (The app's own 5xx pass through untouched: proxy_intercept_errors stays off.)
        error_page 502 503 504 = @app_unavailable;
        location @app_unavailable {{
            default_type application/json;
            add_header Retry-After 1 always;
            add_header Cache-Control no-store always;
            return 503 '{{"error":"unavailable","message":"app unavailable, retry shortly"}}';
        }}

        location = {HEALTH_PATH} {{
            access_log off;
            default_type application/json;
            return 200 '{{"status":"ok"}}';
        }}

        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;

            proxy_cache cdn;
            proxy_cache_key $host$request_uri;
            proxy_cache_methods GET HEAD;
            # Used only when the app sends no Cache-Control/Expires; the app's max-age wins otherwise.
            proxy_cache_valid 200 {ttl_seconds}s;
            proxy_cache_bypass $cdn_strong_header $cdn_strong_arg $cdn_not_get $cdn_token;
            # A response that sets a cookie is one client's (writes set commit_lsn): never stored. nginx
            # already skips those unless told to ignore Set-Cookie; this keeps it so if someone does.
            proxy_no_cache $cdn_strong_header $cdn_strong_arg $cdn_not_get $cdn_token
                           $upstream_http_set_cookie;
            # A dead or failing app (restart, DB failover) still gets cached pages out, stale.
            proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
            proxy_cache_background_update on;
            # One request per key goes upstream on a miss; the others wait for its answer.
            proxy_cache_lock on;
            proxy_cache_lock_timeout 5s;
        }}
    }}
}}
"""
