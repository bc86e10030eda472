"""How the chart hands the services their data-service URLs: full URLs, URLs from the
operators' own Secrets, URLs assembled from parts, and extraEnv/extraVolumes/extraVolumeMounts.
Each assertion builds the environment as the kubelet would (secrets read, $(VAR) expanded) and
hands it to the service's real Settings class."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from tests.deploy import support
from tests.deploy.support import by_kind, expand_env, named, pod_spec, workloads

FULL = f"{support.RELEASE}-order-platform"
OPERATORS = "example-operators"

# What the operators put in their Secrets (CloudNativePG <cluster>-app, the RabbitMQ cluster
# operator's <cluster>-default-user) and the managed Redis password.
OPERATOR_SECRETS = {
    "auth-db-app": {"uri": "postgresql://auth:AuthPw42@auth-db-rw.shop.svc:5432/auth"},
    "orders-db-app": {"uri": "postgresql://orders:OrdPw42@orders-db-rw.shop.svc:5432/orders"},
    "order-bus-default-user": {
        "username": "default_user_Xy",
        "password": "Rabbit-Pw_7",
        "host": "order-bus.shop.svc",
        "port": "5672",
    },
    "managed-redis": {"password": "RedisPw9"},
}
SETTINGS = {
    "auth": "auth_service.settings",
    "orders": "orders_service.settings",
    "orders-events": "orders_service.settings",
    "event-consumer": "event_consumer.settings",
    "worker": "order_worker.settings",
}
PREFIXES = {"auth_service": "AUTH_", "orders_service": "ORDERS_"}


def _settings(component: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The component's Settings, built from the pod's environment alone."""
    module = importlib.import_module(SETTINGS[component])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return module.Settings(_env_file=None)


