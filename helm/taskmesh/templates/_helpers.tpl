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
  value: {{ .Values.log.level | quote }}
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
