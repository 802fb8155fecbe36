#!/usr/bin/env bash
# Validates deploy/kubernetes offline (no cluster): every kustomization is
# rendered (kubectl kustomize or kustomize, when either is installed) and the
# rendered objects are checked against the Kubernetes OpenAPI schemas with
# kubernetes-validate (strict: unknown fields fail), then scanned with checkov
# (no failed check allowed; waivers are `checkov.io/skipN` annotations on the
# object, each with its reason). Without a kustomize binary, every file a
# kustomization lists is validated as it is. Either way, each manifest in a
# kustomization folder must be listed there or named below as an exception.
#
# Tools: pinned in scripts/kubernetes-tools.txt, installed once into a venv
# under the CI tools cache (FACECOMPARE_CI_TOOLS, default
# ~/.cache/facecompare-ci), reused while that file is unchanged.
# Knob: K8S_VERSIONS (default "1.30.0 1.37.0": the oldest release this targets
# and the newest the pinned kubernetes-validate carries).
set -euo pipefail

cd "$(dirname "$0")/.."
root=deploy/kubernetes
versions=${K8S_VERSIONS:-1.30.0 1.37.0}
# Manifests deliberately not applied by their kustomization (see the files).
not_listed=("$root/secret.example.yaml")

tools=${FACECOMPARE_CI_TOOLS:-$HOME/.cache/facecompare-ci}
lock=scripts/kubernetes-tools.txt
venv=$tools/k8s-check-$(sha256sum "$lock" | cut -c1-12)
if [ ! -x "$venv/bin/checkov" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$lock"
fi
py=$venv/bin/python

# --- every manifest is listed (or an exception), every listed file exists ---
"$py" - "$root" "${not_listed[@]}" <<'PY'
import pathlib, sys, yaml
root, exceptions = pathlib.Path(sys.argv[1]), {pathlib.Path(p) for p in sys.argv[2:]}
problems = []
for kfile in sorted(root.rglob("kustomization.yaml")):
    folder = kfile.parent
    listed = yaml.safe_load(kfile.read_text()).get("resources", [])
    for entry in listed:
        p = folder / entry
        if not (p.is_file() or (p / "kustomization.yaml").is_file()):
            problems.append(f"{kfile}: lists {entry}, which does not exist")
    for f in sorted(folder.glob("*.y*ml")):
        if f.name != "kustomization.yaml" and f.name not in listed and f not in exceptions:
            problems.append(f"{f}: not listed in {kfile} (add it, or name it as an exception in scripts/check-kubernetes.sh)")
for f in exceptions:
    if not f.is_file():
        problems.append(f"{f}: named as an exception but missing")
for folder in sorted({f.parent for f in root.rglob("*.y*ml")}):
    if not (folder / "kustomization.yaml").is_file():
        problems.append(f"{folder}: manifests without a kustomization.yaml")
if problems:
    sys.exit("\n".join(problems))
print(f"kustomizations list every manifest ({len(list(root.rglob('*.y*ml')))} files)")
PY

# --- render ---
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
render=""
if command -v kustomize >/dev/null; then
  render="kustomize build"
elif command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  render="kubectl kustomize"
fi
targets=()
for kfile in $(find "$root" -name kustomization.yaml | sort); do
  dir=$(dirname "$kfile")
  if [ -n "$render" ]; then
    file=$out/$(echo "$dir" | tr / _).yaml
    $render "$dir" >"$file"
    targets+=("$file")
  else
    while read -r f; do targets+=("$dir/$f"); done < <("$py" -c 'import sys, yaml; print("\n".join(yaml.safe_load(open(sys.argv[1])).get("resources", [])))' "$kfile")
  fi
done
targets+=("${not_listed[@]}")
if [ -n "$render" ]; then
  echo "rendered with $render: $(cat "$out"/*.yaml | grep -c '^kind:') objects"
else
  echo "no kustomize or kubectl: validating the listed files as they are (the kustomization's namespace, labels and images are not applied)"
fi

# --- schemas ---
for v in $versions; do
  "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$v" "${targets[@]}"
done

# --- checkov: the source files (where the waivers are written) and what is applied ---
# --skip-download: no call to the vendor's platform (offline).
"$venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes -d "$root"
if [ -n "$render" ]; then
  cp "${not_listed[@]}" "$out/"
  "$venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes -d "$out"
fi
echo "kubernetes manifests valid (schemas: $versions) and checkov clean"
