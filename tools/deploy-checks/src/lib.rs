//! # votemesh-deploy-checks
//!
//! Offline checks of votemesh's deployment files, kept apart from the
//! product's crates. The crate has no code of its own: its tests
//! (`tests/deployment.rs`) run real validators (kubectl's kustomize,
//! kubernetes-validate, hadolint, actionlint, a Starlark interpreter for the
//! Tiltfile) installed into `target/deploy-tools` from `requirements.txt`,
//! and the Python checkers beside this crate.
//!
//! ## Layout
//!
//! - `tests/deployment.rs`: every check, each also shown to fail on a
//!   broken copy of the file it checks.
//! - `tests/dashboard.rs`: the Grafana dashboard's PromQL against a live
//!   scrape of the real services (started in process on real Redis and
//!   PostgreSQL by `votemesh-testing`).
//! - `check_manifests.py`: the promises of each rendered kustomization
//!   (base, `overlays/dev`, `overlays/prod` and its edge variants).
//! - `check_mtls.py`: the mtls components (certificates from cert-manager,
//!   mounts, settings, probes on the plaintext health port) in a rendered
//!   kustomization; it also hands the built-in kinds to kubernetes-validate.
//! - `run_tiltfile.py`: runs the Tiltfile against stubs with Tilt's
//!   builtin signatures and Tilt's rules for grouping objects.
//! - `check_compose.py`: the compose file against the Dockerfile, the
//!   drain time and the published ports.
//! - `check_context.py`: what the Docker build context holds.
//! - `check_elf.py`: a built binary needs only what its runtime image has.
//! - `check_host_ports.py`: Tilt, compose, kind and the docs a developer
//!   follows (`docs/DEPLOYING.md`, `docs/OBSERVABILITY.md`) agree on the
//!   ports published on a developer's host; the kind node image is pinned.
//! - `check_workflow_docs.py`: the kind workflow runs only commands
//!   `docs/DEPLOYING.md` gives.
//!
//! `README.md` beside this file lists each test and what it holds.
