{{/*
Shared snippets. Object names are fixed (surgescale-controller, surgescale-gateway,
surgescale-redis) as in the kustomize base: the Lease name, the Redis URL, the NetworkPolicies
and the docs refer to them. One release per cluster (the CRD and ClusterRole are cluster-wide).
*/}}

{{/* Metadata labels of one component: the base's labels plus Helm's own. */}}
{{- define "surgescale.labels" -}}
{{- $root := index . 0 -}}
{{- $labels := dict "app.kubernetes.io/component" (index . 2) -}}
{{- with index . 1 }}{{ $_ := set $labels "app.kubernetes.io/name" . }}{{ end -}}
{{- include "surgescale.commonLabels" $root | fromYaml | merge $labels | toYaml -}}
{{- end -}}

{{/* Labels of objects that belong to no component (namespace-wide NetworkPolicies). */}}
{{- define "surgescale.commonLabels" -}}
app.kubernetes.io/part-of: surgescale
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "surgescale.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The gateway's container port: the port in its config. */}}
{{- define "surgescale.gatewayPort" -}}
{{- .Values.gateway.config.port | default 8080 | int -}}
{{- end -}}

{{/* The Secret holding the Redis password (in-cluster or external). */}}
{{- define "surgescale.redisPasswordSecret" -}}
{{- if .Values.redis.enabled -}}
{{- toYaml .Values.redis.passwordSecret -}}
{{- else -}}
{{- toYaml .Values.externalRedis.passwordSecret -}}
{{- end -}}
{{- end -}}

{{/* Redis URL with the password as $(SURGESCALE_REDIS_PASSWORD), which the kubelet expands. */}}
{{- define "surgescale.redisUrl" -}}
{{- if .Values.redis.enabled -}}
redis://surgescale:$(SURGESCALE_REDIS_PASSWORD)@surgescale-redis:6379/0
{{- else -}}
{{- $r := .Values.externalRedis -}}
{{- if not $r.host -}}
{{- fail "externalRedis.host: required when redis.enabled is false" -}}
{{- end -}}
{{- printf "%s://%s:$(SURGESCALE_REDIS_PASSWORD)@%s:%d/%d" (ternary "rediss" "redis" $r.tls) $r.username $r.host (int $r.port) (int $r.database) -}}
{{- end -}}
{{- end -}}

{{/* The Redis password and URL variables (password first: the URL refers to it). */}}
{{- define "surgescale.redisEnv" -}}
{{- $secret := include "surgescale.redisPasswordSecret" .root | fromYaml -}}
- name: SURGESCALE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name }}
      key: {{ $secret.key }}
- name: {{ .urlVar }}
  value: {{ include "surgescale.redisUrl" .root | quote }}
{{- end -}}

{{/* Pod securityContext and the container securityContext shared by surgescale's pods. */}}
{{- define "surgescale.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "surgescale.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Spread one component's pods over zones and nodes (best effort). */}}
{{- define "surgescale.spread" -}}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      app.kubernetes.io/name: {{ . }}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      app.kubernetes.io/name: {{ . }}
{{- end -}}

{{/* nodeSelector, tolerations, affinity and priorityClassName of one component, when set. */}}
{{- define "surgescale.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* Egress of the gateway and the controller: Redis (in-cluster or external) and the API server. */}}
{{- define "surgescale.redisEgress" -}}
{{- if .Values.redis.enabled }}
- to:
    - podSelector:
        matchLabels:
          app.kubernetes.io/name: surgescale-redis
  ports:
    - protocol: TCP
      port: 6379
{{- else }}
- to:
    {{- toYaml .Values.networkPolicy.externalRedisPeers | nindent 4 }}
  ports:
    - protocol: TCP
      port: {{ .Values.externalRedis.port }}
{{- end }}
- to:
    - ipBlock:
        cidr: {{ .Values.networkPolicy.apiServerCidr }}
  ports:
    - protocol: TCP
      port: 443
    - protocol: TCP
      port: 6443
{{- end -}}
