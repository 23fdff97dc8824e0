"""Chart tests over `helm template` output, per environment.

Run by scripts/check-chart.sh with HELM (the helm binary) and DAPR_CRDS (the directory of
Dapr's CRDs, from the dapr module) in the environment. Every Kubernetes object is checked
against the Kubernetes JSON schemas (kubernetes-validate, strict, offline), every Dapr
object against the openAPIV3Schema of Dapr's own CRDs, and what must differ per
environment is asserted.
"""

import base64
import glob
import json
import os
import subprocess
import tempfile
import unittest

import jsonschema
import kubernetes_validate
import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "taskmesh")
HELM = os.environ.get("HELM", "helm")
KUBERNETES_VERSION = "1.34.0"
APPS = ["task-service", "notification-service", "recurring-service", "analytics-service"]
ROOT = os.path.join(CHART, "..", "..")
OPS = "taskmesh-ops"
OPS_METHODS = ["stats/get", "notifications/list", "notifications/ack", "preferences/get",
               "preferences/set", "preferences/delete", "deadletters/list", "deadletters/replay",
               "deadletters/discard"]
# What task-service invokes to answer its public notification, preference and stats services.
TASK_SERVICE_INVOKES = ["notifications/list", "notifications/ack", "preferences/get",
                        "preferences/set", "preferences/delete", "stats/get"]
SUBSCRIBERS = ["notification-service", "recurring-service", "analytics-service"]
# daprd's ports, the injector's defaults (Dapr 1.18, pkg/injector/patcher/sidecar.go).
DAPRD_PORTS = [3500, 50001, 50002, 9090]


