{{/* Labels every object carries. */}}
{{- define "taskmesh.labels" -}}
app.kubernetes.io/part-of: taskmesh
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
taskmesh.dev/environment: {{ .Values.environment }}
{{- end -}}

{{/* The image of one app: <registry>/<app id>:<tag>. */}}
{{- define "taskmesh.image" -}}
{{ .root.Values.image.registry }}/{{ .app }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{/* Environment every app shares. */}}
{{- define "taskmesh.commonEnv" -}}
- name: APP_HOST
  value: "0.0.0.0"
- name: TASKMESH_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: RUST_LOG
  {{- /* At debug and trace, the HTTP/2 and gRPC libraries would log every frame. */}}
  {{- if has .Values.log.level (list "debug" "trace") }}
  value: {{ printf "%s,h2=info,hyper=info,hyper_util=info,tower=info,tonic=info" .Values.log.level | quote }}
  {{- else }}
  value: {{ .Values.log.level | quote }}
  {{- end }}
- name: TASKMESH_SHUTDOWN_GRACE_SECS
  value: {{ .Values.drainSeconds | quote }}
- name: TASKMESH_PUBSUB
  value: {{ .Values.pubsub.name | quote }}
- name: TASKMESH_STATESTORE
  value: {{ .Values.stateStore.name | quote }}
- name: TASKMESH_TOPIC_TASK_EVENTS
  value: {{ .Values.topics.taskEvents | quote }}
- name: TASKMESH_TOPIC_DEAD_LETTER
  value: {{ .Values.topics.deadLetter | quote }}
{{- with .Values.dapr.tracing.otlpEndpoint }}
{{/* The apps export their spans to the collector the sidecars use, sampled at the same
     rate; a sampled caller's trace is always kept (parent-based). */}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ printf "http://%s" . | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $.Values.dapr.tracing.samplingRate | quote }}
{{- end }}
{{- end -}}

{{/* The Dapr app ids that get a token of their own: the four apps and taskmesh-ops (when
     ops.enabled), as a YAML list. */}}
{{- define "taskmesh.tokenApps" -}}
{{- $ids := keys .Values.apps | sortAlpha -}}
{{- if .Values.ops.enabled -}}
{{- $ids = append $ids "taskmesh-ops" -}}
{{- end -}}
{{- toYaml $ids -}}
{{- end -}}

{{/* The Secret (key `token`) of one app's identity: `dapr.tokenSecrets.<app>` if named, else
     the chart's `<app>-dapr-token` (tokens.yaml). Called with dict root, app. */}}
{{- define "taskmesh.tokenSecret" -}}
{{- $named := index (.root.Values.dapr.tokenSecrets | default dict) .app | default "" -}}
{{- $named | default (printf "%s-dapr-token" .app) -}}
{{- end -}}

{{/* An app's own token, as its sidecar requires it from the app (DAPR_API_TOKEN) and
     presents it to the app (APP_API_TOKEN). Called with dict root, app. */}}
{{- define "taskmesh.tokenEnv" -}}
{{- $secret := include "taskmesh.tokenSecret" . -}}
- name: DAPR_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: token
- name: APP_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: token
{{- end -}}

{{/* What task-service invokes through Dapr to answer the public NotificationService,
     PreferenceService and StatsService: notification-service's and analytics-service's
     invoke methods, as a YAML list. */}}
{{- define "taskmesh.taskServiceInvokes" -}}
- notifications/list
- notifications/ack
- preferences/get
- preferences/set
- preferences/delete
- stats/get
{{- end -}}

{{/* The apps that subscribe to task events, each with a dead-letter topic of its own, in
     the order the pub/sub scopes list them, as a YAML list. */}}
{{- define "taskmesh.subscribers" -}}
- notification-service
- recurring-service
- analytics-service
{{- end -}}

{{/* The dead-letter topic of one subscriber: `<topics.deadLetter>.<app id>` (what the app
     computes from TASKMESH_TOPIC_DEAD_LETTER). Called with dict root, app. */}}
{{- define "taskmesh.deadLetterTopic" -}}
{{ .root.Values.topics.deadLetter }}.{{ .app }}
{{- end -}}

