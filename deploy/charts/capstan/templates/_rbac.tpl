{{/*
What each controller does against the API, as RBAC rules: the single place to edit when the
manager gains a controller (add its key with the manager's --controllers name). Everything is
namespaced, so with watchNamespace set these rules become a Role in that namespace.

Derived from the controllers' code:
- foo: reads Foos and Pods (metadata watch); writes Foo status by server-side apply (patch).
- memcached: reads Memcacheds, Deployments, Services and Pods; applies its Deployment and headless
  Service (server-side apply: patch, and create for the first apply; one get when the cache does
  not hold the name, to refuse a foreign object); writes Memcached status (patch). Deletion is the
  garbage collector's job (owner references), so no delete.
- redis-ha: reads RedisHAs, its StatefulSets, Services, ConfigMaps, PodDisruptionBudgets
  (policy/v1, or v1beta1 where only that is served) and Pods; applies them and prunes (delete)
  what a spec no longer wants; patches Pods' role label and deletes Pods one at a time to roll
  them (its Redis StatefulSet is OnDelete, so a spec change or password rotation is carried out by
  the operator's healer, not the StatefulSet controller);
  reads its auth Secret by name (get only: never list or watch); writes RedisHA status.
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
    resources: [services]
    verbs: [get, list, watch, create, patch]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch]
redis-ha:
  - apiGroups: [cache.capstan.dev]
    resources: [redishas]
    verbs: [get, list, watch]
  - apiGroups: [cache.capstan.dev]
    resources: [redishas/status]
    verbs: [get, patch]
  - apiGroups: [apps]
    resources: [statefulsets]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [""]
    resources: [services, configmaps]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [policy]
    resources: [poddisruptionbudgets]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [""]
    resources: [pods]
    verbs: [get, list, watch, patch, delete]
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get]
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