def render(env, *extra):
    """The objects `helm template` renders for values-<env>.yaml (plus extra args)."""
    out = subprocess.run(
        [HELM, "template", "taskmesh", CHART, "--namespace", "taskmesh",
         "-f", os.path.join(CHART, f"values-{env}.yaml"), *extra],
        check=True, capture_output=True, text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def helm_notes(env, *extra):
    """NOTES.txt as `helm install` prints it (a client-side dry run: no cluster needed)."""
    out = subprocess.run(
        [HELM, "install", "taskmesh", CHART, "--namespace", "taskmesh", "--dry-run=client",
         "-f", os.path.join(CHART, f"values-{env}.yaml"), *extra],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.split("NOTES:", 1)[1]


def helm_fails(*args):
    """The error text when `helm template` refuses the values, else None."""
    result = subprocess.run([HELM, "template", "taskmesh", CHART, *args],
                            capture_output=True, text=True)
    return None if result.returncode == 0 else result.stderr


def by_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def strict(schema):
    """The schema with unknown fields refused wherever it lists its fields: the API server
    would silently prune them, which hides a typo."""
    if isinstance(schema, dict):
        if (schema.get("type") == "object" and "properties" in schema
                and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def dapr_schemas():
    """kind -> openAPIV3Schema of the served version, from Dapr's CRDs (made strict)."""
    schemas = {}
    for path in glob.glob(os.path.join(os.environ["DAPR_CRDS"], "*.yaml")):
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                for version in crd["spec"]["versions"]:
                    if version.get("served"):
                        kind = crd["spec"]["names"]["kind"]
                        schemas[(kind, version["name"])] = strict(version["schema"]["openAPIV3Schema"])
    return schemas


def apps_of(deployments):
    """The four services' Deployments (not taskmesh-ops)."""
    return {name: d for name, d in deployments.items() if name in APPS}


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


class EveryEnvironment(unittest.TestCase):
    def test_objects_match_kubernetes_and_dapr_schemas(self):
        schemas = dapr_schemas()
        self.assertIn(("Component", "v1alpha1"), schemas)
        for env in ["local", "staging", "prod"]:
            for obj in render(env):
                name = f'{env}: {obj["kind"]}/{obj["metadata"]["name"]}'
                with self.subTest(name):
                    api_group = obj["apiVersion"].split("/")[0]
                    if api_group == "dapr.io":
                        version = obj["apiVersion"].split("/")[1]
                        jsonschema.validate(obj, schemas[(obj["kind"], version)])
                    else:
                        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)

    def test_apps_are_annotated_probed_and_locked_down(self):
        for env in ["local", "staging", "prod"]:
            deployments = by_kind(render(env), "Deployment")
            self.assertEqual(sorted(deployments), sorted(APPS + [OPS]))
            for app, deployment in apps_of(deployments).items():
                with self.subTest(f"{env}/{app}"):
                    pod = deployment["spec"]["template"]
                    notes = pod["metadata"]["annotations"]
                    container = pod["spec"]["containers"][0]
                    port = int(env_of(container)["APP_PORT"]["value"])
                    self.assertEqual(notes["dapr.io/enabled"], "true")
                    self.assertEqual(notes["dapr.io/app-id"], app)
                    self.assertEqual(int(notes["dapr.io/app-port"]), port)
                    tls = env == "prod" and app == "task-service"
                    self.assertEqual(notes["dapr.io/app-protocol"], "grpcs" if tls else "grpc")
                    self.assertEqual(notes["dapr.io/config"], "taskmesh")
                    self.assertIn("dapr.io/api-token-secret", notes)
                    # task-service's gRPC port may serve TLS, which gRPC probes cannot do: the
                    # kubelet probes its plaintext health port.
                    probed = 8081 if app == "task-service" else port
                    for probe in ["livenessProbe", "readinessProbe", "startupProbe"]:
                        self.assertEqual(container[probe]["grpc"]["port"], probed, probe)
                    self.assertFalse([k for k in notes if k.startswith("dapr.io/app-health")])
                    security = container["securityContext"]
                    self.assertFalse(security["allowPrivilegeEscalation"])
                    self.assertTrue(security["readOnlyRootFilesystem"])
                    self.assertTrue(security["runAsNonRoot"])
                    drain = int(env_of(container)["TASKMESH_SHUTDOWN_GRACE_SECS"]["value"])
                    self.assertGreater(pod["spec"]["terminationGracePeriodSeconds"], drain)

    def test_apps_export_spans_where_the_sidecars_do(self):
        for env in ["local", "staging", "prod"]:
            objects = render(env)
            tracing = by_kind(objects, "Configuration")["taskmesh"]["spec"]["tracing"]
            collector = tracing.get("otel", {}).get("endpointAddress")
            for app, deployment in apps_of(by_kind(objects, "Deployment")).items():
                with self.subTest(f"{env}/{app}"):
                    container = deployment["spec"]["template"]["spec"]["containers"][0]
                    variables = env_of(container)
                    if collector is None:
                        self.assertNotIn("OTEL_EXPORTER_OTLP_ENDPOINT", variables)
                        continue
                    self.assertEqual(variables["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"],
                                     f"http://{collector}")
                    self.assertEqual(variables["OTEL_TRACES_SAMPLER_ARG"]["value"],
                                     tracing["samplingRate"])
        self.assertIn("otel", by_kind(render("prod"), "Configuration")["taskmesh"]["spec"]["tracing"])

    def test_secrets_are_referenced_never_inlined(self):
        for env in ["local", "staging", "prod"]:
            objects = render(env)
            # The only Secrets the chart makes: the apps' Dapr tokens.
            self.assertEqual(sorted(by_kind(objects, "Secret")),
                             sorted(f"{app}-dapr-token" for app in APPS + [OPS]))
            task = by_kind(objects, "Deployment")["task-service"]["spec"]["template"]
            env_vars = env_of(task["spec"]["containers"][0])
            for name in ["DATABASE_URL", "TASKMESH_JWT_SECRET", "DAPR_API_TOKEN"]:
                self.assertIn("secretKeyRef", env_vars[name]["valueFrom"], name)
                self.assertNotIn("value", env_vars[name])
            for component in by_kind(objects, "Component").values():
                for item in component["spec"].get("metadata") or []:
                    if any(word in item["name"].lower() for word in ["password", "username", "user"]):
                        self.assertIn("secretKeyRef", item, f'{component["metadata"]["name"]}.{item["name"]}')

    def test_components_are_scoped_to_the_apps_that_use_them(self):
        components = by_kind(render("prod"), "Component")
        self.assertEqual(components["taskmesh-state"]["scopes"],
                         ["notification-service", "recurring-service", "analytics-service"])
        self.assertEqual(components["taskmesh-email"]["scopes"], ["notification-service"])
        self.assertEqual(components["taskmesh-webhook"]["scopes"], ["notification-service"])
        self.assertEqual(sorted(components["taskmesh-pubsub"]["scopes"]), sorted(APPS))
        state = {m["name"]: m for m in components["taskmesh-state"]["spec"]["metadata"]}
        self.assertEqual(state["actorStateStore"]["value"], "false")

    def test_access_control_allows_only_listed_callers_and_operations(self):
        config = by_kind(render("prod"), "Configuration")["taskmesh"]["spec"]
        acl = config["accessControl"]
        self.assertEqual(acl["defaultAction"], "deny")
        policies = {p["appId"]: p for p in acl["policies"]}
        self.assertEqual(sorted(policies), ["recurring-service", "task-service", OPS])
        for policy in policies.values():
            self.assertEqual(policy["defaultAction"], "deny")
            self.assertEqual(policy["namespace"], "taskmesh")
            self.assertEqual(policy["trustDomain"], acl["trustDomain"])
            self.assertTrue(all(op["action"] == "allow" for op in policy["operations"]))
        self.assertEqual([op["name"] for op in policies["recurring-service"]["operations"]],
                         ["/taskmesh.tasks.v1.TaskService/CreateTask"])
        # task-service, the public address: exactly what its public notification, preference
        # and stats services forward, spelled as the operators' caller's are.
        self.assertEqual(sorted(op["name"] for op in policies["task-service"]["operations"]),
                         sorted("/" + m for m in TASK_SERVICE_INVOKES))
        # The operators' caller: exactly the operator methods, no wildcard.
        ops_methods = [op["name"] for op in policies[OPS]["operations"]]
        self.assertEqual(ops_methods, ["/" + m for m in OPS_METHODS])
        self.assertFalse(any("*" in m for m in ops_methods))
        resiliency = by_kind(render("prod"), "Resiliency")["taskmesh"]["spec"]
        inbound = resiliency["targets"]["components"]["taskmesh-pubsub"]["inbound"]
        # No breaker: an open one loses dead letters on Redis Streams (dapr-resiliency.yaml).
        self.assertEqual(set(inbound), {"retry"})
        self.assertIn("task-service", resiliency["targets"]["apps"])

    def test_the_operator_methods_are_ones_the_services_register(self):
        sources = ""
        # The services' own methods, and the router's that every subscriber answers
        # (shared/src/callback: deadletters/*).
        paths = glob.glob(os.path.join(ROOT, "services", "*", "src", "**", "*.rs"), recursive=True)
        paths += glob.glob(os.path.join(ROOT, "shared", "src", "callback", "*.rs"))
        for path in paths:
            with open(path) as f:
                sources += f.read()
        for method in OPS_METHODS + TASK_SERVICE_INVOKES:
            self.assertIn(f'"{method}"', sources, method)

    def test_the_operators_caller_is_a_sidecar_with_no_app(self):
        for env in ["local", "staging", "prod"]:
            objects = render(env)
            with self.subTest(env):
                ops = by_kind(objects, "Deployment")[OPS]
                pod = ops["spec"]["template"]
                notes = pod["metadata"]["annotations"]
                self.assertEqual(notes["dapr.io/app-id"], OPS)
                self.assertEqual(notes["dapr.io/config"], "taskmesh")
                self.assertIn("dapr.io/api-token-secret", notes)
                self.assertNotIn("dapr.io/app-port", notes)
                self.assertEqual(notes["dapr.io/disable-builtin-k8s-secret-store"], "true")
                self.assertNotIn("dapr.io/volume-mounts", notes)
                self.assertEqual(pod["spec"]["serviceAccountName"], OPS)
                self.assertFalse(pod["spec"]["automountServiceAccountToken"])
                self.assertNotIn("volumes", pod["spec"])
                container = pod["spec"]["containers"][0]
                self.assertNotIn("ports", container)
                self.assertTrue(container["securityContext"]["readOnlyRootFilesystem"])
                # It loads no component: none is scoped to it.
                for component in by_kind(objects, "Component").values():
                    self.assertNotIn(OPS, component.get("scopes") or [])
                self.assertNotIn(OPS, by_kind(objects, "Service"))

    def test_without_ops_no_app_may_invoke_the_operator_methods(self):
        objects = render("prod", "--set", "ops.enabled=false")
        self.assertNotIn(OPS, by_kind(objects, "Deployment"))
        self.assertNotIn(OPS, by_kind(objects, "ServiceAccount"))
        acl = by_kind(objects, "Configuration")["taskmesh"]["spec"]["accessControl"]
        self.assertEqual([p["appId"] for p in acl["policies"]], ["task-service", "recurring-service"])
        self.assertNotIn(f"{OPS}-dapr-token", by_kind(objects, "Secret"))
        self.assertNotIn(OPS, by_kind(objects, "NetworkPolicy"))

    def test_every_pod_has_its_own_service_account_and_no_token_in_the_app(self):
        for env in ["local", "staging", "prod"]:
            objects = render(env)
            accounts = by_kind(objects, "ServiceAccount")
            with self.subTest(env):
                self.assertEqual(sorted(accounts), sorted(APPS + [OPS]))
                for account in accounts.values():
                    self.assertFalse(account["automountServiceAccountToken"])
                roles = by_kind(objects, "Role")
                for app in APPS:
                    pod = by_kind(objects, "Deployment")[app]["spec"]["template"]
                    notes = pod["metadata"]["annotations"]
                    self.assertEqual(pod["spec"]["serviceAccountName"], app)
                    self.assertFalse(pod["spec"]["automountServiceAccountToken"])
                    # The built-in `kubernetes` store would need a token in every sidecar.
                    self.assertEqual(notes["dapr.io/disable-builtin-k8s-secret-store"], "true")
                    for container in pod["spec"]["containers"]:
                        for mount in container.get("volumeMounts", []):
                            self.assertNotEqual(mount["name"], "kube-api-token")
                            self.assertNotIn("serviceaccount", mount["mountPath"])
                    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
                    daprd_mounts = notes.get("dapr.io/volume-mounts", "").split(",")
                    if f"{app}-secrets" in roles:
                        # daprd alone gets the API token, CA and namespace.
                        self.assertIn("kube-api-token:/var/run/secrets/kubernetes.io/serviceaccount",
                                      daprd_mounts)
                        sources = volumes["kube-api-token"]["projected"]["sources"]
                        self.assertIn("serviceAccountToken", sources[0])
                        self.assertEqual(sources[1]["configMap"]["name"], "kube-root-ca.crt")
                    else:
                        self.assertFalse([m for m in daprd_mounts if m.startswith("kube-api-token:")])
                        self.assertNotIn("kube-api-token", volumes)

    def test_each_app_may_read_exactly_its_components_secrets(self):
        for env in ["local", "staging", "prod"]:
            objects = render(env)
            components = by_kind(objects, "Component")
            # What each sidecar must read: the secretKeyRefs of the components it loads.
            expected = {}
            for name, component in components.items():
                refs = {m["secretKeyRef"]["name"] for m in component["spec"].get("metadata") or []
                        if "secretKeyRef" in m}
                if not refs:
                    self.assertNotIn("auth", component, name)
                    continue
                self.assertEqual(component["auth"]["secretStore"], "taskmesh-secrets", name)
                for app in component["scopes"]:
                    expected.setdefault(app, set()).update(refs)
            roles = by_kind(objects, "Role")
            bindings = by_kind(objects, "RoleBinding")
            with self.subTest(env):
                self.assertEqual(by_kind(objects, "ClusterRole"), {})
                self.assertEqual(by_kind(objects, "ClusterRoleBinding"), {})
                self.assertEqual(sorted(roles), sorted(f"{app}-secrets" for app in expected))
                self.assertEqual(sorted(bindings), sorted(roles))
                for app, secrets in expected.items():
                    role = roles[f"{app}-secrets"]
                    self.assertEqual(role["rules"], [{
                        "apiGroups": [""], "resources": ["secrets"],
                        "resourceNames": sorted(secrets), "verbs": ["get"]}])
                    binding = bindings[f"{app}-secrets"]
                    self.assertEqual(binding["roleRef"],
                                     {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": f"{app}-secrets"})
                    self.assertEqual(binding["subjects"], [
                        {"kind": "ServiceAccount", "name": app, "namespace": "taskmesh"}])
                store = components.get("taskmesh-secrets")
                if expected:
                    self.assertEqual(sorted(store["scopes"]), sorted(expected))
                    scopes = by_kind(objects, "Configuration")["taskmesh"]["spec"]["secrets"]["scopes"]
                    self.assertEqual(scopes, [{"storeName": "taskmesh-secrets", "defaultAccess": "deny"}])
                else:
                    self.assertIsNone(store)
        # Spelled out for prod, where every kind of credential is in use.
        roles = by_kind(render("prod"), "Role")
        self.assertEqual({name: role["rules"][0]["resourceNames"] for name, role in roles.items()}, {
            "task-service-secrets": ["taskmesh-redpanda"],
            "notification-service-secrets": ["taskmesh-redis", "taskmesh-redpanda", "taskmesh-smtp"],
            "recurring-service-secrets": ["taskmesh-redis", "taskmesh-redpanda"],
            "analytics-service-secrets": ["taskmesh-redis", "taskmesh-redpanda"],
        })

    def test_migrations_run_as_a_hook_job_that_reads_only_the_database_url(self):
        for env in ["local", "staging", "prod"]:
            job = by_kind(render(env), "Job")["task-service-migrate"]
            with self.subTest(env):
                self.assertEqual(job["metadata"]["annotations"]["helm.sh/hook"],
                                 "pre-install,pre-upgrade")
                pod = job["spec"]["template"]["spec"]
                # Hooks run before the release's objects exist: the namespace's default
                # account, with no token, not one of the chart's.
                self.assertNotIn("serviceAccountName", pod)
                self.assertFalse(pod["automountServiceAccountToken"])
                container = pod["containers"][0]
                self.assertEqual(container["args"], ["migrate"])
                variables = env_of(container)
                secret_refs = {name: v["valueFrom"]["secretKeyRef"] for name, v in variables.items()
                               if "valueFrom" in v}
                self.assertEqual(secret_refs, {"DATABASE_URL": {"name": "taskmesh", "key": "database-url"}})
                self.assertLessEqual(set(variables), {"DATABASE_URL", "TASKMESH_LOG_FORMAT", "RUST_LOG"})

    def test_notes_show_commands_that_work_in_kubernetes(self):
        notes = helm_notes("prod")
        self.assertNotIn("dapr invoke", notes)
        self.assertIn("port-forward deploy/taskmesh-ops 3500:3500", notes)
        self.assertIn("localhost:3500/v1.0/invoke/analytics-service/method/stats/get", notes)
        self.assertIn("dapr-api-token: $TOKEN", notes)
        self.assertIn("secret taskmesh-ops-dapr-token", notes)
        self.assertNotIn("taskmesh-dapr-api-token", notes)
        self.assertNotIn("taskmesh-ops", helm_notes("prod", "--set", "ops.enabled=false"))


class WhatDiffersPerEnvironment(unittest.TestCase):
    def test_replicas_and_disruption_budgets(self):
        for env, replicas, pdbs in [("local", 1, 0), ("staging", 2, 4), ("prod", 3, 4)]:
            objects = render(env)
            with self.subTest(env):
                deployments = by_kind(objects, "Deployment")
                for deployment in apps_of(deployments).values():
                    self.assertEqual(deployment["spec"]["replicas"], replicas)
                self.assertEqual(deployments[OPS]["spec"]["replicas"], 1)
                self.assertEqual(len(by_kind(objects, "PodDisruptionBudget")), pdbs)

    def test_sasl_and_tls_only_in_prod(self):
        for env in ["local", "staging", "prod"]:
            components = by_kind(render(env), "Component")
            pubsub = {m["name"]: m for m in components["taskmesh-pubsub"]["spec"]["metadata"]}
            state = {m["name"]: m for m in components["taskmesh-state"]["spec"]["metadata"]}
            with self.subTest(env):
                self.assertEqual(pubsub["version"]["value"], "3.9.0")
                if env == "prod":
                    self.assertEqual(pubsub["authType"]["value"], "password")
                    self.assertEqual(pubsub["saslMechanism"]["value"], "SHA-256")
                    self.assertEqual(pubsub["saslPassword"]["secretKeyRef"]["name"], "taskmesh-redpanda")
                    self.assertEqual(pubsub["disableTls"]["value"], "false")
                    self.assertEqual(state["enableTLS"]["value"], "true")
                    self.assertIn("secretKeyRef", state["redisPassword"])
                else:
                    self.assertEqual(pubsub["authType"]["value"], "none")
                    self.assertNotIn("saslPassword", pubsub)
                    self.assertEqual(state["enableTLS"]["value"], "false")
                    self.assertNotIn("redisPassword", state)


class ASelfBuiltNode(unittest.TestCase):
    """values-k8s-node.yaml, as `just test-k8s` installs it on top of an environment."""

    def test_local_images_never_pulled_and_only_the_api_on_a_node_port(self):
        node = os.path.join(CHART, "values-k8s-node.yaml")
        for env in ["local", "prod"]:
            objects = render(env, "-f", node)
            with self.subTest(env):
                for name, deployment in apps_of(by_kind(objects, "Deployment")).items():
                    app = deployment["spec"]["template"]["spec"]["containers"][0]
                    self.assertEqual(app["image"], f"localhost:5000/taskmesh/{name}:dev")
                    self.assertEqual(app["imagePullPolicy"], "IfNotPresent")
                services = by_kind(objects, "Service")
                self.assertEqual(services["task-service"]["spec"]["type"], "NodePort")
                ports = {p["name"]: p for p in services["task-service"]["spec"]["ports"]}
                self.assertEqual(ports["grpc"]["nodePort"], 30051)
                self.assertNotIn("nodePort", ports["metrics"])
                for app in APPS[1:]:
                    self.assertNotIn("type", services[app]["spec"])
        for service in by_kind(render("local"), "Service").values():
            self.assertNotIn("type", service["spec"])


class TheSidecarsTrustAPrivateCA(unittest.TestCase):
    def test_the_ca_secret_is_optional_and_mounted_into_daprd_only(self):
        deployments = by_kind(render("prod"), "Deployment")
        for name, deployment in apps_of(deployments).items():
            pod = deployment["spec"]["template"]
            annotations = pod["metadata"]["annotations"]
            with self.subTest(name):
                self.assertIn("trusted-ca:/var/run/secrets/taskmesh/trusted-ca",
                              annotations["dapr.io/volume-mounts"].split(","))
                self.assertEqual(annotations["dapr.io/env"],
                                 "SSL_CERT_DIR=/etc/ssl/certs:/var/run/secrets/taskmesh/trusted-ca")
                volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
                self.assertEqual(volumes["trusted-ca"]["secret"],
                                 {"secretName": "taskmesh-ca", "optional": True,
                                  "items": [{"key": "ca.crt", "path": "ca.crt"}]})
                mounts = [m["name"] for m in pod["spec"]["containers"][0].get("volumeMounts", [])]
                self.assertNotIn("trusted-ca", mounts)
        ops = deployments[OPS]["spec"]["template"]["metadata"]["annotations"]
        self.assertNotIn("dapr.io/env", ops)
        for deployment in apps_of(by_kind(render("local"), "Deployment")).values():
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            self.assertNotIn("dapr.io/env", annotations)
            self.assertNotIn("dapr.io/volume-mounts", annotations)

class TheSidecarsAnswerInvocations(unittest.TestCase):
    def test_no_app_has_a_concurrency_limit_that_hangs_dapr_1_18_invocations(self):
        # Dapr 1.18.1 releases the app channel's slot twice per invocation: with
        # app-max-concurrency set, every `invoke` of the app hangs (found on a real node).
        for env in ["local", "staging", "prod"]:
            for name, deployment in apps_of(by_kind(render(env), "Deployment")).items():
                with self.subTest(env=env, app=name):
                    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
                    self.assertNotIn("dapr.io/app-max-concurrency", annotations)

class TheImagesHoldTheReleaseBinaries(unittest.TestCase):
    def test_every_app_is_a_workspace_binary_the_dockerfile_builds(self):
        root = ROOT
        metadata = json.loads(subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1"],
            cwd=root, check=True, capture_output=True, text=True).stdout)
        binaries = {t["name"] for p in metadata["packages"] for t in p["targets"]
                    if "bin" in t["kind"]}
        self.assertLessEqual(set(APPS), binaries)
        with open(os.path.join(root, "Dockerfile")) as f:
            dockerfile = f.read()
        self.assertIn('cargo build --release --locked --bin "${SERVICE}"', dockerfile)
        self.assertIn('"target/release/${SERVICE}"', dockerfile)
        self.assertIn("STOPSIGNAL SIGTERM", dockerfile)
        self.assertIn("USER 10001", dockerfile)


def secret_refs(pod_spec):
    """Every Secret a pod spec references: env secretKeyRefs, envFrom, secret volumes."""
    names = set()
    for container in pod_spec["containers"]:
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                names.add(source["secretRef"]["name"])
    for volume in pod_spec.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


class EachAppHasItsOwnToken(unittest.TestCase):
    def test_every_pod_uses_its_own_token_secret_and_no_other(self):
        for env in ["local", "staging", "prod"]:
            objects = render(env)
            secrets = by_kind(objects, "Secret")
            tokens = {f"{app}-dapr-token" for app in APPS + [OPS]}
            for name, deployment in by_kind(objects, "Deployment").items():
                with self.subTest(env=env, app=name):
                    pod = deployment["spec"]["template"]
                    notes = pod["metadata"]["annotations"]
                    own = f"{name}-dapr-token"
                    self.assertEqual(notes["dapr.io/api-token-secret"], own)
                    if name == OPS:
                        self.assertNotIn("dapr.io/app-token-secret", notes)
                    else:
                        self.assertEqual(notes["dapr.io/app-token-secret"], own)
                        variables = env_of(pod["spec"]["containers"][0])
                        for variable in ["DAPR_API_TOKEN", "APP_API_TOKEN"]:
                            self.assertEqual(variables[variable]["valueFrom"]["secretKeyRef"],
                                             {"name": own, "key": "token"})
                    self.assertEqual(secret_refs(pod["spec"]) & tokens, set() if name == OPS else {own})
            for name in tokens:
                with self.subTest(env=env, secret=name):
                    secret = secrets[name]
                    self.assertEqual(secret["type"], "Opaque")
                    self.assertEqual(list(secret["data"]), ["token"])
                    token = base64.b64decode(secret["data"]["token"]).decode()
                    self.assertEqual(len(token), 48)
                    self.assertTrue(token.isalnum())
                    self.assertEqual(secret["metadata"]["labels"]["app.kubernetes.io/name"],
                                     name.removesuffix("-dapr-token"))
            # Random per token, never one value shared.
            values = {secrets[name]["data"]["token"] for name in tokens}
            self.assertEqual(len(values), len(tokens))

    def test_the_shared_token_is_gone(self):
        for env in ["local", "staging", "prod"]:
            out = subprocess.run(
                [HELM, "template", "taskmesh", CHART, "-f", os.path.join(CHART, f"values-{env}.yaml")],
                check=True, capture_output=True, text=True).stdout
            self.assertNotIn("taskmesh-dapr-api-token", out)
        self.assertIsNotNone(helm_fails("--set", "dapr.apiTokenSecret=taskmesh-dapr-api-token"))

    def test_a_secret_of_the_users_per_app(self):
        objects = render("prod", "--set", "dapr.tokenSecrets.task-service=my-task-token")
        self.assertNotIn("task-service-dapr-token", by_kind(objects, "Secret"))
        self.assertIn("analytics-service-dapr-token", by_kind(objects, "Secret"))
        pod = by_kind(objects, "Deployment")["task-service"]["spec"]["template"]
        self.assertEqual(pod["metadata"]["annotations"]["dapr.io/api-token-secret"], "my-task-token")
        self.assertEqual(pod["metadata"]["annotations"]["dapr.io/app-token-secret"], "my-task-token")
        self.assertEqual(env_of(pod["spec"]["containers"][0])["DAPR_API_TOKEN"]["valueFrom"]
                         ["secretKeyRef"]["name"], "my-task-token")

    def test_no_two_apps_share_a_token_secret(self):
        for extra in [["--set", "dapr.tokenSecrets.task-service=shared",
                       "--set", "dapr.tokenSecrets.analytics-service=shared"],
                      ["--set", "dapr.tokenSecrets.taskmesh-ops=task-service-dapr-token"]]:
            with self.subTest(extra):
                self.assertIn("every app needs a Secret of its own", helm_fails(*extra) or "")


class TrustedCallers(unittest.TestCase):
    def test_task_service_and_the_subscribers_name_who_may_act_for_a_user(self):
        for env in ["local", "staging", "prod"]:
            deployments = by_kind(render(env), "Deployment")
            with self.subTest(env):
                task = env_of(deployments["task-service"]["spec"]["template"]["spec"]["containers"][0])
                self.assertEqual(task["TASKMESH_TRUSTED_CALLERS"]["value"], "recurring-service=CreateTask")
                for app in SUBSCRIBERS:
                    variables = env_of(deployments[app]["spec"]["template"]["spec"]["containers"][0])
                    self.assertEqual(variables["TASKMESH_TRUSTED_CALLERS"]["value"],
                                     "task-service;taskmesh-ops")
        objects = render("local", "--set", "taskService.trustedCallers=recurring-service=CreateTask\\,GetTask")
        task = by_kind(objects, "Deployment")["task-service"]["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(env_of(task)["TASKMESH_TRUSTED_CALLERS"]["value"],
                         "recurring-service=CreateTask,GetTask")
        self.assertIsNotNone(helm_fails("--set", "taskService.trustedCallers=recurring-service"))


def scoped_topics(value, app):
    """Dapr's scopes.GetScopedTopics: the topics `app` has in a `app=t1,t2;app2=` string."""
    topics = []
    for entry in value.replace(" ", "").split(";"):
        parts = entry.split("=")
        if len(parts) >= 2 and parts[0] == app:
            topics += [t for t in parts[1].split(",") if t not in topics]
    return topics


def operation_allowed(topic, protected, scoped):
    """Dapr's pubsub.IsOperationAllowed (pkg/runtime/pubsub/adapter.go, no allowedTopics)."""
    if topic not in protected and not scoped:
        return True
    return topic in scoped


class PubsubTopicScopes(unittest.TestCase):
    def allowed(self, component, operation, app, topic):
        metadata = {m["name"]: m.get("value") for m in component["spec"]["metadata"]}
        protected = [t for t in metadata["protectedTopics"].split(",") if t]
        scope = metadata["publishingScopes" if operation == "publish" else "subscriptionScopes"]
        return operation_allowed(topic, protected, scoped_topics(scope, app))

    def test_who_may_publish_and_subscribe_to_what(self):
        dl = {app: "task-events-deadletter." + app for app in SUBSCRIBERS}
        publish = {"task-service": {"task-events"},
                   "notification-service": {"task-reminders", dl["notification-service"]},
                   "recurring-service": {dl["recurring-service"]},
                   "analytics-service": {dl["analytics-service"]},
                   OPS: set()}
        # Each subscriber reads its own dead letters, and nobody else's.
        subscribe = {"task-service": set(),
                     "notification-service": {"task-events", "task-reminders",
                                              dl["notification-service"]},
                     "recurring-service": {"task-events", dl["recurring-service"]},
                     "analytics-service": {"task-events", dl["analytics-service"]},
                     OPS: set()}
        topics = ["task-events", "task-reminders"] + list(dl.values())
        for env in ["local", "staging", "prod"]:
            pubsub = by_kind(render(env), "Component")["taskmesh-pubsub"]
            metadata = {m["name"]: m.get("value") for m in pubsub["spec"]["metadata"]}
            self.assertEqual(metadata["protectedTopics"].split(","), topics)
            for app in APPS + [OPS, "someone-else"]:
                for topic in topics:
                    with self.subTest(env=env, app=app, topic=topic):
                        self.assertEqual(self.allowed(pubsub, "publish", app, topic),
                                         topic in publish.get(app, set()))
                        self.assertEqual(self.allowed(pubsub, "subscribe", app, topic),
                                         topic in subscribe.get(app, set()))

    def test_the_topic_names_come_from_the_values(self):
        pubsub = by_kind(render("local", "--set", "topics.taskEvents=ev", "--set", "topics.reminders=rem",
                                "--set", "topics.deadLetter=dl"), "Component")["taskmesh-pubsub"]
        metadata = {m["name"]: m.get("value") for m in pubsub["spec"]["metadata"]}
        self.assertEqual(metadata["protectedTopics"],
                         "ev,rem,dl.notification-service,dl.recurring-service,dl.analytics-service")
        self.assertEqual(metadata["publishingScopes"],
                         "task-service=ev;notification-service=rem,dl.notification-service;"
                         "recurring-service=dl.recurring-service;"
                         "analytics-service=dl.analytics-service;taskmesh-ops=")
        self.assertEqual(metadata["subscriptionScopes"],
                         "task-service=;notification-service=ev,rem,dl.notification-service;"
                         "recurring-service=ev,dl.recurring-service;"
                         "analytics-service=ev,dl.analytics-service;taskmesh-ops=")
        self.assertIn("three different topics", helm_fails("--set", "topics.deadLetter=task-events") or "")

    def test_the_local_components_carry_the_charts_scopes_and_retries(self):
        # dapr/ (just up, the integration tests) writes by hand what the chart renders.
        scopes = ["protectedTopics", "publishingScopes", "subscriptionScopes"]
        objects = render("local")
        chart = by_kind(objects, "Component")["taskmesh-pubsub"]["spec"]["metadata"]
        chart = {m["name"]: m.get("value") for m in chart if m["name"] in scopes}
        for broker in ["redis", "kafka"]:
            with open(os.path.join(ROOT, "dapr", "pubsub", broker, "pubsub.yaml")) as f:
                local = yaml.safe_load(f)["spec"]["metadata"]
            with self.subTest(broker=broker):
                self.assertEqual({m["name"]: m.get("value") for m in local if m["name"] in scopes},
                                 chart)
        with open(os.path.join(ROOT, "dapr", "components", "resiliency.yaml")) as f:
            local = yaml.safe_load(f)["spec"]
        chart = by_kind(objects, "Resiliency")["taskmesh"]["spec"]
        self.assertEqual(local["policies"]["retries"]["eventDelivery"],
                         chart["policies"]["retries"]["eventDelivery"])
        self.assertEqual(local["targets"]["components"]["taskmesh-pubsub"]["inbound"],
                         chart["targets"]["components"]["taskmesh-pubsub"]["inbound"])


class DaprMtlsIsRequired(unittest.TestCase):
    def test_prod_refuses_to_go_without(self):
        error = helm_fails("-f", os.path.join(CHART, "values-prod.yaml"), "--set", "dapr.requireMtls=false")
        self.assertIn("dapr.requireMtls: false is refused in prod", error or "")
        self.assertIsNone(helm_fails("-f", os.path.join(CHART, "values-staging.yaml"),
                                     "--set", "dapr.requireMtls=false"))
        self.assertIsNone(helm_fails("-f", os.path.join(CHART, "values-prod.yaml")))


def rules_for(policy, port):
    """The ingress rules of a NetworkPolicy that admit TCP `port`: a list of `from` lists,
    None meaning any source."""
    found = []
    for rule in policy["spec"].get("ingress") or []:
        ports = rule.get("ports")
        if ports is None or any(p.get("protocol", "TCP") == "TCP" and p.get("port") == port for p in ports):
            found.append(rule.get("from"))
    return found


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()) \
        and not selector.get("matchExpressions")


class NetworkPolicies(unittest.TestCase):
    DAPR_PEERS = [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "taskmesh"}}},
                  {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dapr-system"}}}]

    def test_one_ingress_policy_per_pod_with_the_rules_of_the_readme(self):
        for env in ["local", "staging", "prod"]:
            objects = render(env)
            policies = by_kind(objects, "NetworkPolicy")
            deployments = by_kind(objects, "Deployment")
            self.assertEqual(sorted(policies), sorted(deployments))
            for name, deployment in deployments.items():
                with self.subTest(env=env, pod=name):
                    policy = policies[name]
                    labels = deployment["spec"]["template"]["metadata"]["labels"]
                    self.assertTrue(selects(policy["spec"]["podSelector"], labels))
                    # It selects this Deployment's pods and no other's.
                    for other, d in deployments.items():
                        if other != name:
                            self.assertFalse(selects(policy["spec"]["podSelector"],
                                                     d["spec"]["template"]["metadata"]["labels"]))
                    self.assertEqual(policy["spec"]["policyTypes"], ["Ingress"])
                    # Every daprd port: the Taskmesh pods (all of them) and the control plane.
                    for port in DAPRD_PORTS:
                        peers = [p for rule in rules_for(policy, port) for p in (rule or [{"any": 1}])]
                        for peer in self.DAPR_PEERS:
                            self.assertIn(peer, peers, port)
                    for d in deployments.values():
                        self.assertTrue(selects(self.DAPR_PEERS[0]["podSelector"],
                                                d["spec"]["template"]["metadata"]["labels"]))
                    if name == OPS:
                        continue
                    container = deployment["spec"]["template"]["spec"]["containers"][0]
                    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                    # Metrics: any pod in the namespace, no wider.
                    self.assertEqual(rules_for(policy, ports["metrics"]), [[{"podSelector": {}}]])
                    self.assertIn([{"podSelector": {}}], rules_for(policy, 9090))
                    if name == "task-service":
                        # The public API from anywhere; the kubelet's health port has no rule.
                        self.assertEqual(rules_for(policy, ports["grpc"]), [None])
                        self.assertEqual(rules_for(policy, ports["health"]), [])
                    else:
                        # Only the pod's own sidecar, over localhost: no rule at all.
                        self.assertEqual(rules_for(policy, ports["grpc"]), [], name)
                    # Nothing else is open.
                    opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
                    want = set(DAPRD_PORTS) | {ports["metrics"]}
                    if name == "task-service":
                        want.add(ports["grpc"])
                    self.assertEqual(opened, want)

    def test_the_sources_come_from_the_values(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            json.dump({"networkPolicy": {
                "apiFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
                "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
                "dapr": {"controlPlaneNamespace": "dapr"}}, f)
        policies = by_kind(render("prod", "-f", f.name), "NetworkPolicy")
        ingress = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}]
        monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        self.assertEqual(rules_for(policies["task-service"], 50051), [ingress])
        self.assertEqual(rules_for(policies["analytics-service"], 9104), [monitoring])
        self.assertIn({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dapr"}}},
                      rules_for(policies["analytics-service"], 50002)[0])
        self.assertEqual(by_kind(render("prod", "--set", "networkPolicy.enabled=false"), "NetworkPolicy"), {})

    def test_egress_restricted_only_on_request(self):
        for policy in by_kind(render("prod"), "NetworkPolicy").values():
            self.assertNotIn("egress", policy["spec"])
        database = {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 5432}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            json.dump({"networkPolicy": {"restrictEgress": True, "egressTo": [database]}}, f)
        objects = render("prod", "-f", f.name)
        for name, policy in by_kind(objects, "NetworkPolicy").items():
            with self.subTest(name):
                spec = policy["spec"]
                self.assertEqual(spec["policyTypes"], ["Ingress", "Egress"])
                egress = spec["egress"]
                dns = egress[0]
                self.assertEqual(dns["to"], [{"namespaceSelector": {},
                                              "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}])
                self.assertEqual({(p["protocol"], p["port"]) for p in dns["ports"]}, {("UDP", 53), ("TCP", 53)})
                self.assertEqual(egress[1], {"to": [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": "dapr-system"}}}]})
                self.assertEqual(egress[2], {"to": [self.DAPR_PEERS[0]],
                                             "ports": [{"protocol": "TCP", "port": 50002}]})
                self.assertEqual(egress[3:], [database])
                # Ingress is unchanged.
                self.assertEqual(spec["ingress"], by_kind(render("prod"), "NetworkPolicy")[name]["spec"]["ingress"])


class TLSOnThePublicPort(unittest.TestCase):
    def test_prod_serves_tls_with_the_secret_mounted_into_task_service_only(self):
        objects = render("prod")
        deployments = by_kind(objects, "Deployment")
        pod = deployments["task-service"]["spec"]["template"]
        container = pod["spec"]["containers"][0]
        variables = env_of(container)
        self.assertEqual(variables["TASKMESH_TLS_CERT"]["value"], "/etc/taskmesh/tls/tls.crt")
        self.assertEqual(variables["TASKMESH_TLS_KEY"]["value"], "/etc/taskmesh/tls/tls.key")
        self.assertEqual(variables["TASKMESH_HEALTH_PORT"]["value"], "8081")
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        self.assertEqual(volumes["api-tls"]["secret"]["secretName"], "taskmesh-api-tls")
        self.assertEqual({i["key"] for i in volumes["api-tls"]["secret"]["items"]}, {"tls.crt", "tls.key"})
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        self.assertEqual(mounts["api-tls"], {"name": "api-tls", "mountPath": "/etc/taskmesh/tls", "readOnly": True})
        # daprd does not get it (the annotation mounts nothing of it), nor does any other pod.
        self.assertNotIn("api-tls", pod["metadata"]["annotations"].get("dapr.io/volume-mounts", ""))
        self.assertEqual(pod["metadata"]["annotations"]["dapr.io/app-protocol"], "grpcs")
        for name, deployment in deployments.items():
            if name != "task-service":
                self.assertNotIn("taskmesh-api-tls", secret_refs(deployment["spec"]["template"]["spec"]))
        service = by_kind(objects, "Service")["task-service"]
        self.assertEqual([p["port"] for p in service["spec"]["ports"]], [50051, 9101])
        self.assertEqual(service["spec"]["ports"][0]["appProtocol"], "https")

    def test_plaintext_without_a_secret(self):
        for env in ["local", "staging"]:
            objects = render(env)
            pod = by_kind(objects, "Deployment")["task-service"]["spec"]["template"]
            variables = env_of(pod["spec"]["containers"][0])
            with self.subTest(env):
                self.assertNotIn("TASKMESH_TLS_CERT", variables)
                self.assertEqual(variables["TASKMESH_HEALTH_PORT"]["value"], "8081")
                self.assertNotIn("api-tls", {v["name"] for v in pod["spec"]["volumes"]})
                self.assertEqual(pod["metadata"]["annotations"]["dapr.io/app-protocol"], "grpc")
                service = by_kind(objects, "Service")["task-service"]
                self.assertEqual(service["spec"]["ports"][0]["appProtocol"], "grpc")


class ClientIdentityAndLimits(unittest.TestCase):
    def task_env(self, env, *extra):
        deployment = by_kind(render(env, *extra), "Deployment")["task-service"]
        return env_of(deployment["spec"]["template"]["spec"]["containers"][0])

    def test_jwks_issuer_and_audience(self):
        for env in ["local", "staging", "prod"]:
            variables = self.task_env(env)
            for name in ["TASKMESH_JWT_JWKS_URL", "TASKMESH_JWT_ISSUER", "TASKMESH_JWT_AUDIENCE"]:
                self.assertNotIn(name, variables)
            self.assertEqual(variables["TASKMESH_JWT_SECRET"]["valueFrom"]["secretKeyRef"],
                             {"name": "taskmesh", "key": "jwt-secret"})
        jwks = ["--set", "auth.jwt.jwksUrl=https://idp.example.com/.well-known/jwks.json"]
        both = ["--set", "auth.jwt.issuer=https://idp.example.com/", "--set", "auth.jwt.audience=taskmesh"]
        variables = self.task_env("prod", *jwks, *both)
        self.assertEqual(variables["TASKMESH_JWT_JWKS_URL"]["value"], "https://idp.example.com/.well-known/jwks.json")
        self.assertEqual(variables["TASKMESH_JWT_ISSUER"]["value"], "https://idp.example.com/")
        self.assertEqual(variables["TASKMESH_JWT_AUDIENCE"]["value"], "taskmesh")
        # With a JWKS there is no shared HS256 key that could sign for anyone (the service
        # refuses to start with both).
        self.assertNotIn("TASKMESH_JWT_SECRET", variables)
        prod = ["-f", os.path.join(CHART, "values-prod.yaml")]
        self.assertIn("auth.jwt.issuer and auth.jwt.audience are required in prod",
                      helm_fails(*prod, *jwks, "--set", "auth.jwt.issuer=x") or "")
        self.assertIsNone(helm_fails(*jwks))
        self.assertIsNone(helm_fails("--set", "auth.jwt.jwksUrl=file:///etc/taskmesh/jwks.json"))

    def test_a_jwks_from_a_config_map(self):
        cm = ["--set", "auth.jwt.jwksConfigMap=idp-keys", "--set", "auth.jwt.issuer=https://idp/",
              "--set", "auth.jwt.audience=taskmesh"]
        deployment = by_kind(render("prod", *cm), "Deployment")["task-service"]
        pod = deployment["spec"]["template"]["spec"]
        variables = env_of(pod["containers"][0])
        self.assertEqual(variables["TASKMESH_JWT_JWKS_URL"]["value"], "file:///etc/taskmesh/jwks/jwks.json")
        self.assertNotIn("TASKMESH_JWT_SECRET", variables)
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        self.assertEqual(mounts["jwks"]["mountPath"], "/etc/taskmesh/jwks")
        self.assertNotIn("subPath", mounts["jwks"], "a subPath mount would never see a rotated key")
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertEqual(volumes["jwks"]["configMap"]["name"], "idp-keys")
        # Only task-service reads it.
        for app, other in by_kind(render("prod", *cm), "Deployment").items():
            if app != "task-service":
                self.assertNotIn("jwks", {v["name"] for v in other["spec"]["template"]["spec"].get("volumes", [])}, app)
        prod = ["-f", os.path.join(CHART, "values-prod.yaml")]
        self.assertIn("auth.jwt.issuer and auth.jwt.audience are required in prod",
                      helm_fails(*prod, "--set", "auth.jwt.jwksConfigMap=idp-keys") or "")
        self.assertIsNotNone(helm_fails("--set", "auth.jwt.jwksUrl=http://idp.example.com/jwks"))

    def test_the_outbox_relays_requests_fit_what_its_sidecar_accepts(self):
        for env in ["local", "staging", "prod"]:
            deployment = by_kind(render(env), "Deployment")["task-service"]
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            self.assertEqual(annotations["dapr.io/max-body-size"], "4Mi", env)
            variables = self.task_env(env)
            self.assertEqual(variables["TASKMESH_OUTBOX_MAX_BATCH_BYTES"]["value"], str(3 * 1024 * 1024), env)
            self.assertEqual(variables["TASKMESH_OUTBOX_MAX_ATTEMPTS"]["value"], "20", env)
        extra = ["--set", "dapr.sidecar.maxBodyMiB=16", "--set", "taskService.outboxMaxAttempts=5"]
        deployment = by_kind(render("prod", *extra), "Deployment")["task-service"]
        self.assertEqual(deployment["spec"]["template"]["metadata"]["annotations"]["dapr.io/max-body-size"], "16Mi")
        variables = self.task_env("prod", *extra)
        self.assertEqual(variables["TASKMESH_OUTBOX_MAX_BATCH_BYTES"]["value"], str(12 * 1024 * 1024))
        self.assertEqual(variables["TASKMESH_OUTBOX_MAX_ATTEMPTS"]["value"], "5")
        self.assertIsNotNone(helm_fails("--set", "dapr.sidecar.maxBodyMiB=0"))
        self.assertIsNotNone(helm_fails("--set", "taskService.outboxMaxAttempts=0"))

    def test_limits_only_where_set(self):
        names = {"requestTimeoutMs": "TASKMESH_REQUEST_TIMEOUT_MS",
                 "dbStatementTimeoutMs": "TASKMESH_DB_STATEMENT_TIMEOUT_MS",
                 "rateLimitPerSec": "TASKMESH_RATE_LIMIT_PER_SEC",
                 "rateLimitBurst": "TASKMESH_RATE_LIMIT_BURST",
                 "maxMessageBytes": "TASKMESH_MAX_MESSAGE_BYTES",
                 "maxTasksPerUser": "TASKMESH_MAX_TASKS_PER_USER"}
        for env in ["local", "staging", "prod"]:
            variables = self.task_env(env)
            self.assertFalse(set(names.values()) & set(variables), env)
        settings = {"requestTimeoutMs": 15000, "dbStatementTimeoutMs": 4000, "rateLimitPerSec": 20,
                    "rateLimitBurst": 40, "maxMessageBytes": 4194304, "maxTasksPerUser": 2000000}
        extra = [a for key, value in settings.items() for a in ["--set", f"api.limits.{key}={value}"]]
        variables = self.task_env("prod", *extra)
        for key, value in settings.items():
            self.assertEqual(variables[names[key]]["value"], str(value), key)
        # Only task-service reads them.
        for app in SUBSCRIBERS:
            deployment = by_kind(render("prod", *extra), "Deployment")[app]
            self.assertFalse(set(names.values()) & set(env_of(deployment["spec"]["template"]["spec"]["containers"][0])))
        self.assertIsNotNone(helm_fails("--set", "api.limits.rateLimitPerSec=0"))
        self.assertIsNotNone(helm_fails("--set", "api.limits.requestTimeout=5"))


class TheSchemaRefusesBadValues(unittest.TestCase):
    def test_unknown_keys_and_wrong_types(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            json.dump({"pubsub": {"brokres": "typo:9092"}}, f)
        self.assertIn("brokres", helm_fails("-f", f.name) or "")
        self.assertIsNotNone(helm_fails("--set", "apps.task-service.replicas=three"))
        self.assertIsNotNone(helm_fails("--set", "environment=dev"))
        self.assertIsNotNone(helm_fails("--set", "jwtSecret=inline"))
        self.assertIsNotNone(helm_fails("--set", "ops.methods={/stats/get}"))
        self.assertIsNone(helm_fails("-f", os.path.join(CHART, "values-prod.yaml")))


if __name__ == "__main__":
    unittest.main(verbosity=1)
