"""py-consul (PyPI, import name `consul`), unchanged, against a real `weft control`.

Each call the library makes for service registration and discovery, with a token and without.
Run by crates/weft-cli/tests/consul_client.rs, which starts the control plane and passes
WEFT_HOST, WEFT_PORT, WEFT_TOKEN and WEFT_CA_FILE (the root the API's TLS certificate chains to,
as `weft ca --pem` prints it). Prints one line per test and `N passed, N failed`; exits 1
on any failure.
"""

import os
import sys
import threading
import traceback

import consul

HOST, PORT, TOKEN = os.environ["WEFT_HOST"], int(os.environ["WEFT_PORT"]), os.environ["WEFT_TOKEN"]
# The API is on TLS with the control plane's own certificate: verify it against weft's root.
CA = os.environ["WEFT_CA_FILE"]
c = consul.Consul(host=HOST, port=PORT, token=TOKEN, scheme="https", verify=CA)
anon = consul.Consul(host=HOST, port=PORT, scheme="https", verify=CA)
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def register(service_id, tags, ip):
    ok = c.agent.service.register(
        "api", service_id=service_id, address=ip, port=8080, tags=tags, check=consul.Check.ttl("10m")
    )
    assert ok is True, ok


@test
def without_a_token_every_call_is_refused_clearly():
    calls = [
        lambda: anon.agent.services(),
        lambda: anon.catalog.services(),
        lambda: anon.health.service("api"),
        lambda: anon.agent.service.register("api", service_id="x", address="127.0.0.1", port=1),
        lambda: anon.agent.check.ttl_pass("service:x"),
    ]
    for call in calls:
        try:
            call()
        except consul.ACLDisabled as e:  # py-consul's name for a 401
            assert "X-Consul-Token" in str(e), str(e)
        else:
            raise AssertionError("a call without a token was accepted")
    # A token given per call works on a client without one.
    assert isinstance(anon.agent.services(token=TOKEN), dict)


@test
def register_and_list_agent_services_and_checks():
    register("api-green", ["green"], "127.0.0.11")
    register("api-blue", ["blue"], "127.0.0.12")
    # Read your writes: the registration returned once the catalog showed it.
    services = c.agent.services()
    assert services["api-green"]["Service"] == "api", services
    assert services["api-green"]["Tags"] == ["green"], services
    assert services["api-blue"]["Address"] == "127.0.0.12", services
    checks = c.agent.checks()
    assert checks["service:api-green"]["ServiceID"] == "api-green", checks
    assert checks["service:api-green"]["Status"] == "critical", checks


@test
def agent_self_names_the_datacenter_and_node():
    # py-consul sends no token here, even when the client has one: weft serves it without.
    me = c.agent.self()
    assert me["Config"]["Datacenter"] == "local", me
    assert me["Config"]["NodeName"], me
    assert me["Member"]["Name"], me


@test
def ttl_pass_warn_fail_by_consul_check_id_keep_the_note():
    for call, status in [
        (c.agent.check.ttl_warn, "warning"),
        (c.agent.check.ttl_fail, "critical"),
        (c.agent.check.ttl_pass, "passing"),
    ]:
        assert call("service:api-green", f"note {status}") is True
        check = c.agent.checks()["service:api-green"]
        assert (check["Status"], check["Output"]) == (status, f"note {status}"), check


@test
def health_service_passing_and_checks_and_state():
    _, entries = c.health.service("api", passing=True)
    assert [e["Service"]["ID"] for e in entries] == ["api-green"], entries
    assert entries[0]["Checks"][0]["Status"] == "passing", entries
    _, entries = c.health.service("api")
    assert sorted(e["Service"]["ID"] for e in entries) == ["api-blue", "api-green"], entries
    _, checks = c.health.checks("api")
    assert len(checks) == 2, checks
    _, critical = c.health.state("critical")
    assert [x["CheckID"] for x in critical] == ["service:api-blue"], critical
    _, passing = c.health.state("passing")
    assert [x["CheckID"] for x in passing] == ["service:api-green"], passing


@test
def catalog_services_service_nodes_and_tag_filter():
    index, services = c.catalog.services()
    assert int(index) > 0
    assert services["api"] == ["blue", "green"], services
    _, instances = c.catalog.service("api", tag="blue")
    assert [i["ServiceID"] for i in instances] == ["api-blue"], instances
    assert instances[0]["ServiceTags"] == ["blue"], instances
    _, entries = c.health.service("api", tag="green")
    assert [e["Service"]["ID"] for e in entries] == ["api-green"], entries
    _, nodes = c.catalog.nodes()
    assert {"api-blue", "api-green"} <= {n["Node"] for n in nodes}, nodes


@test
def a_blocking_query_returns_when_the_catalog_changes():
    index, _ = c.catalog.services()
    # Nothing changes: the wait runs out, and the index is the same.
    same, _ = c.catalog.services(index=index, wait="200ms")
    assert same == index, (same, index)
    result = {}

    def watch():
        result["answer"] = c.catalog.services(index=index, wait="60s")

    t = threading.Thread(target=watch)
    t.start()
    assert c.agent.service.register("web", service_id="web-1", address="127.0.0.13", port=80) is True
    t.join(timeout=30)
    assert not t.is_alive(), "the blocking query did not return after the catalog changed"
    new_index, services = result["answer"]
    assert int(new_index) > int(index), (new_index, index)
    assert "web" in services, services


@test
def deregister_and_an_empty_service_leaves_the_catalog():
    for sid in ["api-green", "api-blue", "web-1"]:
        assert c.agent.service.deregister(sid) is True
    # A deregistration returns once the catalog shows it, as a Consul agent's does.
    _, services = c.catalog.services()
    assert "api" not in services and "web" not in services, services
    assert c.agent.services() == {}


@test
def what_weft_does_not_serve_is_a_clear_501():
    try:
        c.kv.put("config/db", "x")
    except consul.ConsulException as e:
        assert "501" in str(e) and "not supported" in str(e), str(e)
    else:
        raise AssertionError("KV put was accepted")


def main():
    passed = failed = 0
    for t in TESTS:
        try:
            t()
        except Exception:
            failed += 1
            print(f"FAIL {t.__name__}\n{traceback.format_exc()}", flush=True)
        else:
            passed += 1
            print(f"PASS {t.__name__}", flush=True)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
