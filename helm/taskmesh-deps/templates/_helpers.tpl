{{/* Labels of every object of one component: (dict "root" $ "name" "kafka"). */}}
{{- define "deps.labels" -}}
{{ include "deps.selector" . }}
app.kubernetes.io/part-of: taskmesh-deps
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "deps.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* Every pod runs as the images' user 10001, with no service account token. */}}
{{- define "deps.podSpec" -}}
automountServiceAccountToken: false
# No KAFKA_PORT=tcp://... and the like from Service links in the environment.
enableServiceLinks: false
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "deps.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