{{/* The pub/sub component's topic scopes (Dapr's protectedTopics, publishingScopes and
     subscriptionScopes), as YAML. Every topic is protected: an app not scoped to it can
     neither publish nor subscribe. Each subscriber has a dead-letter topic of its own: its
     sidecar publishes there what the app failed (deadLetterTopic; a publishingScopes entry
     lists every topic the app may publish), and only that app reads it, to keep the dead
     letters for replay. `app=` allows that app no topic. */}}
{{- define "taskmesh.pubsubTopicScopes" -}}
{{- $t := .Values.topics -}}
{{- $ids := list "task-service" "notification-service" "recurring-service" "analytics-service" "taskmesh-ops" -}}
{{- $dl := dict -}}
{{- $protected := list $t.taskEvents $t.reminders -}}
{{- range $app := include "taskmesh.subscribers" . | fromYamlArray -}}
{{- $topic := include "taskmesh.deadLetterTopic" (dict "root" $ "app" $app) -}}
{{- $_ := set $dl $app $topic -}}
{{- $protected = append $protected $topic -}}
{{- end -}}
{{- $publish := dict
      "task-service" (list $t.taskEvents)
      "notification-service" (list $t.reminders (index $dl "notification-service"))
      "recurring-service" (list (index $dl "recurring-service"))
      "analytics-service" (list (index $dl "analytics-service"))
      "taskmesh-ops" (list) -}}
{{- $subscribe := dict
      "task-service" (list)
      "notification-service" (list $t.taskEvents $t.reminders (index $dl "notification-service"))
      "recurring-service" (list $t.taskEvents (index $dl "recurring-service"))
      "analytics-service" (list $t.taskEvents (index $dl "analytics-service"))
      "taskmesh-ops" (list) -}}
{{- $pub := list -}}
{{- $sub := list -}}
{{- range $id := $ids -}}
{{- $pub = append $pub (printf "%s=%s" $id (join "," (index $publish $id))) -}}
{{- $sub = append $sub (printf "%s=%s" $id (join "," (index $subscribe $id))) -}}
{{- end -}}
protectedTopics: {{ join "," $protected | quote }}
publishingScopes: {{ join ";" $pub | quote }}
subscriptionScopes: {{ join ";" $sub | quote }}
{{- end -}}

{{/* Values the schema cannot check; included once, by deployments.yaml. */}}
{{- define "taskmesh.validate" -}}
{{- $v := .Values -}}
{{- $prod := eq $v.environment "prod" -}}
{{- if and $prod (not $v.dapr.requireMtls) -}}
{{- fail "dapr.requireMtls: false is refused in prod. The sidecars' mTLS (the daprsystem Configuration of the Dapr control plane, global.mtls.enabled of the dapr chart) must stay on: access control and the apps' identities rely on it." -}}
{{- end -}}
{{- if and $prod (or $v.auth.jwt.jwksUrl $v.auth.jwt.jwksConfigMap) (not (and $v.auth.jwt.issuer $v.auth.jwt.audience)) -}}
{{- fail "auth.jwt.issuer and auth.jwt.audience are required in prod with auth.jwt.jwksUrl: without them task-service would accept any token the JWKS's keys signed, for any audience." -}}
{{- end -}}
{{- $t := $v.topics -}}
{{- if ne 3 (len (list $t.taskEvents $t.reminders $t.deadLetter | uniq)) -}}
{{- fail "topics.taskEvents, topics.reminders and topics.deadLetter must be three different topics: the pub/sub scopes tell them apart (topics.deadLetter is the prefix of each subscriber's dead-letter topic, <prefix>.<app id>)." -}}
{{- end -}}
{{- $secrets := list -}}
{{- range $app := include "taskmesh.tokenApps" . | fromYamlArray -}}
{{- $secrets = append $secrets (include "taskmesh.tokenSecret" (dict "root" $ "app" $app)) -}}
{{- end -}}
{{- if ne (len $secrets) (len ($secrets | uniq)) -}}
{{- fail (printf "dapr.tokenSecrets: every app needs a Secret of its own (got %s): no app may read another's token." (join ", " $secrets)) -}}
{{- end -}}
{{- end -}}

