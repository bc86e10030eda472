"""Prometheus metrics of the auth service, on its /metrics with the shared HTTP, pool and
rate-limit metrics of ``order_common.metrics`` (``rate_limit_rejections_total`` counts the
429s of /token/ and /register/ by scope: token-ip, register-ip, and the login guard's
login-pair, login-ip, login-account, login-in-flight)."""

from __future__ import annotations

from prometheus_client import Counter

from order_common.metrics import RATE_LIMIT_REJECTIONS

REGISTRATIONS = Counter(
    "auth_registrations_total",
    "Registrations by result: created, or conflict (the email was taken).",
    ["result"],
)
LOGINS = Counter(
    "auth_logins_total",
    "Token requests that reached the password check, by result: success, or failure (unknown "
    "user or wrong password; the answer does not say which). Rate-limited attempts are in "
    "rate_limit_rejections_total.",
    ["result"],
)

LOGIN_GUARD_UNAVAILABLE = Counter(
    "login_guard_unavailable_total",
    "Login attempts let through unguarded (or successes not recorded) because Redis could not "
    "be reached: the login guard fails open.",
)

for _result in ("created", "conflict"):
    REGISTRATIONS.labels(_result)
for _result in ("success", "failure"):
    LOGINS.labels(_result)
for _scope in (
    "token-ip",
    "register-ip",
    "login-pair",
    "login-ip",
    "login-account",
    "login-in-flight",
):
    RATE_LIMIT_REJECTIONS.labels(_scope)
