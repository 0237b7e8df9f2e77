{{/*
The example InferenceScaler shown in NOTES.txt (tests/charts renders it and validates it against
the CRD and the controller's own parser, so the example stays valid).
*/}}
{{- define "surgescale.exampleInferenceScaler" -}}
apiVersion: surgescale.io/v1alpha1
kind: InferenceScaler
metadata:
  name: llama3-8b
  namespace: {{ .Release.Namespace }}
spec:
  model: llama3-8b
  scaleTargetRef:
    name: llama3-8b
  minReplicas: 1
  maxReplicas: 8
  slo:
    ttftP95Ms: 1000
  target:
    maxNumSeqs: 256
    coldStartSeconds: 60
  scaleDown:
    delaySeconds: 300
  capacity:
    # None: leave nodes to the cluster autoscaler. With Karpenter (manifests/karpenter):
    # strategy: StaticNodePool and nodePoolRef: {name: gpu}.
    strategy: None
    gpusPerReplica: 1
    gpusPerNode: 8
{{- end -}}