def _container(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return pod_spec(named(objects, "Deployment", f"{FULL}-{component}"))["containers"][0]


def test_operator_example_uses_the_operators_secrets_as_they_are(
    rendered: dict[str, list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = rendered[OPERATORS]
    # Everything comes from existing Secrets: the chart stores no connection value.
    assert not [s for s in by_kind(objects, "Secret") if "connections" in s["metadata"]["name"]]
    assert not [
        s for s in by_kind(objects, "Secret") if s["metadata"]["name"].endswith("-migrations")
    ]

    auth = _settings("auth", expand_env(_container(objects, "auth"), OPERATOR_SECRETS), monkeypatch)
    assert (
        auth.database_url.get_secret_value()
        == "postgresql+asyncpg://auth:AuthPw42@auth-db-rw.shop.svc:5432/auth"
    )
    assert auth.redis_url.get_secret_value() == (
        "rediss://:RedisPw9@redis.internal.example.com:6380/0"
        "?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/managed-redis/ca.crt"
    )
    for component in ("orders", "orders-events"):
        env = expand_env(_container(objects, component), OPERATOR_SECRETS)
        settings = _settings(component, env, monkeypatch)
        assert settings.database_url.get_secret_value() == (
            "postgresql+asyncpg://orders:OrdPw42@orders-db-rw.shop.svc:5432/orders"
        ), component
        assert settings.amqp_url.get_secret_value() == (
            "amqp://default_user_Xy:Rabbit-Pw_7@order-bus.shop.svc:5672/"
        ), component
    for component in ("event-consumer", "worker"):
        env = expand_env(_container(objects, component), OPERATOR_SECRETS)
        settings = _settings(component, env, monkeypatch)
        assert (
            settings.amqp_url.get_secret_value()
            == "amqp://default_user_Xy:Rabbit-Pw_7@order-bus.shop.svc:5672/"
        )
        # Celery's broker: the managed Redis's parts, database 1.
        assert settings.celery_broker_url.get_secret_value().startswith(
            "rediss://:RedisPw9@redis.internal.example.com:6380/1?"
        ), component
    # The password never appears in the pod spec: only the $(VAR) that the kubelet fills in.
    relay = _container(objects, "orders-events")
    url = next(e for e in relay["env"] if e["name"] == "ORDERS_AMQP_URL")["value"]
    assert "$(OP_AMQP_PASSWORD)" in url
    names = [e["name"] for e in relay["env"]]
    assert names.index("OP_AMQP_PASSWORD") < names.index("ORDERS_AMQP_URL")


def test_operator_example_migrations_read_the_cloudnative_pg_secrets(
    rendered: dict[str, list[dict]],
) -> None:
    job = named(rendered[OPERATORS], "Job", f"{FULL}-migrations")
    spec = pod_spec(job)
    envs = {
        c["name"]: expand_env(c, OPERATOR_SECRETS)
        for c in spec["initContainers"] + spec["containers"]
    }
    assert envs["auth-migrate"]["AUTH_DATABASE_URL"] == OPERATOR_SECRETS["auth-db-app"]["uri"]
    assert envs["orders-migrate"]["ORDERS_DATABASE_URL"] == OPERATOR_SECRETS["orders-db-app"]["uri"]
    assert envs["auth-migrate"]["AUTH_MIGRATE_CREATE_DATABASE"] == "false"
    assert envs["orders-migrate"]["PGSSLMODE"] == "require"


@pytest.mark.parametrize("profile", list(support.PROFILES))
def test_migrations_job_does_not_create_databases_unless_asked(
    rendered: dict[str, list[dict]], profile: str
) -> None:
    job = named(rendered[profile], "Job", f"{FULL}-migrations")
    spec = pod_spec(job)
    for container in spec["initContainers"] + spec["containers"]:
        env = {e["name"]: e.get("value") for e in container["env"]}
        prefix = "AUTH_" if container["name"].startswith("auth") else "ORDERS_"
        assert env[f"{prefix}MIGRATE_CREATE_DATABASE"] == "false", (profile, container["name"])
    on = support.render({"migrations": {"createDatabase": True}})
    spec = pod_spec(named(on, "Job", f"{FULL}-migrations"))
    assert {
        e["value"]
        for c in spec["initContainers"] + spec["containers"]
        for e in c["env"]
        if e["name"].endswith("_MIGRATE_CREATE_DATABASE")
    } == {"true"}
    assert not support.unknown_settings(
        {"AUTH_MIGRATE_CREATE_DATABASE", "ORDERS_MIGRATE_CREATE_DATABASE"}
    )


def test_string_values_are_kept_in_the_release_secret(
    helm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = support.render(
        {
            "connections": {
                "authDatabase": {"url": "postgres://auth:pw@pg.example.com:5432/auth"},
                "ordersDatabase": {
                    "host": "pg.example.com",
                    "username": "orders",
                    "password": "p@ss/word",
                    "options": "application_name=orders",
                },
                "amqp": {
                    "host": "mq",
                    "username": "u",
                    "password": "amqp-pw",
                    "vhost": "shop/prod",
                },
                "redis": {"host": "cache", "password": "redis-pw"},
                "celeryBroker": {"url": "redis://broker:6379/3"},
            }
        }
    )
    secret = named(objects, "Secret", f"{FULL}-connections")["stringData"]
    assert secret == {
        "auth-database-url": "postgres://auth:pw@pg.example.com:5432/auth",
        "orders-database-password": "p@ss/word",
        "amqp-password": "amqp-pw",
        "redis-password": "redis-pw",
        "celery-broker-url": "redis://broker:6379/3",
    }
    migrations = named(objects, "Secret", f"{FULL}-migrations")["stringData"]
    assert migrations == {
        "auth-database-url": secret["auth-database-url"],
        "orders-database-password": secret["orders-database-password"],
    }
    stored = {f"{FULL}-connections": secret}
    orders = expand_env(_container(objects, "orders"), stored)
    # Parts go in verbatim (the documented limit): a password needs to be URL-safe.
    assert orders["ORDERS_DATABASE_URL"] == (
        "postgresql+asyncpg://orders:p@ss/word@pg.example.com:5432/orders?application_name=orders"
    )
    assert orders["ORDERS_AMQP_URL"] == "amqp://u:amqp-pw@mq:5672/shop%2Fprod"
    assert orders["ORDERS_REDIS_URL"] == "redis://:redis-pw@cache:6379/0"
    auth = _settings("auth", expand_env(_container(objects, "auth"), stored), monkeypatch)
    assert (
        auth.database_url.get_secret_value()
        == "postgresql+asyncpg://auth:pw@pg.example.com:5432/auth"
    )
    worker = expand_env(_container(objects, "worker"), stored)
    assert worker["WORKER_CELERY_BROKER_URL"] == "redis://broker:6379/3"
    # No password string anywhere in a pod spec.
    for workload in workloads(objects):
        assert "redis-pw" not in str(pod_spec(workload)), workload["metadata"]["name"]


def test_celery_broker_takes_redis_parts_only_when_it_has_none(helm: Any) -> None:
    objects = support.render(
        {"connections": {"redis": {"host": "cache", "port": 6390, "scheme": "rediss"}}}
    )
    stored = {f"{FULL}-connections": named(objects, "Secret", f"{FULL}-connections")["stringData"]}
    env = expand_env(_container(objects, "worker"), stored)
    assert env["WORKER_CELERY_BROKER_URL"] == "rediss://cache:6390/1"
    consumer = expand_env(_container(objects, "event-consumer"), stored)
    assert consumer["CONSUMER_REDIS_URL"] == "rediss://cache:6390/0"


def test_one_secret_form_still_works(rendered: dict[str, list[dict]]) -> None:
    for profile, secret in (
        ("production", "order-platform-connections"),
        ("dev", f"{FULL}-connections"),
    ):
        worker = _container(rendered[profile], "worker")
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"] for e in worker["env"] if "valueFrom" in e
        }
        assert refs["WORKER_CELERY_BROKER_URL"] == {"name": secret, "key": "celery-broker-url"}
        assert refs["WORKER_AMQP_URL"] == {"name": secret, "key": "amqp-url"}


def test_schema_rejects_incomplete_connections(helm: Any) -> None:
    for bad in (
        {"connections": {"amqp": {"url": {"secretKeyRef": {"name": "x"}}}}},
        {"connections": {"amqp": {"scheme": "http"}}},
        {"connections": {"redis": {"port": "six"}}},
        {"connections": {"authDatabase": {"hostname": "db"}}},
        {"extraEnv": [{"value": "no name"}]},
        {"auth": {"extraVolumeMounts": [{"name": "ca"}]}},
    ):
        with pytest.raises(helm.HelmError):
            support.render(bad)


def test_extra_env_and_volumes_globally_then_per_workload(
    rendered: dict[str, list[dict]], helm: Any
) -> None:
    objects = rendered[OPERATORS]
    for workload in workloads(objects):
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        assert "managed-redis-ca" in {v["name"] for v in spec["volumes"]}, name
        for container in spec["containers"] + spec.get("initContainers", []):
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts["managed-redis-ca"]["mountPath"] == "/etc/ssl/managed-redis", name
    auth = _container(objects, "auth")
    env = {e["name"]: e.get("value") for e in auth["env"]}
    assert env["PGSSLROOTCERT"] == "/etc/ssl/auth-db/ca.crt"
    assert {m["name"] for m in auth["volumeMounts"]} >= {
        "auth-db-ca",
        "managed-redis-ca",
        "tmp",
        "jwt",
    }
    assert "PGSSLMODE" not in {e["name"] for e in _container(objects, "worker")["env"]}

    # Order: the chart's own variables, the global extras, the workload's (which may use
    # valueFrom and refer to what came before).
    objects = support.render(
        {
            "gateway": {
                "enabled": True,
                "extraEnv": [
                    {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                ],
                "extraVolumes": [{"name": "g", "emptyDir": {}}],
                "extraVolumeMounts": [{"name": "g", "mountPath": "/g"}],
            },
            "extraEnv": [{"name": "A", "value": "1"}],
        }
    )
    for component in ("gateway", "orders"):
        names = [e["name"] for e in _container(objects, component)["env"]]
        assert names[-1] == ("B" if component == "gateway" else "A"), component
        assert "A" in names
    gateway = named(objects, "Deployment", f"{FULL}-gateway")
    assert {"name": "g", "emptyDir": {}} in pod_spec(gateway)["volumes"]
    assert {"name": "g", "mountPath": "/g"} in pod_spec(gateway)["containers"][0]["volumeMounts"]


def test_notes_name_the_connections_still_missing(helm: Any) -> None:
    assert "WARNING" not in support.notes(support.PROFILES[OPERATORS])
    text = support.notes({"connections": {"redis": {"host": "cache"}}})
    assert "(authDatabase, ordersDatabase, amqp)" in text
