"""MeshGuard's Istio tooling: the library behind `make istio-check` and `make image`.

Each module is one concern, so the checker, the image builder and the tests share the
same code paths:

- `paths`: where the repository, the manifests and Istio's shared schema files are.
- `kustomize`: rendering kustomizations with `kubectl kustomize`.
- `goneturl`, `cel`: Kubernetes' CEL environment (with Go's URL parsing for isURL/url).
- `structural`: Kubernetes structural-schema validation of one object (OpenAPI v3 subset
  plus the x-kubernetes-* extensions), as the API server does it on create.
- `crds`: Istio's CRDs from crds.gen.yaml, and validating a custom resource with them.
- `corekinds`: core Kubernetes kinds, validated with kubernetes-validate's schemas.
- `envoyprotos`: the EnvoyFilter's embedded Envoy config, parsed with Envoy's protos.
- `istiod`: what istiod makes of a WasmPlugin (Go jsonpb pluginConfig, the Wasm filter).
- `bootstrap`: an Envoy bootstrap shaped like an Istio sidecar, for `envoy --mode validate`
  and the end-to-end test.
- `oci`: the "compat" OCI image layout of the module, and its digest pin.
- `check`: the whole `make istio-check`, as functions returning findings.
"""
