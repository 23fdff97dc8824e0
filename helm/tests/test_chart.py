"""Chart tests over `helm template` output, per environment.

Run by scripts/check-chart.sh with HELM (the helm binary) and DAPR_CRDS (the directory of
Dapr's CRDs, from the dapr module) in the environment. Every Kubernetes object is checked
against the Kubernetes JSON schemas (kubernetes-validate, strict, offline), every Dapr
object against the openAPIV3Schema of Dapr's own CRDs, and what must differ per
environment is asserted.
"""

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


def render(env, *extra):
    """The objects `helm template` renders for values-<env>.yaml (plus extra args)."""
    out = subprocess.run(
        [HELM, "template", "taskmesh", CHART, "--namespace", "taskmesh",
         "-f", os.path.join(CHART, f"values-{env}.yaml"), *extra],
        check=True, capture_output=True, text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


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
            self.assertEqual(sorted(deployments), sorted(APPS))
            for app, deployment in deployments.items():
                with self.subTest(f"{env}/{app}"):
                    pod = deployment["spec"]["template"]
                    notes = pod["metadata"]["annotations"]
                    container = pod["spec"]["containers"][0]
                    port = int(env_of(container)["APP_PORT"]["value"])
                    self.assertEqual(notes["dapr.io/enabled"], "true")
                    self.assertEqual(notes["dapr.io/app-id"], app)
                    self.assertEqual(int(notes["dapr.io/app-port"]), port)
                    self.assertEqual(notes["dapr.io/app-protocol"], "grpc")
                    self.assertEqual(notes["dapr.io/config"], "taskmesh")
                    self.assertIn("dapr.io/api-token-secret", notes)
                    for probe in ["livenessProbe", "readinessProbe", "startupProbe"]:
                        self.assertEqual(container[probe]["grpc"]["port"], port, probe)
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
            for app, deployment in by_kind(objects, "Deployment").items():
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
            self.assertEqual(by_kind(objects, "Secret"), {}, "the chart creates no Secret")
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

    def test_access_control_lets_only_recurring_service_call_task_service(self):
        config = by_kind(render("prod"), "Configuration")["taskmesh"]["spec"]
        acl = config["accessControl"]
        self.assertEqual(acl["defaultAction"], "deny")
        self.assertEqual([p["appId"] for p in acl["policies"]], ["recurring-service"])
        resiliency = by_kind(render("prod"), "Resiliency")["taskmesh"]["spec"]
        inbound = resiliency["targets"]["components"]["taskmesh-pubsub"]["inbound"]
        self.assertEqual(set(inbound), {"retry", "circuitBreaker"})
        self.assertIn("task-service", resiliency["targets"]["apps"])

    def test_migrations_run_as_a_hook_job(self):
        job = by_kind(render("local"), "Job")["task-service-migrate"]
        self.assertEqual(job["metadata"]["annotations"]["helm.sh/hook"], "pre-install,pre-upgrade")
        self.assertEqual(job["spec"]["template"]["spec"]["containers"][0]["args"], ["migrate"])


class WhatDiffersPerEnvironment(unittest.TestCase):
    def test_replicas_and_disruption_budgets(self):
        for env, replicas, pdbs in [("local", 1, 0), ("staging", 2, 4), ("prod", 3, 4)]:
            objects = render(env)
            with self.subTest(env):
                for deployment in by_kind(objects, "Deployment").values():
                    self.assertEqual(deployment["spec"]["replicas"], replicas)
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


class TheImagesHoldTheReleaseBinaries(unittest.TestCase):
    def test_every_app_is_a_workspace_binary_the_dockerfile_builds(self):
        root = os.path.join(CHART, "..", "..")
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


class TheSchemaRefusesBadValues(unittest.TestCase):
    def test_unknown_keys_and_wrong_types(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            json.dump({"pubsub": {"brokres": "typo:9092"}}, f)
        self.assertIn("brokres", helm_fails("-f", f.name) or "")
        self.assertIsNotNone(helm_fails("--set", "apps.task-service.replicas=three"))
        self.assertIsNotNone(helm_fails("--set", "environment=dev"))
        self.assertIsNotNone(helm_fails("--set", "jwtSecret=inline"))
        self.assertIsNone(helm_fails("-f", os.path.join(CHART, "values-prod.yaml")))


if __name__ == "__main__":
    unittest.main(verbosity=1)
