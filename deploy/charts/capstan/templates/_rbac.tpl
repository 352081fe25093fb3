{{/*
What each controller does against the API, as RBAC rules: the single place to edit when the
manager gains a controller (add its key with the manager's --controllers name). Everything is
namespaced, so with watchNamespace set these rules become a Role in that namespace.

Derived from the controllers' code:
- foo: reads Foos and Pods (metadata watch); writes Foo status by server-side apply (patch).
- memcached: reads Memcacheds, Deployments and Pods; applies its Deployments (server-side apply:
  patch, and create for the first apply); writes Memcached status (patch). Deletion is the
  garbage collector's job (owner references), so no delete.
*/}}
{{- define "capstan.controllerRules" -}}
foo:
  - apiGroups: [tutorial.capstan.dev]
    resources: [foos]
    verbs: [get, list, watch]
  - apiGroups: [tutorial.capstan.dev]
    resources: [foos/status]
    verbs: [get, patch]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch]
memcached:
  - apiGroups: [cache.capstan.dev]
    resources: [memcacheds]
    verbs: [get, list, watch]
  - apiGroups: [cache.capstan.dev]
    resources: [memcacheds/status]
    verbs: [get, patch]
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, list, watch, create, patch]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch]
{{- end }}

{{/* Rules every controller needs: publishing Events (kube's Recorder creates, then patches a series). */}}
{{- define "capstan.commonRules" -}}
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* The rules of the enabled controllers plus the common ones, duplicates removed. */}}
{{- define "capstan.rules" -}}
{{- $known := include "capstan.controllerRules" . | fromYaml }}
{{- $rules := include "capstan.commonRules" . | fromYamlArray }}
{{- range (include "capstan.controllers" . | fromYaml).controllers }}
{{- range (get $known .) }}
{{- $rules = append $rules . }}
{{- end }}
{{- end }}
{{- toYaml (uniq $rules) }}
{{- end }}
