"""shopgraph operations: the `shopgraph` CLI, the root config, local Ray, job submission,
KubeRay manifests and deploys. No model code lives here."""
