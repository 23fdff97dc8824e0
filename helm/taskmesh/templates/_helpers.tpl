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
- name: DAPR_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.dapr.apiTokenSecret }}
      key: token
- name: APP_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.dapr.apiTokenSecret }}
      key: token
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
dapr.io/enabled: "true"
dapr.io/app-id: {{ .app }}
{{- with .port }}
dapr.io/app-port: {{ . | quote }}
dapr.io/app-protocol: grpc
dapr.io/app-token-secret: {{ $v.dapr.apiTokenSecret }}
{{- end }}
dapr.io/config: taskmesh
dapr.io/log-level: {{ $v.dapr.logLevel }}
dapr.io/log-as-json: "true"
dapr.io/api-token-secret: {{ $v.dapr.apiTokenSecret }}
dapr.io/sidecar-cpu-request: {{ $v.dapr.sidecar.requests.cpu | quote }}
dapr.io/sidecar-memory-request: {{ $v.dapr.sidecar.requests.memory | quote }}
dapr.io/sidecar-cpu-limit: {{ $v.dapr.sidecar.limits.cpu | quote }}
dapr.io/sidecar-memory-limit: {{ $v.dapr.sidecar.limits.memory | quote }}
dapr.io/graceful-shutdown-seconds: {{ $v.drainSeconds | quote }}
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