{{/* Container security every app and job uses. */}}
{{- define "taskmesh.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "taskmesh.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Which apps load which Dapr component: the components' scopes, in one place. */}}
{{- define "taskmesh.componentScopes" -}}
pubsub: [task-service, notification-service, recurring-service, analytics-service]
state: [notification-service, recurring-service, analytics-service]
email: [notification-service]
webhook: [notification-service]
{{- end -}}

{{/* The Secrets each app's sidecar reads through the taskmesh-secrets store, for the
     secretKeyRefs of the components it loads: app -> [secret names], as YAML. Apps whose
     components reference no Secret are absent: they get no Kubernetes API token and no
     Role. Secrets the pods take as environment variables (existingSecret, the Dapr API
     token) are read by the kubelet, not by the pod's service account, and are not here. */}}
{{- define "taskmesh.componentSecrets" -}}
{{- $scopes := include "taskmesh.componentScopes" . | fromYaml -}}
{{- $secrets := dict -}}
{{- if .Values.pubsub.sasl.enabled -}}
{{- $_ := set $secrets "pubsub" (list (required "pubsub.sasl.secret is required with SASL" .Values.pubsub.sasl.secret)) -}}
{{- end -}}
{{- with .Values.stateStore.passwordSecret -}}
{{- $_ := set $secrets "state" (list .) -}}
{{- end -}}
{{- if and .Values.email.enabled .Values.email.secret -}}
{{- $_ := set $secrets "email" (list .Values.email.secret) -}}
{{- end -}}
{{- $byApp := dict -}}
{{- range $component, $names := $secrets -}}
{{- range $app := index $scopes $component -}}
{{- $_ := set $byApp $app (concat (get $byApp $app | default list) $names | uniq | sortAlpha) -}}
{{- end -}}
{{- end -}}
{{- toYaml $byApp -}}
{{- end -}}

{{/* The Dapr annotations of a pod: `app` is its Dapr app id, `port` its app port (none for
     taskmesh-ops), `maxConcurrency` and `kubeToken` (mount the Kubernetes API token into
     daprd, for the taskmesh-secrets store) optional. */}}
{{- define "taskmesh.daprAnnotations" -}}
{{- $v := .root.Values -}}
{{- $token := include "taskmesh.tokenSecret" (dict "root" .root "app" .app) -}}
dapr.io/enabled: "true"
dapr.io/app-id: {{ .app }}
{{- with .port }}
dapr.io/app-port: {{ . | quote }}
{{- /* With TLS on the public port, daprd talks TLS to the app too (without verifying
       its certificate: it is the same pod). */}}
dapr.io/app-protocol: {{ ternary "grpcs" "grpc" (and (eq $.app "task-service") (ne $v.api.tls.secretName "")) }}
dapr.io/app-token-secret: {{ $token }}
{{- end }}
dapr.io/config: taskmesh
dapr.io/log-level: {{ $v.dapr.logLevel }}
dapr.io/log-as-json: "true"
dapr.io/api-token-secret: {{ $token }}
dapr.io/sidecar-cpu-request: {{ $v.dapr.sidecar.requests.cpu | quote }}
dapr.io/sidecar-memory-request: {{ $v.dapr.sidecar.requests.memory | quote }}
dapr.io/sidecar-cpu-limit: {{ $v.dapr.sidecar.limits.cpu | quote }}
dapr.io/sidecar-memory-limit: {{ $v.dapr.sidecar.limits.memory | quote }}
dapr.io/graceful-shutdown-seconds: {{ $v.drainSeconds | quote }}
{{- /* Explicit: task-service's outbox relay sizes its bulk requests from the same value. */}}
dapr.io/max-body-size: {{ printf "%dMi" (int $v.dapr.sidecar.maxBodyMiB) | quote }}
{{- if gt (int (.maxConcurrency | default 0)) 0 }}
dapr.io/app-max-concurrency: {{ .maxConcurrency | quote }}
{{- end }}
{{- /* Dapr's built-in `kubernetes` secret store needs a Kubernetes API token in every
       sidecar, and nothing here uses it: components name taskmesh-secrets. */}}
dapr.io/disable-builtin-k8s-secret-store: "true"
{{- $mounts := list -}}
{{- if .kubeToken }}
{{- /* The token volume (taskmesh.kubeTokenVolume) goes into daprd only; the app
       container has none (automountServiceAccountToken: false). */}}
{{- $mounts = append $mounts "kube-api-token:/var/run/secrets/kubernetes.io/serviceaccount" }}
{{- end }}
{{- if and .port $v.dapr.trustedCASecret }}
{{- /* Go reads SSL_CERT_DIR as a list of directories: the image's own roots, then the
       private CA of the brokers or Redis (taskmesh.trustedCAVolume). */}}
{{- $mounts = append $mounts "trusted-ca:/var/run/secrets/taskmesh/trusted-ca" }}
dapr.io/env: "SSL_CERT_DIR=/etc/ssl/certs:/var/run/secrets/taskmesh/trusted-ca"
{{- end }}
{{- with $mounts }}
dapr.io/volume-mounts: {{ join "," . | quote }}
{{- end }}
{{- end -}}

{{/* The private CA daprd trusts besides the image's roots (dapr.trustedCASecret). Optional:
     a release whose brokers and Redis have public certificates runs without the Secret. */}}
{{- define "taskmesh.trustedCAVolume" -}}
- name: trusted-ca
  secret:
    secretName: {{ .Values.dapr.trustedCASecret }}
    optional: true
    items:
      - key: ca.crt
        path: ca.crt
{{- end -}}

{{/* The Kubernetes API token, CA and namespace, as the ServiceAccount admission plugin
     would mount them, for daprd alone (see dapr.io/volume-mounts). */}}
{{- define "taskmesh.kubeTokenVolume" -}}
- name: kube-api-token
  projected:
    defaultMode: 420
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end -}}
